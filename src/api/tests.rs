use super::*;
use crate::config::{Allocation, Prefixes};
use crate::store::Store;
use serde_json::json;

fn state(dir: &std::path::Path) -> Arc<State> {
    let p = Prefixes { v4: Some("100.64.0.0/10".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
    Arc::new(State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), crate::state::Settings::new(p)).unwrap())
}

/// An answer with its JSON read back, to look into.
struct Answer {
    status: u16,
    body: serde_json::Value,
}

fn call(s: &Arc<State>, method: &str, target: &str, body: &str) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let r = handle(s, &Request { method, path, query, body: body.as_bytes() });
    Answer { status: r.status, body: serde_json::from_slice(&r.body).expect("every answer is JSON") }
}

#[test]
fn users_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let r = call(&s, "POST", "/api/v1/user", r#"{"name":"alice","email":"a@example.com"}"#);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["id"], "1", "ids are strings");
    assert_eq!(call(&s, "POST", "/api/v1/user", r#"{"name":"alice"}"#).status, 409);
    assert_eq!(call(&s, "POST", "/api/v1/user", r#"{"name":"1erin"}"#).status, 400);
    assert_eq!(call(&s, "POST", "/api/v1/user", r#"{"nam"#).status, 400);
    let r = call(&s, "GET", "/api/v1/user?name=alice", "");
    assert_eq!(r.body["users"].as_array().unwrap().len(), 1);
    let r = call(&s, "GET", "/api/v1/user?email=nobody%40example.com", "");
    assert!(r.body["users"].as_array().unwrap().is_empty());
    let r = call(&s, "POST", "/api/v1/user/1/rename/al%2Dice", "");
    assert_eq!(r.body["user"]["name"], "al-ice");
    assert_eq!(call(&s, "DELETE", "/api/v1/user/7", "").status, 404);
    assert_eq!(call(&s, "DELETE", "/api/v1/user/x", "").status, 400);
    assert_eq!(call(&s, "DELETE", "/api/v1/user/1", "").status, 200);
    assert_eq!(call(&s, "GET", "/api/v1/nothing", "").status, 404);
}

#[test]
fn keys_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    call(&s, "POST", "/api/v1/user", r#"{"name":"alice"}"#);
    let r = call(
        &s,
        "POST",
        "/api/v1/preauthkey",
        r#"{"user":"alice","reusable":true,"expiration":"2099-01-01T00:00:00Z"}"#,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let full = r.body["preAuthKey"]["key"].as_str().unwrap().to_string();
    assert!(full.starts_with(crate::secrets::AUTH_KEY_PREFIX) && !full.ends_with("***"));
    assert_eq!(r.body["preAuthKey"]["user"]["name"], "alice");
    // Lists never show the secret.
    let r = call(&s, "GET", "/api/v1/preauthkey?user=1", "");
    let listed = r.body["preAuthKeys"][0]["key"].as_str().unwrap();
    assert!(listed.ends_with("-***") && !listed.contains(full.rsplit('-').next().unwrap()));
    assert_eq!(call(&s, "POST", "/api/v1/preauthkey", r#"{"user":"bob"}"#).status, 404);
    assert_eq!(call(&s, "POST", "/api/v1/preauthkey", r#"{"user":"alice","expiration":"soon"}"#).status, 400);
    let r = call(&s, "POST", "/api/v1/preauthkey/expire", r#"{"id":"1"}"#);
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    let r = call(&s, "GET", "/api/v1/preauthkey", "");
    let k: PreAuthKeysResponse = serde_json::from_value(r.body).unwrap();
    assert!(crate::state::has_passed(clock::parse_rfc3339(&k.pre_auth_keys[0].expiration).unwrap(), clock::now_unix()));
    assert_eq!(call(&s, "DELETE", "/api/v1/preauthkey?id=1", "").status, 200);
    assert_eq!(call(&s, "DELETE", "/api/v1/preauthkey?id=1", "").status, 404);

    let key = format!("nodekey:{}", "ab".repeat(32));
    let r = call(&s, "POST", "/api/v1/debug/node", &format!(r#"{{"user":"alice","name":"Laptop","key":"{key}"}}"#));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let n = &r.body["node"];
    assert_eq!(n["givenName"], "laptop");
    assert_eq!(n["ipAddresses"], json!(["100.64.0.1"]));
    assert_eq!(n["user"]["name"], "alice");
    assert_eq!(n["online"], false);
    assert_eq!(call(&s, "POST", "/api/v1/node/1/rename/desk", "").body["node"]["givenName"], "desk");
    let r = call(&s, "POST", "/api/v1/node/1/expire", "");
    assert!(r.body["node"]["expiry"].is_string());
    assert_eq!(call(&s, "DELETE", "/api/v1/user/1", "").status, 409);
    assert_eq!(call(&s, "DELETE", "/api/v1/node/1", "").status, 200);
    assert!(call(&s, "GET", "/api/v1/node", "").body["nodes"].as_array().unwrap().is_empty());
}

#[test]
fn approve_routes_and_node_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    call(&s, "POST", "/api/v1/user", r#"{"name":"alice"}"#);
    let key = format!("nodekey:{}", "ab".repeat(32));
    call(&s, "POST", "/api/v1/debug/node", &format!(r#"{{"user":"alice","name":"r","key":"{key}"}}"#));
    let hi =
        serde_json::value::RawValue::from_string(r#"{"RoutableIPs":["192.168.77.0/24","0.0.0.0/0","::/0"]}"#.into());
    s.report_blocking(1, Some(hi.unwrap()), 130);
    let r = call(&s, "GET", "/api/v1/node/1", "");
    assert_eq!(r.body["node"]["availableRoutes"], json!(["0.0.0.0/0", "192.168.77.0/24", "::/0"]));
    assert_eq!(r.body["node"]["approvedRoutes"], json!([]));
    assert_eq!(r.body["node"]["subnetRoutes"], json!([]));
    let r = call(&s, "POST", "/api/v1/node/1/approve_routes", r#"{"routes":["10.0.0.0/8"]}"#);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("does not announce 10.0.0.0/8"));
    assert_eq!(call(&s, "POST", "/api/v1/node/1/approve_routes", r#"{"routes":["banana"]}"#).status, 400);
    assert_eq!(call(&s, "POST", "/api/v1/node/9/approve_routes", r#"{"routes":[]}"#).status, 404);
    let r = call(&s, "POST", "/api/v1/node/1/approve_routes", r#"{"routes":["::/0"]}"#);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["node"]["approvedRoutes"], json!(["0.0.0.0/0", "::/0"]));
    // Served: the exit routes (no primary is elected for them).
    assert_eq!(r.body["node"]["subnetRoutes"], json!(["0.0.0.0/0", "::/0"]));
}
