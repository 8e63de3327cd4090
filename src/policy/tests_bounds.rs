//! The security review's findings on hostile or careless policies (a
//! policy is settable over the network): each bounded by counting, not by
//! timing, so the tests hold on a loaded router as on a laptop.

use std::sync::Arc;

use super::simulate::{simulate, Topology};
use super::tests::{node, p, refused, user, TAGS};
use super::*;
use crate::tailcfg::Prefix;

/// `n` distinct single addresses, quoted, comma-separated.
fn addresses(n: usize, ports: &str) -> String {
    (0..n).map(|i| format!("\"10.{}.{}.1{ports}\"", i / 256, i % 256)).collect::<Vec<_>>().join(",")
}

/// Finding 1: an ACL was expanded sources × destinations before the rule
/// cap was checked (77 KB took 1.1 GB).
#[test]
fn acl_sources_and_destinations_are_counted_before_they_are_built() {
    // A list longer than MAX_LIST is refused where it stands.
    let text = format!(r#"{{"acls": [{{"action": "accept", "src": [{}], "dst": ["*:*"]}}]}}"#, addresses(1001, ""));
    let e = refused(&text);
    assert!(e.contains("line 1, column 39: acls[0].src has 1001 entries, more than the 1000 accepted"), "{e}");

    // Eleven ACLs of 1000 sources and 1000 destinations: 11,000 rules,
    // refused at the ACL that passes 10,000, named by its place.
    let acl = format!(
        r#"{{"action": "accept", "src": [{}], "dst": [{}]}}"#,
        addresses(MAX_LIST, ""),
        addresses(MAX_LIST, ":22")
    );
    let text = format!("{{\"acls\": [\n{}\n]}}", [acl.as_str(); 11].join(",\n"));
    assert!(text.len() <= hujson::MAX_LEN);
    let e = refused(&text);
    assert!(
        e.contains(
            "line 12, column 1: the policy has 11000 rules (ACL destinations and grants), more than the 10000 accepted"
        ),
        "{e}"
    );

    // Ten of them are accepted; each ACL's rules share one source list,
    // and in a node's filter one SrcIPs.
    let text = format!("{{{TAGS}, \"acls\": [{}]}}", [acl.as_str(); 10].join(","));
    let policy = Policy::parse(&text).expect("10,000 rules are accepted");
    assert_eq!(policy.rule_count(), MAX_RULES);
    assert!(policy.grants.windows(2).take(MAX_LIST - 1).all(|w| Arc::ptr_eq(&w[0].src, &w[1].src)));
    let shared: Vec<_> = policy.grants.iter().map(|g| Arc::as_ptr(&g.src)).collect();
    let mut distinct = shared.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "one source list per ACL");
    let c = policy.compile(&[node(1, Some(user(1, "alice")), &[]), node(2, None, &["tag:server"])]);
    assert_eq!(c.shared.len(), 1, "the 10,000 rules, of the same sources, merge into one");
}

/// Finding 2: a grant's destinations × ports × prefixes were neither
/// deduplicated nor capped (3 KB took 1.8 GB with one exit node).
#[test]
fn grant_destinations_and_ports_are_deduplicated_and_bounded() {
    let internet = resolve::internet().prefixes().len();
    let dsts = vec!["\"autogroup:internet\""; 100].join(",");
    let ips = vec!["\"tcp:1-65535\", \"tcp:22\", \"tcp:80,81,80-90\""; 100].join(",");
    let text = format!(r#"{{"grants": [{{"src": ["*"], "dst": [{dsts}], "ip": [{ips}]}}]}}"#);
    assert!(text.len() < 8_000);
    let policy = Policy::parse(&text).expect("accepted: it is one destination and one port range");
    let mut exit = node(2, None, &[]);
    exit.user = Some(user(2, "bob"));
    exit.routable_ips = vec![p("0.0.0.0/0"), p("::/0")];
    exit.approved_routes = exit.routable_ips.clone();
    let nodes = vec![node(1, Some(user(1, "alice")), &[]), exit];
    let c = policy.compile(&nodes);
    let entries: usize = c.filter(2).iter().map(|r| r.dst_ports.len()).sum();
    assert_eq!(entries, internet, "each range of the internet once, with the ports joined into 1-65535");
    assert!(c.filter(2).iter().flat_map(|r| &r.dst_ports).all(|d| (d.ports.first, d.ports.last) == (1, 65535)));

    // Distinct destinations × distinct port ranges past MAX_ENTRIES:
    // refused at parse time, at the grant.
    let ports: Vec<String> = (0..60).map(|i| format!("{}", 1000 + 2 * i)).collect();
    let grant = format!(r#"{{"src": ["*"], "dst": [{}], "ip": ["tcp:{}"]}}"#, addresses(MAX_LIST, ""), ports.join(","));
    let e = refused(&format!("{{\"grants\": [\n{grant}\n]}}"));
    assert!(e.contains("line 2, column 1: the rules expand to 60000 destination entries"), "{e}");
    assert!(e.contains(&format!("more than the {MAX_ENTRIES} accepted")), "{e}");
    // autogroup:internet counts as the ranges it stands for.
    let grant = format!(r#"{{"src": ["*"], "dst": ["autogroup:internet"], "ip": ["tcp:{}"]}}"#, ports.join(","));
    let grants = vec![grant.as_str(); MAX_ENTRIES / (60 * internet) + 1].join(",");
    assert!(refused(&format!("{{\"grants\": [{grants}]}}")).contains("destination entries"));
}

/// Finding 3: a capability's value was deep-copied per node × destination
/// (104 KB took 405 MB on two nodes). One entry per rule now, its value
/// shared until a node's filter is written.
#[test]
fn a_capability_is_one_entry_per_rule_and_writes_the_same() {
    let dsts = vec![r#""*", "tag:server", "autogroup:member", "100.64.0.2""#; 50].join(",");
    let text = format!(
        r#"{{{TAGS}, "grants": [{{"src": ["*"], "dst": [{dsts}],
             "app": {{"example.com/cap/web": [{{"role": "admin"}}]}}}}]}}"#
    );
    let policy = Policy::parse(&text).unwrap();
    let nodes = vec![node(1, Some(user(1, "alice")), &[]), node(2, None, &["tag:server"])];
    let c = policy.compile(&nodes);
    for id in [1, 2] {
        let f = c.filter(id);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].cap_grant.len(), 1, "one copy of the value per node and rule: {f:?}");
    }
    let json = serde_json::to_string(&c.filter(2)[0].cap_grant).unwrap();
    assert_eq!(
        json,
        r#"[{"Dsts":["100.64.0.2/32","fd7a:115c:a1e0::2/128"],"CapMap":{"example.com/cap/web":[{"role":"admin"}]}}]"#
    );
}

fn topology(json: serde_json::Value) -> Topology {
    serde_json::from_value(json).expect("a topology")
}

/// Finding 4: `alice@example.com` fell through to a user *named* so while
/// the user with that email had no node; a token fitting two users named
/// both.
#[test]
fn a_user_token_names_its_user_or_nobody() {
    let policy = Policy::parse(
        r#"{"tagOwners": {"tag:server": ["alice@example.com"]},
            "acls": [{"action": "accept", "src": ["alice@example.com", "bob@"], "dst": ["tag:server:22"]}]}"#,
    )
    .unwrap();
    // Alice (by email) has no node; another user is named like her email.
    // Two users are named bob.
    let t = topology(serde_json::json!({
        "users": [
            {"id": 1, "name": "alice", "email": "alice@example.com"},
            {"id": 2, "name": "alice@example.com"},
            {"id": 3, "name": "bob", "email": "bob@one.example"},
            {"id": 4, "name": "bob", "email": "bob@two.example"},
        ],
        "nodes": {
            "mallory-laptop": {"user": "alice@example.com", "ipv4": "100.64.0.1"},
            "bob-laptop": {"user": "bob", "ipv4": "100.64.0.3"},
            "server": {"tags": ["tag:server"], "ipv4": "100.64.0.2"},
        },
    }));
    let got = simulate(&policy, &t).unwrap();
    assert!(got["server"].filter.is_empty(), "{:?}", got["server"].filter);
    assert!(got["server"].peers.is_empty());

    // Told apart, each token names its one user.
    let t = topology(serde_json::json!({
        "users": [
            {"id": 1, "name": "alice", "email": "alice@example.com"},
            {"id": 3, "name": "bob", "email": "bob@one.example"},
        ],
        "nodes": {
            "alice-laptop": {"user": "alice", "ipv4": "100.64.0.4"},
            "bob-laptop": {"user": "bob", "ipv4": "100.64.0.3"},
            "server": {"tags": ["tag:server"], "ipv4": "100.64.0.2"},
        },
    }));
    let got = simulate(&policy, &t).unwrap();
    let src: Vec<&String> = got["server"].filter.iter().flat_map(|r| r.src_ips.iter()).collect();
    assert_eq!(src, ["100.64.0.3-100.64.0.4"]);
}

/// Finding 5: `100.64.0.2/8` stood for all of 100.0.0.0/8, silently.
#[test]
fn cidrs_with_host_bits_are_refused() {
    let cases = [
        (
            r#"{"acls": [{"action": "accept", "src": ["100.64.0.2/8"], "dst": ["*:*"]}]}"#,
            r#"line 1, column 40: "100.64.0.2/8" has bits set past its /8: write 100.0.0.0/8 for the network, or 100.64.0.2 alone"#,
        ),
        (
            r#"{"grants": [{"src": ["*"], "dst": ["fd7a::1/64"], "ip": ["*"]}]}"#,
            r#""fd7a::1/64" has bits set past its /64: write fd7a::/64"#,
        ),
        (r#"{"hosts": {"nas": "192.168.1.7/24"}}"#, r#"hosts["nas"]: "192.168.1.7/24" has bits set"#),
        (r#"{"autoApprovers": {"routes": {"10.1.2.3/8": []}}}"#, r#"autoApprovers.routes: "10.1.2.3/8" has bits set"#),
    ];
    for (text, want) in cases {
        let got = refused(text);
        assert!(got.contains(want), "{text}\n  want {want:?}\n  got  {got:?}");
    }
    assert!(Policy::parse(r#"{"acls": [{"action": "accept", "src": ["100.64.0.0/10"], "dst": ["*:*"]}]}"#).is_ok());
}

/// Finding 7: a field given under both its names, and port text with
/// stray dashes, were taken without a word; repeated routes were
/// compared pairwise and kept twice.
#[test]
fn doubled_fields_stray_dashes_and_repeated_routes() {
    let cases = [
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "users": ["alice@"], "dst": ["*:*"]}]}"#,
            r#"line 1, column 55: acls[0]: "src" and "users" are the same field"#,
        ),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "ports": ["*:22"]}]}"#,
            r#"acls[0]: "dst" and "ports" are the same field"#,
        ),
        (
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:--80--90--"]}]}"#,
            "port range \"--80--90--\": invalid port range format",
        ),
        (r#"{"grants": [{"src": ["*"], "dst": ["*"], "ip": ["tcp:80--90"]}]}"#, "invalid port range format"),
    ];
    for (text, want) in cases {
        let got = refused(text);
        assert!(got.contains(want), "{text}\n  want {want:?}\n  got  {got:?}");
    }
    let policy = Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#).unwrap();
    let mut router = node(1, None, &["tag:router"]);
    let routes: Vec<Prefix> = (0..2000).map(|i| p(&format!("10.{}.{}.0/24", i / 256, i % 256))).collect();
    router.routable_ips = routes.iter().chain(&routes).copied().collect();
    router.approved_routes = routes.iter().chain(&routes).copied().collect();
    let c = policy.compile(&[router]);
    assert_eq!(c.approved_routes(1), routes);
}

/// Review 11: the bounds are per node, and a compile held every node's
/// filter. 10,000 grants of distinct sources to `*` (513 KB of text,
/// accepted) put 10,000 rules in every node's filter; on 1,000 nodes the
/// compile took 18 s and 2.9 GB. Now the rules are held once and a node's
/// filter is cut when it is asked for.
#[test]
fn every_node_holding_every_rule_is_bounded_for_the_tailnet() {
    let grants: Vec<String> = (0..MAX_RULES)
        .map(|i| format!(r#"{{"src": ["10.{}.{}.1"], "dst": ["*"], "ip": ["tcp:22"]}}"#, i / 256, i % 256))
        .collect();
    let text = format!(r#"{{"grants": [{}]}}"#, grants.join(","));
    assert!(text.len() <= hujson::MAX_LEN);
    let policy = Policy::parse(&text).expect("accepted");
    let nodes: Vec<NodeInfo> = (1..=1000).map(|i| node(i, Some(user(1, "alice")), &[])).collect();
    let c = policy.compile(&nodes);
    assert!(c.held_rules() <= MAX_RULES, "{} rules held for {} nodes", c.held_rules(), nodes.len());
    // What one node is sent is still every rule that concerns it.
    assert_eq!(c.filter(500).len(), MAX_RULES);
}
