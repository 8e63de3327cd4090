//! The policy: the HuJSON reader, `Policy::parse`'s checks, and the
//! compiler over a small tailnet (routers, an exit node, users and tags),
//! so a policy that parses is also compiled and asked every question.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use tinyscale::policy::{hujson, NodeInfo, Policy, UserRef};

fn nodes() -> Vec<NodeInfo> {
    let p = |s: &str| s.parse().expect("a valid prefix");
    let user = |id: u64, name: &str| UserRef { id, name: name.into(), email: Some(format!("{name}@example.com")) };
    let node = |i: u32, owner: Option<UserRef>, tags: &[&str]| NodeInfo {
        id: i as u64,
        hostname: format!("n{i}"),
        user: owner,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: Some(Ipv4Addr::new(100, 64, 0, i as u8)),
        ipv6: Some(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, i as u16)),
        routable_ips: Vec::new(),
        approved_routes: Vec::new(),
        primary_routes: Vec::new(),
    };
    let mut router = node(3, None, &["tag:router"]);
    router.routable_ips = vec![p("10.33.0.0/16"), p("192.168.1.0/24")];
    router.approved_routes = vec![p("10.33.0.0/16")];
    router.primary_routes = vec![p("10.33.0.0/16")];
    let mut exit = node(4, None, &["tag:exit", "tag:router"]);
    exit.routable_ips = vec![p("0.0.0.0/0"), p("::/0"), p("10.33.0.0/16")];
    vec![
        node(1, Some(user(1, "odin")), &[]),
        node(2, Some(user(2, "thor")), &[]),
        router,
        exit,
        node(5, None, &["tag:server"]),
        node(6, Some(user(1, "odin")), &[]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = hujson::parse(&text);
    let Ok(policy) = Policy::parse(&text) else { return };
    let _ = policy.not_applied();
    let nodes = nodes();
    let c = policy.compile(&nodes);
    for v in &nodes {
        let _ = serde_json::to_vec(&c.filter(v.id));
        let _ = c.approved_routes(v.id);
        for p in &nodes {
            if c.sees(v.id, p.id) {
                let _ = c.allowed_ips(v.id, p.id);
                let _ = c.primary_routes(v.id, p.id);
            }
        }
    }
});
