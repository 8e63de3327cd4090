//! The policy compiler's benchmark: a household-shaped policy of 50 rules
//! (groups, tags, autogroup:self, a subnet router, an exit node, a grant
//! with a capability) compiled for N nodes. Prints, per N: the time to
//! compile, the time to answer every viewer's peers and routes and to cut
//! every node's filter (what full maps need), the filter bytes a full map gains (average and largest per
//! node), and how many peers a node sees. Addresses sequential (as tinyscale
//! gives them) and scattered (the worst case: no ranges to merge). Figures
//! only; nothing here asserts a time.
//!
//!   cargo bench --bench policy              (BENCH_NODES=50,250 to choose sizes)

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use tinyscale::policy::{NodeInfo, Policy, UserRef};
use tinyscale::tailcfg::Prefix;

const USERS: u32 = 12;

fn policy() -> String {
    let mut acls = vec![
        r#"{"action":"accept","src":["group:parents"],"dst":["*:*"]}"#.to_string(),
        r#"{"action":"accept","src":["autogroup:member"],"dst":["autogroup:self:*"]}"#.to_string(),
        r#"{"action":"accept","src":["autogroup:member"],"dst":["autogroup:internet:*"]}"#.to_string(),
        r#"{"action":"accept","src":["group:kids"],"dst":["tag:printer:*","tag:media:80,443,8096"]}"#.to_string(),
        r#"{"action":"accept","src":["autogroup:member"],"dst":["192.168.1.0/24:*"]}"#.to_string(),
    ];
    // The rest: services, each for one user or group.
    for i in 0..44 {
        let src = if i % 2 == 0 { format!("u{}@", i % USERS) } else { "group:kids".to_string() };
        acls.push(format!(r#"{{"action":"accept","src":["{src}"],"dst":["tag:server:{}"],"proto":"tcp"}}"#, 8000 + i));
    }
    let grants = r#"[{"src":["group:parents"],"dst":["tag:server"],"ip":["tcp:443"],"app":{"example.com/cap/admin":[{"role":"owner"}]}}]"#;
    let users: Vec<String> = (0..USERS).map(|u| format!(r#""u{u}@""#)).collect();
    format!(
        r#"{{
          "groups": {{"group:parents": [{}], "group:kids": [{}]}},
          "tagOwners": {{"tag:server": ["u0@"], "tag:media": ["u0@"], "tag:printer": ["u0@"], "tag:router": ["u0@"], "tag:exit": ["u0@"]}},
          "autoApprovers": {{"routes": {{"192.168.0.0/16": ["tag:router"]}}, "exitNode": ["tag:exit"]}},
          "acls": [{}],
          "grants": {grants}
        }}"#,
        users[..2].join(","),
        users[2..].join(","),
        acls.join(",")
    )
}

fn nodes(n: u32, scattered: bool) -> Vec<NodeInfo> {
    (1..=n)
        .map(|i| {
            // Scattered: a multiplicative hash over the /10, as random-looking as Tailscale's.
            let k = if scattered { (i.wrapping_mul(2_654_435_761)) % (1 << 22) } else { i };
            let tags: &[&str] = match i % 25 {
                0 => &["tag:server"],
                1 => &["tag:media"],
                2 => &["tag:printer"],
                3 => &["tag:router"],
                4 => &["tag:exit"],
                _ => &[],
            };
            let u = i % USERS;
            let mut node = NodeInfo {
                id: i as u64,
                hostname: format!("n{i}"),
                user: tags.is_empty().then(|| UserRef { id: u as u64, name: format!("u{u}"), email: None }),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + k)),
                ipv6: Some(Ipv6Addr::from(0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + k as u128)),
                routable_ips: Vec::new(),
                approved_routes: Vec::new(),
                primary_routes: Vec::new(),
            };
            let lan: Prefix = "192.168.1.0/24".parse().expect("a prefix");
            if i == 3 {
                node.routable_ips = vec![lan];
                node.primary_routes = vec![lan];
            }
            if i % 25 == 4 {
                node.routable_ips = vec!["0.0.0.0/0".parse().expect("a prefix"), "::/0".parse().expect("a prefix")];
            }
            node
        })
        .collect()
}

fn main() {
    let sizes: Vec<u32> = std::env::var("BENCH_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 250, 1000]);
    let text = policy();
    let policy = Policy::parse(&text).expect("the benchmark's policy is valid");
    println!("policy: {} rules, {} bytes", policy.rule_count(), text.len());
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "nodes", "addresses", "compile", "all peers", "all filters", "filter avg", "filter max", "peers avg"
    );
    for &n in &sizes {
        for scattered in [false, true] {
            let nodes = nodes(n, scattered);
            let start = Instant::now();
            let c = policy.compile(&nodes);
            let compile = start.elapsed();
            let start = Instant::now();
            let mut seen = 0usize;
            for v in &nodes {
                for p in c.peers(v.id) {
                    seen += 1;
                    std::hint::black_box(c.allowed_ips(v.id, p));
                }
            }
            let peers = start.elapsed();
            // Each node's filter is cut when a map needs it, not at compile.
            let start = Instant::now();
            let filters: Vec<_> = nodes.iter().map(|v| c.filter(v.id)).collect();
            let cut = start.elapsed();
            let sizes: Vec<usize> =
                filters.iter().map(|f| serde_json::to_vec(f).map(|b| b.len()).unwrap_or(0)).collect();
            println!(
                "{n:>6} {:>10} {:>8.1}ms {:>10.1}ms {:>10.1}ms {:>11}B {:>11}B {:>10.1}",
                if scattered { "scattered" } else { "sequential" },
                compile.as_secs_f64() * 1e3,
                peers.as_secs_f64() * 1e3,
                cut.as_secs_f64() * 1e3,
                sizes.iter().sum::<usize>() / sizes.len().max(1),
                sizes.iter().max().copied().unwrap_or(0),
                seen as f64 / n as f64,
            );
        }
    }
}
