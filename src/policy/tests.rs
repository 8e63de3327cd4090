//! The policy module on its own: checks that name the place, bounded work
//! on hostile input, and the compiled answers on small tailnets. Tailscale's
//! own results are tests/policy_fixtures.rs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use super::*;
use crate::tailcfg::Prefix;

pub(super) fn refused(text: &str) -> String {
    match Policy::parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn user(id: u64, name: &str) -> UserRef {
    UserRef { id, name: name.into(), email: Some(format!("{name}@example.com")) }
}

/// Node `i` at 100.64.x.y / fd7a:115c:a1e0::i.
pub(super) fn node(i: u32, owner: Option<UserRef>, tags: &[&str]) -> NodeInfo {
    NodeInfo {
        id: i as u64,
        hostname: format!("n{i}"),
        user: owner,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)),
        ipv6: Some(Ipv6Addr::from(u128::from("fd7a:115c:a1e0::".parse::<Ipv6Addr>().unwrap()) + i as u128)),
        routable_ips: Vec::new(),
        approved_routes: Vec::new(),
        primary_routes: Vec::new(),
    }
}

pub(super) fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

pub(super) const TAGS: &str = r#""tagOwners": {"tag:server": ["alice@"], "tag:router": ["alice@"]}"#;

#[test]
fn mistakes_are_refused_with_their_place() {
    let cases = [
        (
            r#"{"acls": [{"action": "accept", "src": ["autogroup:bogus"], "dst": ["*:*"]}]}"#,
            "line 1, column 40: unknown autogroup \"autogroup:bogus\"",
        ),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:99999"]}]}"#,
            "dst=\"*:99999\": port range \"99999\": port number out of range",
        ),
        (r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:0"]}]}"#, "first port must be >0"),
        (
            r#"{"acls": [{"action": "accept", "src": ["10.0.0.0/40"], "dst": ["*:*"]}]}"#,
            "\"10.0.0.0/40\" is not a valid CIDR",
        ),
        (r#"{"hosts": {"nas": "10.1.2.3/99"}}"#, "hostname contains invalid IP address: hostname \"nas\""),
        (
            r#"{"acls": [{"action": "accept", "src": ["group:kids"], "dst": ["*:*"]}]}"#,
            "group not defined in policy: \"group:kids\"",
        ),
        (r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["nas:80"]}]}"#, "host not defined in policy: \"nas\""),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:x:80"]}]}"#,
            "dst=\"tag:x\": tag not found: \"tag:x\"",
        ),
        (r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#, "action=\"deny\" is not supported"),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "bogus"}]}"#,
            "invalid protocol number",
        ),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"], "proto": "icmp"}]}"#,
            "protocol does not support specific ports",
        ),
        (r#"{"ACLs": [], "acls": []}"#, "\"acls\" is given twice in the policy"),
        (r#"{"acl": []}"#, "unknown key \"acl\" in the policy"),
        (r#"{"grants": [{"src": ["*"], "dst": ["*"]}]}"#, "ip and app can not both be empty"),
        (r#"{"grants": [{"src": ["*"], "dst": ["*"], "ip": ["tcp:22:1"]}]}"#, "expected only one colon"),
        (
            r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/ingress": [{}]}}]}"#,
            "not be in the tailscale.com domain",
        ),
        (r#"{"groups": {"group:a": ["group:b"]}}"#, "group members cannot be recursive"),
        (r#"{"groups": {"group:a": ["alice"]}}"#, "username must contain @"),
        (r#"{"tagOwners": {"tag:1x": []}}"#, "tag names must start with a letter"),
        (r#"{"autoApprovers": {"routes": {"10.0.0.0/33": ["alice@"]}}}"#, "is not a valid CIDR"),
        (
            r#"{"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["root"]}]}"#,
            "wildcard (*) is not supported as SSH destination",
        ),
        (r#"{"tests": [{"src": "alice@", "accept": ["10.0.0.0/8:22"]}]}"#, "must be a single host"),
        (r#"{"randomizeClientPort": "yes"}"#, "randomizeClientPort must be true or false"),
        ("[1, 2]", "line 1, column 1: the policy must be an object"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\",, }\n  ]\n}", "line 3, column 25: expected a key in quotes"),
    ];
    for (text, want) in cases {
        let got = refused(text);
        assert!(got.contains(want), "{text}\n  want {want:?}\n  got  {got:?}");
    }
}

#[test]
fn every_problem_is_listed_in_text_order_up_to_a_bound() {
    let mut rules = Vec::new();
    for i in 0..100 {
        rules.push(format!(r#"{{"action": "accept", "src": ["group:g{i}"], "dst": ["*:*"]}}"#));
    }
    let text = format!("{{\"acls\": [\n{}\n]}}", rules.join(",\n"));
    let PolicyError::Invalid { problems, more } = Policy::parse(&text).unwrap_err() else { panic!() };
    assert_eq!((problems.len(), more), (MAX_PROBLEMS, 100 - MAX_PROBLEMS));
    assert!(problems.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(problems[1].pos.line, 3);
    assert!(Policy::parse(&text).unwrap_err().to_string().ends_with("... and 80 more problem(s)"));
}

#[test]
fn comments_trailing_commas_and_the_sections_not_applied_yet() {
    let text = r#"
    // The family's policy.
    {
      "groups": {"group:parents": ["mum@", "dad@example.com",],},
      "tagOwners": {"tag:nas": ["group:parents"]},
      /* the rules */
      "acls": [
        {"action": "accept", "src": ["group:parents"], "dst": ["*:*"]},
        {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:nas:80,443", "autogroup:self:*"]},
      ],
      "ssh": [{"action": "check", "src": ["group:parents"], "dst": ["tag:nas"], "users": ["root"], "checkPeriod": "12h"}],
      "nodeAttrs": [{"target": ["autogroup:member"], "attr": ["funnel"]}],
      "tests": [{"src": "mum@", "accept": ["tag:nas:80"]}],
    }"#;
    let policy = Policy::parse(text).unwrap();
    assert_eq!(policy.rule_count(), 3);
    assert_eq!(policy.not_applied(), ["nodeAttrs", "ssh", "tests"]);
}

#[test]
fn hostile_input_is_bounded() {
    // Nested a hundred thousand deep: refused at the limit, no stack overflow.
    let deep = format!("{{\"grants\": {}", "[".repeat(100_000));
    assert!(matches!(Policy::parse(&deep), Err(PolicyError::Syntax(HujsonError::TooDeep { .. }))));
    // More than a megabyte: refused before it is read.
    let huge = format!("{{\"hosts\": {{}}}}{}", " ".repeat(hujson::MAX_LEN));
    assert!(refused(&huge).contains("more than the 1048576 accepted"));

    // A megabyte of rules is refused past MAX_RULES with a clear message;
    // MAX_RULES of them are read and compiled in bounded time.
    let rule = |i: usize| {
        format!(
            r#"{{"action":"accept","src":["10.{}.{}.0/24"],"dst":["tag:server:{}"]}}"#,
            i / 256 % 256,
            i % 256,
            i % 65535 + 1
        )
    };
    let many = |n: usize| format!("{{{TAGS}, \"acls\": [{}]}}", (0..n).map(rule).collect::<Vec<_>>().join(","));
    let over = many(14_000);
    assert!(over.len() <= hujson::MAX_LEN);
    assert!(refused(&over)
        .contains("the policy has 14000 rules (ACL destinations and grants), more than the 10000 accepted"));
    let text = many(MAX_RULES);
    let start = Instant::now();
    let policy = Policy::parse(&text).unwrap();
    let parsed = start.elapsed();
    let nodes: Vec<NodeInfo> = (1..=50).map(|i| node(i, None, &["tag:server"])).collect();
    let compiled = policy.compile(&nodes);
    assert_eq!(compiled.filter(1).len(), MAX_RULES);
    eprintln!("{MAX_RULES} rules, 50 nodes: parsed in {parsed:?}, compiled in {:?}", start.elapsed() - parsed);
}

/// A home tailnet: parents reach everything, kids reach the printer and the
/// media server's web port, the NAS reaches nobody.
#[test]
fn a_family_tailnet() {
    let text = r#"{
      "groups": {"group:parents": ["mum@"], "group:kids": ["kid@"]},
      "tagOwners": {"tag:nas": ["mum@"], "tag:media": ["mum@"], "tag:printer": ["mum@"]},
      "acls": [
        {"action": "accept", "src": ["group:parents"], "dst": ["*:*"]},
        {"action": "accept", "src": ["group:kids"], "dst": ["tag:printer:*", "tag:media:80,443"]},
      ],
    }"#;
    let policy = Policy::parse(text).unwrap();
    let (mum, kid) = (user(1, "mum"), user(2, "kid"));
    let nodes = vec![
        node(1, Some(mum.clone()), &[]),
        node(2, Some(kid.clone()), &[]),
        node(3, None, &["tag:nas"]),
        node(4, None, &["tag:media"]),
        node(5, None, &["tag:printer"]),
    ];
    let c = policy.compile(&nodes);
    // The kid's tablet is reached only by the parents.
    let kid_filter = c.filter(2);
    assert_eq!(kid_filter.len(), 1);
    assert_eq!(&*kid_filter[0].src_ips, ["100.64.0.1", "fd7a:115c:a1e0::1"]);
    // The media server takes the kid on 80 and 443 only.
    let media = c.filter(4);
    let kid_rule = media.iter().find(|r| r.src_ips.contains(&"100.64.0.2".to_string())).unwrap();
    let mut ports: Vec<(u16, u16)> = kid_rule.dst_ports.iter().map(|d| (d.ports.first, d.ports.last)).collect();
    ports.sort_unstable();
    assert_eq!(ports, [(80, 80), (80, 80), (443, 443), (443, 443)]);
    // The NAS sees only the parents; nobody is reached from it.
    assert_eq!(c.peers(3), [1]);
    assert!(c.sees(2, 5) && c.sees(5, 2));
    assert!(!c.sees(2, 3) && !c.sees(3, 2));
    assert!(!c.sees(3, 4));
    assert_eq!(c.allowed_ips(2, 4), [p("100.64.0.4/32"), p("fd7a:115c:a1e0::4/128")]);
    assert!(c.allowed_ips(2, 3).is_empty());
    // Unknown nodes get nothing, and no panic.
    assert!(c.filter(99).is_empty());
    assert!(!c.sees(99, 1));
}

#[test]
fn routes_follow_the_rules_and_auto_approvers() {
    let text = r#"{
      "tagOwners": {"tag:router": ["alice@"], "tag:exit": ["alice@"]},
      "autoApprovers": {"routes": {"192.168.0.0/16": ["tag:router"]}, "exitNode": ["tag:exit"]},
      "acls": [
        {"action": "accept", "src": ["alice@"], "dst": ["192.168.1.0/24:*", "autogroup:internet:*"]},
      ],
    }"#;
    let policy = Policy::parse(text).unwrap();
    let alice = user(1, "alice");
    let mut router = node(2, None, &["tag:router"]);
    router.routable_ips = vec![p("192.168.1.0/24"), p("10.9.0.0/16")];
    router.primary_routes = vec![p("192.168.1.0/24")];
    let mut exit = node(3, None, &["tag:exit"]);
    exit.routable_ips = vec![p("0.0.0.0/0"), p("::/0")];
    let nodes = vec![node(1, Some(alice), &[]), router, exit, node(4, Some(user(4, "bob")), &[])];
    let c = policy.compile(&nodes);
    // 10.9.0.0/16 is announced but no approver covers it.
    assert_eq!(c.approved_routes(2), [p("192.168.1.0/24")]);
    assert_eq!(c.approved_routes(3), [p("0.0.0.0/0"), p("::/0")]);
    assert!(c.sees(1, 2) && c.sees(1, 3));
    assert_eq!(c.primary_routes(1, 2), [p("192.168.1.0/24")]);
    assert!(c.allowed_ips(1, 3).contains(&p("0.0.0.0/0")));
    assert!(c.primary_routes(1, 3).is_empty());
    // The router enforces the subnet rule; bob reaches nothing.
    assert_eq!(c.filter(2).len(), 1);
    assert_eq!(c.filter(2)[0].dst_ports[0].ip, "192.168.1.0/24");
    assert!(c.peers(4).is_empty());
}

#[test]
fn grants_carry_capabilities() {
    let text = r#"{
      "tagOwners": {"tag:server": ["alice@"]},
      "grants": [{"src": ["autogroup:member"], "dst": ["tag:server"], "ip": ["tcp:443"],
                  "app": {"example.com/cap/web": [{"role": "admin"}]}}],
    }"#;
    let policy = Policy::parse(text).unwrap();
    let nodes = vec![node(1, Some(user(1, "alice")), &[]), node(2, None, &["tag:server"])];
    let c = policy.compile(&nodes);
    let f = c.filter(2);
    assert_eq!(f.len(), 2);
    let json = serde_json::to_string(&f).unwrap();
    assert!(json.contains(r#""IPProto":[6]"#), "{json}");
    assert!(json.contains(r#""CapGrant":[{"Dsts":["100.64.0.2/32","fd7a:115c:a1e0::2/128"],"CapMap":{"example.com/cap/web":[{"role":"admin"}]}}]"#), "{json}");
    assert!(c.filter(1).is_empty());
}

/// The benchmark's shape, small enough for a unit test: 50 rules over a
/// few hundred nodes, printed (never asserted).
#[test]
fn compile_scales_with_rules_times_nodes() {
    let mut acls = Vec::new();
    for i in 0..50 {
        acls.push(match i % 3 {
            0 => format!(r#"{{"action":"accept","src":["autogroup:member"],"dst":["tag:server:{}"]}}"#, i + 1),
            1 => format!(
                r#"{{"action":"accept","src":["group:g{}"],"dst":["autogroup:self:*", "tag:router:{}"]}}"#,
                i % 5,
                i + 1
            ),
            _ => format!(r#"{{"action":"accept","src":["tag:router"],"dst":["autogroup:member:{}"]}}"#, i + 1),
        });
    }
    let groups: Vec<String> = (0..5).map(|g| format!(r#""group:g{g}": ["u{g}@"]"#)).collect();
    let text = format!("{{{TAGS}, \"groups\": {{{}}}, \"acls\": [{}]}}", groups.join(","), acls.join(","));
    let policy = Policy::parse(&text).unwrap();
    let nodes: Vec<NodeInfo> = (1..=300)
        .map(|i| match i % 10 {
            0 => node(i, None, &["tag:server"]),
            1 => node(i, None, &["tag:router"]),
            _ => node(i, Some(user(i as u64 % 20, &format!("u{}", i % 20))), &[]),
        })
        .collect();
    let start = Instant::now();
    let c = policy.compile(&nodes);
    let took = start.elapsed();
    let rules: usize = nodes.iter().map(|n| c.filter(n.id).len()).sum();
    eprintln!("50 rules, 300 nodes: compiled in {took:?} ({rules} filter rules in all)");
    assert!(c.sees(2, 10));
}

/// Security review: a group member with terminal escapes came back raw in
/// the message's hint, to the terminal (and later the web UI).
#[test]
fn control_characters_in_a_refused_name_are_escaped() {
    let text = "{\"groups\": {\"group:a\": [\"\\u001b[2J\\nOK (0 rule(s))\"]}}";
    let e = Policy::parse(text).unwrap_err().to_string();
    assert!(!e.contains('\u{1b}'), "{e:?}");
    assert_eq!(e.lines().count(), 1, "{e:?}");
}
