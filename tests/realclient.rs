//! Real, unmodified Tailscale clients (tsnet v1.90.9 from ../shared/realclient)
//! against tinyscale, each test in a closed network namespace of its own.
//! Needs root (network namespaces) and the client installed by tests/run-all.sh.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{Netns, Node};
use common::*;

const CONTROL: &str = "http://127.0.0.1:18080";

/// DNS records enough to put every first map past the size from which the
/// server compresses it (4 KiB of JSON): every test here then has the real
/// client decode our own zstd encoder's frames.
fn extra_records() -> String {
    (1..=120).map(|i| format!("    - {{name: host{i}.records.example, type: A, value: 192.0.2.{i}}}\n")).collect()
}

fn config(dir: &Path) {
    std::fs::write(
        dir.join("derp.yaml"),
        "regions:\n  900:\n    regionid: 900\n    regioncode: local\n    regionname: local\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        ipv6: none\n        stunport: -1\n        derpport: 3340\n        insecurefortests: true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "server_url: {CONTROL}\nlisten_addr: 127.0.0.1:18080\nlog:\n  level: debug\nprefixes:\n  v4: 100.70.0.0/16\n  v6: fd7a:115c:a1e0:77::/64\nderp:\n  paths: [derp.yaml]\ndns:\n  extra_records:\n{}",
            extra_records()
        ),
    )
    .unwrap();
}

/// `policy.mode: database`, so `policy set` works.
fn policy_in_database(dir: &Path) {
    let mut cfg = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    cfg.push_str("policy:\n  mode: database\n");
    std::fs::write(dir.join("config.yaml"), cfg).unwrap();
}

fn key(dir: &Path, user: &str, reusable: bool) -> String {
    let mut args = vec!["preauthkeys", "create", "--user", user, "-o", "json"];
    if reusable {
        args.push("--reusable");
    }
    json(dir, &args)["key"].as_str().unwrap().to_string()
}

/// Polls `nodes list -o json` until `pred` holds.
fn wait_nodes(dir: &Path, secs: u64, pred: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let list = json(dir, &["nodes", "list", "-o", "json"]).as_array().unwrap().clone();
        if pred(&list) {
            return list;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "nodes never reached the expected state: {list:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ip_of(list: &[serde_json::Value], name: &str) -> String {
    let n = list.iter().find(|n| n["given_name"] == name).unwrap_or_else(|| panic!("no node {name}"));
    n["ip_addresses"][0].as_str().unwrap().to_string()
}

/// `GET http://<target>/path` through `via`'s tailnet proxy, retried: the
/// first direct path may take a while to come up.
fn through(ns: &Netns, via: &Node, target: &str, path: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..6 {
        last = ns.curl(&[
            "-H",
            &format!("X-Ts-Target: {target}:80"),
            &format!("http://127.0.0.1:{}{path}", via.proxy_port()),
        ]);
        if last.contains(want) {
            return last;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{path} through the tailnet to {target} never answered {want:?}; last answer {last:?}");
}

#[test]
fn two_clients_join_see_each_other_and_survive_a_server_restart_and_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    let ns = Netns::new();
    let s = ns.serve(d);
    ok(d, &["users", "create", "alice"]);
    let k = key(d, "alice", true);
    let a = ns.start_node("nodea", CONTROL, Some(&k), &d.join("a"));
    let b = ns.start_node("nodeb", CONTROL, Some(&k), &d.join("b"));
    assert!(a.wait_running(60), "node a never reached Running:\n{}", tail(&a.log()));
    assert!(b.wait_running(60), "node b never reached Running:\n{}", tail(&b.log()));

    let list = wait_nodes(d, 20, |l| l.len() == 2 && l.iter().all(|n| n["online"] == true));
    for n in &list {
        let v4 = n["ip_addresses"][0].as_str().unwrap();
        let v6 = n["ip_addresses"][1].as_str().unwrap();
        assert!(v4.starts_with("100.70."), "{v4} outside prefixes.v4");
        assert!(v6.starts_with("fd7a:115c:a1e0:77::"), "{v6} outside prefixes.v6");
        assert_eq!(n["user"]["name"], "alice");
    }
    // Each netmap holds the other, as each client logs it and as traffic shows.
    assert!(a.wait_peers(1, 20) && b.wait_peers(1, 20), "a: {:?}, b: {:?}", a.peers(), b.peers());
    // Those first maps were compressed frames (so the clients decoded them).
    let firsts = first_maps(&s.log());
    assert!(!firsts.is_empty() && firsts.iter().all(|&(z, json)| json > 4096 && z * 3 < json), "{firsts:?}");
    let ip_a = ip_of(&list, "nodea");
    let ip_b = ip_of(&list, "nodeb");
    through(&ns, &a, &ip_b, "/", "hello from nodeb");
    let who = through(&ns, &b, &ip_a, "/whoami", "login=alice");
    assert!(who.contains(&format!("from={ip_b}")), "{who}");

    // Restart tinyscale hard: the clients come back on their own, as the same nodes.
    let ids: Vec<_> = list.iter().map(|n| n["id"].clone()).collect();
    s.kill9();
    let s = ns.serve(d);
    let again = wait_nodes(d, 90, |l| l.len() == 2 && l.iter().all(|n| n["online"] == true));
    assert_eq!(again.iter().map(|n| n["id"].clone()).collect::<Vec<_>>(), ids);
    assert!(!s.log().contains("registered for"), "a client registered again after the restart:\n{}", s.log());

    // Deleting b takes it out of a's netmap, and b is refused from then on.
    let id_b = again.iter().find(|n| n["given_name"] == "nodeb").unwrap()["id"].to_string();
    ok(d, &["nodes", "delete", "-i", &id_b, "--force"]);
    assert!(a.wait_peers(0, 20), "a still lists {:?} peers after the deletion", a.peers());
    assert!(b.wait_log(20, |l| l.contains("initial fetch failed 404: node not found")), "{}", tail(&b.log()));
    a.stop();
    b.stop();
}

/// Each first map's frame and JSON sizes, from the server's debug log.
fn first_maps(log: &str) -> Vec<(usize, usize)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("first map of ")? + "first map of ".len()..];
            let (z, rest) = rest.split_once(" B (")?;
            let (json, _) = rest.split_once(" B of JSON)")?;
            Some((z.parse().ok()?, json.parse().ok()?))
        })
        .collect()
}

/// The auth id of the login URL a client without a key shows.
fn auth_id(c: &Node) -> String {
    let prefix = format!("{CONTROL}/register/");
    assert!(c.wait_log(30, |l| l.contains(&prefix)), "the client never showed an AuthURL:\n{}", tail(&c.log()));
    let log = c.log();
    let at = log.find(&prefix).unwrap() + prefix.len();
    log[at..].chars().take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '-' || *ch == '_').collect()
}

#[test]
fn interactive_login_with_auth_register() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    let ns = Netns::new();
    let _s = ns.serve(d);
    ok(d, &["users", "create", "bob"]);
    let c = ns.start_node("nodec", CONTROL, None, &d.join("c"));
    let id = auth_id(&c);
    let prefix = format!("{CONTROL}/register/");
    // The page tells the admin what to run.
    let page = ns.curl(&[&format!("{prefix}{id}")]);
    assert!(page.contains(&format!("tinyscale auth register --auth-id {id} --user")), "{page}");
    let pending = json(d, &["auth", "pending", "-o", "json"]);
    assert_eq!(pending[0]["auth_id"], id.as_str());
    assert_eq!(pending[0]["hostname"], "nodec");

    let n = json(d, &["auth", "register", "--auth-id", &id, "--user", "bob", "-o", "json"]);
    assert_eq!(n["user"]["name"], "bob");
    assert!(c.wait_running(60), "node c never reached Running after approval:\n{}", tail(&c.log()));
    let list = wait_nodes(d, 20, |l| l.len() == 1 && l[0]["online"] == true);
    assert_eq!(list[0]["given_name"], "nodec");
    assert_eq!(list[0]["register_method"], "REGISTER_METHOD_CLI");
    // The id is single use.
    let o = run(d, &["auth", "register", "--auth-id", &id, "--user", "bob"]);
    assert_eq!(o.status.code(), Some(1));
    c.stop();
}

#[test]
fn a_single_use_key_keeps_working_for_its_machine_across_client_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    let ns = Netns::new();
    let s = ns.serve(d);
    ok(d, &["users", "create", "carol"]);
    let k = key(d, "carol", false);
    let n = ns.start_node("once", CONTROL, Some(&k), &d.join("n"));
    assert!(n.wait_running(60), "{}", tail(&n.log()));
    assert_eq!(json(d, &["preauthkeys", "list", "-o", "json"])[0]["used"], true);
    n.stop();
    // tsnet sends the same (used, single-use) key with the same node key again.
    let n = ns.start_node("once", CONTROL, Some(&k), &d.join("n"));
    assert!(n.wait_running(60), "the node was refused on restart:\n{}", tail(&n.log()));
    let list = wait_nodes(d, 20, |l| l.iter().any(|n| n["online"] == true));
    assert_eq!(list.len(), 1, "the restart made a second node: {list:#?}");
    // Another machine cannot use the spent key.
    let other = ns.start_node("other", CONTROL, Some(&k), &d.join("o"));
    assert!(other.wait_log(30, |l| l.contains("auth key already used")), "{}", tail(&other.log()));
    assert_eq!(json(d, &["nodes", "list", "-o", "json"]).as_array().unwrap().len(), 1);
    n.stop();
    other.stop();
    drop(s);
}

/// No config file, no environment: the README's first command. The embedded
/// defaults carry the relay (TLS on 8443 with the pinned certificate, STUN on
/// 3478, beside 127.0.0.1:8080), so the device's DERP map names a region and
/// it reaches Running, connected to that relay.
#[cfg(feature = "derp")]
#[test]
fn with_no_config_file_a_device_joins_through_the_embedded_relay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new();
    let s = ns.serve(d);
    assert_eq!(s.addr, "http://127.0.0.1:8080");
    assert!(s.log().contains("no config file found"), "{}", s.log());
    ok(d, &["users", "create", "alice"]);
    let k = key(d, "alice", false);
    let n = ns.start_node("first", "http://127.0.0.1:8080", Some(&k), &d.join("n"));
    assert!(n.wait_running(60), "the device never reached Running on the embedded defaults:\n{}", tail(&n.log()));
    assert!(
        n.wait_log(30, |l| l.contains("derp-999 connected")),
        "the device never connected to the embedded relay:\n{}",
        tail(&n.log())
    );
    let list = wait_nodes(d, 20, |l| l.len() == 1 && l[0]["online"] == true);
    assert_eq!(list[0]["given_name"], "first");
    n.stop();
    drop(s);
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Issue 10, item 5 with the real client: after `nodes expire` the node
/// is told at once and asks for a login (ipn state NeedsLogin), and it
/// stops hearing of its peer.
#[test]
fn an_expired_node_needs_a_login_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    let ns = Netns::new();
    let _s = ns.serve(d);
    ok(d, &["users", "create", "ida"]);
    let k = key(d, "ida", true);
    let a = ns.start_node("nodea", CONTROL, Some(&k), &d.join("a"));
    let b = ns.start_node("nodeb", CONTROL, Some(&k), &d.join("b"));
    assert!(a.wait_running(60) && b.wait_running(60), "{}\n{}", tail(&a.log()), tail(&b.log()));
    assert!(b.wait_peers(1, 20), "b: {:?}", b.peers());
    let list = wait_nodes(d, 20, |l| l.len() == 2);
    let id_b = list.iter().find(|n| n["given_name"] == "nodeb").unwrap()["id"].to_string();
    ok(d, &["nodes", "expire", "-i", &id_b]);
    assert!(
        b.wait_log(30, |l| l.contains("Switching ipn state Running -> NeedsLogin")),
        "the expired node did not ask for a login:\n{}",
        tail(&b.log())
    );
    assert!(b.wait_peers(0, 20), "the expired node still lists {:?} peers", b.peers());
    a.stop();
    b.stop();
}

/// Issue 11 with real clients: under `alice@ → bob@:80` alice reaches bob's
/// web server and bob cannot reach alice's (alice's client drops it); a
/// new policy set over the CLI reaches both clients while they run.
#[test]
fn a_policy_lets_alice_reach_bob_but_not_bob_alice_until_a_new_one_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    policy_in_database(d);
    std::fs::write(
        d.join("alice-to-bob.hujson"),
        r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}]}"#,
    )
    .unwrap();
    std::fs::write(d.join("all.hujson"), r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#).unwrap();
    let ns = Netns::new();
    let _s = ns.serve(d);
    ok(d, &["users", "create", "alice"]);
    ok(d, &["users", "create", "bob"]);
    ok(d, &["policy", "set", "-f", d.join("alice-to-bob.hujson").to_str().unwrap()]);
    let a = ns.start_node("nodea", CONTROL, Some(&key(d, "alice", false)), &d.join("a"));
    let b = ns.start_node("nodeb", CONTROL, Some(&key(d, "bob", false)), &d.join("b"));
    assert!(a.wait_running(60) && b.wait_running(60), "{}\n{}", tail(&a.log()), tail(&b.log()));
    // Either may reach the other one way, so each sees the other.
    assert!(a.wait_peers(1, 20) && b.wait_peers(1, 20), "a: {:?}, b: {:?}", a.peers(), b.peers());
    let list = wait_nodes(d, 20, |l| l.len() == 2);
    let (ip_a, ip_b) = (ip_of(&list, "nodea"), ip_of(&list, "nodeb"));

    through(&ns, &a, &ip_b, "/", "hello from nodeb");
    let refused = ns.curl(&[
        "-m",
        "8",
        "-H",
        &format!("X-Ts-Target: {ip_a}:80"),
        &format!("http://127.0.0.1:{}/", b.proxy_port()),
    ]);
    assert!(!refused.contains("hello from nodea"), "bob reached alice against the policy: {refused:?}");

    // Allow-all, set while both clients run: bob reaches alice now.
    ok(d, &["policy", "set", "-f", d.join("all.hujson").to_str().unwrap()]);
    let who = through(&ns, &b, &ip_a, "/whoami", "login=bob");
    assert!(who.contains(&format!("from={ip_b}")), "{who}");
    a.stop();
    b.stop();
}

/// `--advertise-tags` (the client's RequestTags) with an interactive login:
/// the tag is the approving user's to give by `tagOwners`, so the node is
/// owned by it from then on, as in Headscale.
#[test]
fn a_device_that_asks_for_a_tag_its_owner_may_give_is_tagged_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    policy_in_database(d);
    std::fs::write(d.join("p.hujson"), r#"{"tagOwners": {"tag:web": ["alice@"]}, "acls": []}"#).unwrap();
    let ns = Netns::new();
    let _s = ns.serve(d);
    ok(d, &["users", "create", "alice"]);
    ok(d, &["policy", "set", "-f", d.join("p.hujson").to_str().unwrap()]);
    let w = ns.start_node_env("web", CONTROL, None, &d.join("w"), &[("NODE_TAGS", "tag:web")]);
    let id = auth_id(&w);
    let n = json(d, &["auth", "register", "--auth-id", &id, "--user", "alice", "-o", "json"]);
    assert_eq!(n["tags"], serde_json::json!(["tag:web"]), "{n}");
    assert_eq!(n["user"]["name"], "tagged-devices", "{n}");
    assert!(w.wait_running(60), "the tagged node never reached Running:\n{}", tail(&w.log()));
    w.stop();
}
