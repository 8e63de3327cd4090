//! The policy on the live server, through the Rust test client: `policy set`
//! and `nodes tag` reach open map streams as deltas (PacketFilter,
//! PeersChanged, PeersRemoved), a refused policy changes nothing, and a
//! policy file is read again on SIGHUP.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::client::{join, Joined};
use common::*;

fn key(dir: &Path, user: &str) -> String {
    json(dir, &["preauthkeys", "create", "--user", user, "--reusable", "-o", "json"])["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ids(v: &Value, field: &str) -> Vec<u64> {
    let mut out: Vec<u64> = v[field]
        .as_array()
        .map(|a| a.iter().map(|n| n["ID"].as_u64().or(n.as_u64()).unwrap()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The destination ports of a filter, as "ip:first-last" strings.
fn dst_ports(filter: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in filter.as_array().into_iter().flatten() {
        for d in rule["DstPorts"].as_array().into_iter().flatten() {
            out.push(format!("{}:{}-{}", d["IP"].as_str().unwrap(), d["Ports"]["First"], d["Ports"]["Last"]));
        }
    }
    out
}

/// The next update, which must be a delta (a full map carries `Node` and the
/// DERP map and `Peers`).
async fn delta(j: &mut Joined, what: &str) -> Value {
    let up = j.stream.next_update(10).await.unwrap_or_else(|| panic!("node {} got no update after {what}", j.id()));
    assert!(up.get("Peers").is_none() && up.get("DERPMap").is_none(), "{what} sent a full map, not a delta: {up}");
    up
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const ALICE_TO_BOB_WEB: &str = r#"{
  "tagOwners": {"tag:printer": ["alice@"]},
  "acls": [
    // alice's devices reach bob's web server and the printer, nothing else
    {"action": "accept", "src": ["alice@"], "dst": ["bob@:80", "tag:printer:631"]},
  ],
}"#;

#[tokio::test]
async fn policy_set_and_nodes_tag_reach_open_streams_as_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0"), ("TINYSCALE_POLICY_MODE", "database")]);
    let addr = s.host_port();
    for u in ["alice", "bob", "carol"] {
        ok(&d, &["users", "create", u]);
    }
    let mut a = join(&addr, &key(&d, "alice"), "laptop").await;
    let mut b = join(&addr, &key(&d, "bob"), "nas").await;
    let mut c = join(&addr, &key(&d, "carol"), "tablet").await;
    // No policy: everyone sees everyone and may reach everything.
    assert_eq!(c.first["PacketFilters"]["base"][0]["SrcIPs"][0], "*");
    for j in [&mut a, &mut b] {
        while j.stream.next_update(2).await.is_some() {}
    }
    let err = run(&d, &["policy", "get"]);
    assert!(!err.status.success() && stderr(&err).contains("no policy is set"), "{}", stderr(&err));

    // A refused policy: the reason with its place, and nothing changes.
    let bad = write(
        &d,
        "bad.hujson",
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"group:kids\"], \"dst\": [\"*:*\"]}]}",
    );
    let out = run(&d, &["policy", "set", "-f", &bad]);
    assert!(!out.status.success(), "an invalid policy was taken");
    assert!(stderr(&out).contains("group:kids") && stderr(&out).contains("line 1"), "{}", stderr(&out));
    assert!(a.stream.next_update(2).await.is_none(), "a refused policy reached a client");

    // alice → bob:80 only. bob's filter lets alice in on port 80; alice's
    // and carol's let nobody in. carol sees nobody, and nobody sees carol.
    let good = write(&d, "good.hujson", ALICE_TO_BOB_WEB);
    ok(&d, &["policy", "set", "-f", &good]);
    let ip_a = a.first["Node"]["Addresses"][0].as_str().unwrap().trim_end_matches("/32").to_string();
    let ip_b = b.first["Node"]["Addresses"][0].as_str().unwrap().trim_end_matches("/32").to_string();
    let up = delta(&mut b, "policy set").await;
    let srcs = up["PacketFilters"]["base"][0]["SrcIPs"].as_array().unwrap();
    assert!(srcs.iter().any(|s| s.as_str() == Some(&ip_a)), "{up}");
    assert!(dst_ports(&up["PacketFilters"]["base"]).iter().all(|p| p.ends_with(":80-80")), "{up}");
    assert!(dst_ports(&up["PacketFilters"]["base"]).iter().any(|p| p.starts_with(&ip_b)), "{up}");
    assert_eq!(ids(&up, "PeersRemoved"), [c.id()], "{up}");
    let up = delta(&mut a, "policy set").await;
    assert_eq!(up["PacketFilters"]["base"], serde_json::json!([]), "nothing may reach alice: {up}");
    assert_eq!(ids(&up, "PeersRemoved"), [c.id()], "{up}");
    let up = delta(&mut c, "policy set").await;
    assert_eq!(up["PacketFilters"]["base"], serde_json::json!([]), "{up}");
    assert_eq!(ids(&up, "PeersRemoved"), [a.id(), b.id()], "{up}");
    assert_eq!(ok(&d, &["policy", "get"]).trim_end(), ALICE_TO_BOB_WEB.trim_end());

    // carol's tablet becomes the printer: alice sees it, and it lets alice
    // in on 631. bob still does not see it.
    ok(&d, &["nodes", "tag", "-i", &c.id().to_string(), "-t", "tag:printer"]);
    let up = delta(&mut c, "nodes tag").await;
    assert_eq!(up["Node"]["Tags"], serde_json::json!(["tag:printer"]), "{up}");
    assert_eq!(ids(&up, "PeersChanged"), [a.id()], "{up}");
    assert!(dst_ports(&up["PacketFilters"]["base"]).iter().all(|p| p.ends_with(":631-631")), "{up}");
    let up = delta(&mut a, "nodes tag").await;
    assert_eq!(ids(&up, "PeersChanged"), [c.id()], "{up}");
    assert!(up.get("PacketFilters").is_none(), "alice's own filter did not change: {up}");
    assert!(b.stream.next_update(2).await.is_none(), "bob heard of a node it does not see");

    // Allow-all again: every hidden peer comes back, with the filter.
    let all = write(&d, "all.hujson", r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#);
    ok(&d, &["policy", "set", "-f", &all]);
    let up = delta(&mut b, "allow-all").await;
    assert_eq!(ids(&up, "PeersChanged"), [c.id()], "{up}");
    assert_eq!(
        up["PacketFilters"]["base"][0]["SrcIPs"][0], "100.64.0.0-100.115.91.255",
        "`*` as Tailscale expands it: {up}"
    );
    // A policy near the 1 MiB limit goes over the admin socket too (a long
    // comment changes nothing a client sees).
    let big = format!("// {}\n{}", "x".repeat(900 * 1024), std::fs::read_to_string(&all).unwrap());
    let big_file = write(&d, "big.hujson", &big);
    ok(&d, &["policy", "set", "-f", &big_file]);
    assert_eq!(ok(&d, &["policy", "get"]).len(), big.trim_end().len() + 1);
    drop(s);
    // It is stored: a restart keeps it.
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0"), ("TINYSCALE_POLICY_MODE", "database")]);
    assert_eq!(ok(&d, &["policy", "get"]).len(), big.trim_end().len() + 1);
    drop(s);
}

#[tokio::test]
async fn a_policy_file_is_read_again_on_sighup_and_a_broken_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let file = write(&d, "policy.hujson", ALICE_TO_BOB_WEB);
    let env = [("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0"), ("TINYSCALE_POLICY_PATH", file.as_str())];
    let s = Server::start(&d, &[], &env);
    let addr = s.host_port();
    for u in ["alice", "bob"] {
        ok(&d, &["users", "create", u]);
    }
    let mut a = join(&addr, &key(&d, "alice"), "laptop").await;
    assert_eq!(a.first["PacketFilters"]["base"], serde_json::json!([]), "the file's policy applies from the start");

    // `policy set` is refused in file mode, saying what to do instead.
    let other = write(&d, "other.hujson", "{}");
    let out = run(&d, &["policy", "set", "-f", &other]);
    assert!(
        !out.status.success() && stderr(&out).contains("SIGHUP") && stderr(&out).contains(&file),
        "{}",
        stderr(&out)
    );

    let hup = || assert!(Command::new("kill").args(["-HUP", &s.child.id().to_string()]).status().unwrap().success());
    std::fs::write(&file, "{\"acls\": [ {\"action\": \"accept\" ").unwrap();
    hup();
    assert!(s.wait_log("the policy in force stays"), "{}", s.log());
    assert!(a.stream.next_update(2).await.is_none(), "a broken file reached a client");
    assert_eq!(ok(&d, &["policy", "get"]).trim_end(), ALICE_TO_BOB_WEB.trim_end());

    std::fs::write(&file, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#).unwrap();
    hup();
    let up = delta(&mut a, "SIGHUP").await;
    assert_eq!(up["PacketFilters"]["base"][0]["SrcIPs"][0], "100.64.0.0-100.115.91.255", "{up}");
}
