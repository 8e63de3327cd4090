//! Subnet routes and exit nodes on the live server, through the Rust test
//! client: a router announces, the admin approves, autoApprovers approve a
//! second router, and the primary fails over when the first one's stream
//! closes, each reaching a peer as a delta.

mod common;

use std::path::Path;

use serde_json::{json, Value};

use common::client::{join, Client, Joined, MapStream};
use common::*;

const SUBNET: &str = "192.168.77.0/24";

fn key(dir: &Path, user: &str) -> String {
    json(dir, &["preauthkeys", "create", "--user", user, "--reusable", "-o", "json"])["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A map request announcing `routes` in its Hostinfo.
fn announcing(node: &[u8; 32], routes: &[&str], stream: bool) -> Value {
    let mut req = Client::map_request(node, stream);
    req["Hostinfo"] = json!({"Hostname": "router", "RoutableIPs": routes});
    req
}

/// The first `PeersChanged` entry for `id` within `secs` for which `want`
/// holds; panics with the last one seen otherwise.
async fn peer_update(stream: &mut MapStream, id: u64, secs: u64, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut last = Value::Null;
    while std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).as_secs().max(1);
        let Some(up) = stream.next_update(left).await else { break };
        assert!(up.get("Peers").is_none(), "a full map, not a delta: {up}");
        for n in up["PeersChanged"].as_array().into_iter().flatten().filter(|n| n["ID"] == id) {
            if want(n) {
                return n.clone();
            }
            last = n.clone();
        }
    }
    panic!("no update of node {id} as expected within {secs}s; last: {last}");
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn routes_are_served_once_approved_and_the_primary_fails_over_without_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0"), ("TINYSCALE_POLICY_MODE", "database")]);
    let addr = s.host_port();
    ok(&d, &["users", "create", "alice"]);
    let k = key(&d, "alice");
    let mut peer = join(&addr, &k, "phone").await;
    let mut r = join(&addr, &k, "router").await;
    let id_r = r.id();

    // Announced, not approved: the peer sees R's addresses only.
    assert_eq!(r.client.lite(&announcing(&r.node, &[SUBNET, "0.0.0.0/0", "::/0"], false)).await, 200);
    let routes = json(&d, &["nodes", "list-routes", "-o", "json"]);
    assert_eq!(strings(&routes[0]["available_routes"]), ["0.0.0.0/0", SUBNET, "::/0"], "{routes}");
    assert!(strings(&routes[0]["approved_routes"]).is_empty(), "{routes}");
    while let Some(up) = peer.stream.next_update(2).await {
        for n in up["PeersChanged"].as_array().into_iter().flatten() {
            assert!(!n["AllowedIPs"].to_string().contains("192.168.77"), "served before approval: {n}");
        }
    }

    // Approved (one exit prefix brings its pair): the subnet in AllowedIPs
    // and PrimaryRoutes, the exit routes in AllowedIPs only.
    ok(&d, &["nodes", "approve-routes", "-i", &id_r.to_string(), "-r", &format!("{SUBNET},0.0.0.0/0")]);
    let n = peer_update(&mut peer.stream, id_r, 10, |n| n["AllowedIPs"].to_string().contains(SUBNET)).await;
    let allowed = strings(&n["AllowedIPs"]);
    assert!(allowed.iter().any(|a| a == "0.0.0.0/0") && allowed.iter().any(|a| a == "::/0"), "{n}");
    assert_eq!(strings(&n["PrimaryRoutes"]), [SUBNET], "{n}");

    // autoApprovers: a second router of the same subnet is approved at once,
    // and R stays primary.
    let p = d.join("auto.hujson");
    std::fs::write(
        &p,
        format!(
            r#"{{"autoApprovers": {{"routes": {{"{SUBNET}": ["alice@"]}}}},
                 "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}]}}"#
        ),
    )
    .unwrap();
    ok(&d, &["policy", "set", "-f", p.to_str().unwrap()]);
    let mut r2 = join(&addr, &k, "router2").await;
    let id_r2 = r2.id();
    assert_eq!(r2.client.lite(&announcing(&r2.node, &[SUBNET], false)).await, 200);
    let n2 = json(&d, &["nodes", "list-routes", "-i", &id_r2.to_string(), "-o", "json"]);
    assert_eq!(strings(&n2[0]["approved_routes"]), [SUBNET], "{n2}");
    assert!(strings(&n2[0]["subnet_routes"]).is_empty(), "R is still primary: {n2}");

    // R's stream closes: after the offline grace R2 is primary, as a delta.
    let Joined { client: mut r_client, node: r_node, stream: r_stream, .. } = r;
    drop(r_stream);
    let n = peer_update(&mut peer.stream, id_r2, 30, |n| strings(&n["PrimaryRoutes"]) == [SUBNET]).await;
    assert!(n["AllowedIPs"].to_string().contains(SUBNET), "{n}");

    // R back: R2 keeps the role.
    let _again = r_client.map_stream(&announcing(&r_node, &[SUBNET, "0.0.0.0/0", "::/0"], true)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let n2 = json(&d, &["nodes", "list-routes", "-i", &id_r2.to_string(), "-o", "json"]);
    assert_eq!(strings(&n2[0]["subnet_routes"]), [SUBNET], "a recovered router took the role back: {n2}");
    let n = json(&d, &["nodes", "list-routes", "-i", &id_r.to_string(), "-o", "json"]);
    // Exit routes serve from every approved router; the subnet from R2 alone.
    assert_eq!(strings(&n[0]["subnet_routes"]), ["0.0.0.0/0", "::/0"], "{n}");
    drop(r2);
}

/// Bad route input through the CLI: invalid and host-bit prefixes, routes
/// the node does not announce and unknown nodes are refused with a clear
/// message, exit non-zero, and change nothing; overlapping announcements
/// are kept and served side by side, as Tailscale does.
#[tokio::test]
async fn bad_route_input_is_refused_and_overlaps_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = s.host_port();
    ok(&d, &["users", "create", "alice"]);
    let k = key(&d, "alice");
    let mut peer = join(&addr, &k, "phone").await;
    let mut r = join(&addr, &k, "router").await;
    let id = r.id().to_string();
    let wide = "192.168.0.0/16";
    // Overlapping, an invalid one and one inside the tailnet's own range.
    let announce = [wide, SUBNET, "banana", "192.168.1.7/24", "100.64.0.0/10"];
    assert_eq!(r.client.lite(&announcing(&r.node, &announce, false)).await, 200);
    let routes = json(&d, &["nodes", "list-routes", "-i", &id, "-o", "json"]);
    assert_eq!(strings(&routes[0]["available_routes"]), [wide, SUBNET], "{routes}");

    for (bad, want) in [
        ("banana", "banana"),
        ("192.168.77.5/24", "host bits"),
        ("10.0.0.0/8", "does not announce 10.0.0.0/8"),
        (&format!("{SUBNET},10.0.0.0/8"), "does not announce 10.0.0.0/8"),
    ] {
        let o = run(&d, &["nodes", "approve-routes", "-i", &id, "-r", bad]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(want), "{bad}: {err}");
        assert!(!crashed(o.status, &err), "{bad}: {err}");
    }
    let o = run(&d, &["nodes", "approve-routes", "-i", "999", "-r", SUBNET]);
    assert!(!o.status.success() && stderr(&o).contains("999"), "{}", stderr(&o));
    let routes = json(&d, &["nodes", "list-routes", "-i", &id, "-o", "json"]);
    assert!(strings(&routes[0]["approved_routes"]).is_empty(), "a refusal changed approvals: {routes}");

    ok(&d, &["nodes", "approve-routes", "-i", &id, "-r", &format!("{wide},{SUBNET}")]);
    let n = peer_update(&mut peer.stream, r.id(), 10, |n| strings(&n["PrimaryRoutes"]).len() == 2).await;
    assert_eq!(strings(&n["PrimaryRoutes"]), [wide, SUBNET], "{n}");
    let mut s = s;
    s.assert_alive();
}
