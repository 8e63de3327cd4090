//! Headscale's REST API on the main listener, as a script would use it:
//! plain HTTP requests with a key from `tinyscale apikeys create`. Shapes
//! are Headscale's (camelCase, ids as strings, wrapped answers); no key, a
//! wrong one and an expired one get 401; bad input gets a clear 4xx and
//! changes nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use common::client::{join, Client};
use common::*;

/// One plain HTTP/1.1 request; the status and the JSON body (Null if none).
fn rest(addr: &str, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let (status, text) = raw(addr, method, path, key.map(|k| format!("Bearer {k}")).as_deref(), body.unwrap_or(""));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn raw(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // A refused body may be left unread: the server may close first.
    let _ = s.write_all(body.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn api_key(d: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["apikeys", "create", "-o", "json"];
    all.extend_from_slice(args);
    json(d, &all).as_str().expect("apikeys create -o json prints the key").to_string()
}

#[tokio::test]
async fn a_script_with_an_api_key_runs_the_tailnet_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0"), ("TINYSCALE_POLICY_MODE", "database")]);
    let addr = s.host_port();
    let key = api_key(&d, &[]);
    assert!(key.starts_with("hskey-api-") && key.len() == 10 + 12 + 1 + 64, "{key}");
    let k = Some(key.as_str());

    let (st, body) = rest(&addr, "GET", "/api/v1/health", k, None);
    assert_eq!((st, body), (200, json!({"databaseConnectivity": true})));

    let (st, u) = rest(&addr, "POST", "/api/v1/user", k, Some(r#"{"name":"alice","displayName":"Alice"}"#));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["user"]["id"], "1");
    assert_eq!(u["user"]["displayName"], "Alice");
    assert!(u["user"]["createdAt"].as_str().unwrap().ends_with('Z'), "{u}");

    let exp = "2099-01-01T00:00:00Z";
    let body = format!(r#"{{"user":"1","reusable":true,"expiration":"{exp}"}}"#);
    let (st, pk) = rest(&addr, "POST", "/api/v1/preauthkey", k, Some(&body));
    assert_eq!(st, 200, "{pk}");
    let auth = pk["preAuthKey"]["key"].as_str().unwrap().to_string();
    assert_eq!(pk["preAuthKey"]["aclTags"], json!([]));
    assert_eq!(pk["preAuthKey"]["user"]["name"], "alice");

    // A device joins with that key; REST lists it.
    let mut laptop = join(&addr, &auth, "laptop").await;
    let id = laptop.id().to_string();
    let (st, nodes) = rest(&addr, "GET", "/api/v1/node", k, None);
    assert_eq!(st, 200, "{nodes}");
    let n = &nodes["nodes"][0];
    assert_eq!(n["id"], id.as_str());
    assert_eq!(n["givenName"], "laptop");
    assert_eq!(n["registerMethod"], "REGISTER_METHOD_AUTH_KEY");
    assert_eq!(n["online"], true, "{n}");
    assert_eq!(n["user"]["name"], "alice");
    assert!(n["preAuthKey"]["key"].as_str().unwrap().ends_with("-***"), "{n}");
    assert!(n["ipAddresses"].as_array().is_some_and(|a| !a.is_empty()), "{n}");

    let (st, r) = rest(&addr, "POST", &format!("/api/v1/node/{id}/rename/desk"), k, None);
    assert_eq!((st, r["node"]["givenName"].clone()), (200, json!("desk")), "{r}");

    // Routes: the device announces, the script approves.
    let mut req = Client::map_request(&laptop.node, false);
    req["Hostinfo"] = json!({"Hostname": "laptop", "RoutableIPs": ["192.168.77.0/24"]});
    assert_eq!(laptop.client.lite(&req).await, 200);
    let body = r#"{"routes":["192.168.77.0/24"]}"#;
    let (st, r) = rest(&addr, "POST", &format!("/api/v1/node/{id}/approve_routes"), k, Some(body));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["node"]["approvedRoutes"], json!(["192.168.77.0/24"]));
    assert_eq!(r["node"]["availableRoutes"], json!(["192.168.77.0/24"]));

    // The policy: checked, refused with its place, set, read back.
    let bad =
        json!({"policy": "{\"acls\": [{\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}]}"});
    let (st, r) = rest(&addr, "POST", "/api/v1/policy/check", k, Some(&bad.to_string()));
    assert_eq!(st, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("line 1"), "{r}");
    let (st, r) = rest(&addr, "PUT", "/api/v1/policy", k, Some(&bad.to_string()));
    assert_eq!(st, 400, "{r}");
    let good = json!({"policy": "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}"});
    let (st, r) = rest(&addr, "PUT", "/api/v1/policy", k, Some(&good.to_string()));
    assert_eq!(st, 200, "{r}");
    assert_eq!(rest(&addr, "GET", "/api/v1/policy", k, None).1["policy"], good["policy"]);

    // Expire: the node's expiry is now.
    let (st, r) = rest(&addr, "POST", &format!("/api/v1/node/{id}/expire"), k, None);
    assert_eq!(st, 200, "{r}");
    assert!(r["node"]["expiry"].is_string(), "{r}");

    // Keys are listed by prefix only.
    let (_, keys) = rest(&addr, "GET", "/api/v1/apikey", k, None);
    let prefix = keys["apiKeys"][0]["prefix"].as_str().unwrap().to_string();
    assert!(prefix.ends_with("-***") && !keys.to_string().contains(&key[23..]), "{keys}");
    drop(s);
}

#[test]
fn no_key_a_wrong_key_and_an_expired_key_get_401_and_failures_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = s.host_port();
    let key = api_key(&d, &[]);
    let old = api_key(&d, &["-e", "1h"]);
    let old_prefix = &old[10..22];
    ok(&d, &["apikeys", "expire", "--prefix", old_prefix]);
    let listed = json(&d, &["apikeys", "list", "-o", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let wrong_secret = format!("{}{}", &key[..key.len() - 1], if key.ends_with('0') { '1' } else { '0' });
    let cases = [
        None,
        Some("Bearer".to_string()),
        Some(format!("Basic {key}")),
        Some("Bearer hskey-api-000000000000-".to_string() + &"0".repeat(64)),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("Bearer {old}")),
    ];
    for auth in &cases {
        let (st, body) = raw(&addr, "GET", "/api/v1/user", auth.as_deref(), "");
        assert_eq!(st, 401, "{auth:?}: {body}");
        assert!(body.contains("Unauthorized"), "{body}");
    }
    // A body is not read without a key: 3 MiB gets the same 401.
    let big = "x".repeat(3 << 20);
    assert_eq!(raw(&addr, "POST", "/api/v1/user", None, &big).0, 401);
    // Past ten failures a minute the source is told to wait; the valid key still works.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(raw(&addr, "GET", "/api/v1/node", None, "").0);
    }
    assert!(statuses.ends_with(&[429, 429]), "{statuses:?}");
    assert_eq!(rest(&addr, "GET", "/api/v1/node", Some(&key), None).0, 200);
    ok(&d, &["apikeys", "delete", "--prefix", old_prefix]);
    assert_eq!(json(&d, &["apikeys", "list", "-o", "json"]).as_array().unwrap().len(), 1);
    drop(s);
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut s = Server::start(&d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = s.host_port();
    let key = api_key(&d, &[]);
    let k = Some(key.as_str());
    ok(&d, &["users", "create", "alice"]);
    let nodekey = format!("nodekey:{}", "ab".repeat(32));
    ok(&d, &["debug", "create-node", "-u", "alice", "--name", "nas", "--key", &nodekey]);
    let before = (json(&d, &["users", "list", "-o", "json"]), json(&d, &["nodes", "list", "-o", "json"]));

    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(3 << 20));
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("POST", "/api/v1/user".into(), Some(r#"{"name":"#.into()), 400, "bad request body"),
        ("POST", "/api/v1/user".into(), Some(r#"{"name":"1erin"}"#.into()), 400, ""),
        ("POST", "/api/v1/user".into(), Some(big), 413, "over"),
        ("POST", "/api/v1/user".into(), Some(r#"{"name":"alice"}"#.into()), 409, "alice"),
        ("GET", "/api/v1/node/99".into(), None, 404, "99"),
        ("GET", "/api/v1/node/abc".into(), None, 400, "not a node id"),
        ("GET", "/api/v1/node/-1".into(), None, 400, ""),
        ("GET", "/api/v1/node/18446744073709551616".into(), None, 400, ""),
        ("DELETE", "/api/v1/user/1".into(), None, 409, ""),
        ("POST", "/api/v1/preauthkey/expire".into(), Some(r#"{"id":"x"}"#.into()), 400, "not an id"),
        ("POST", "/api/v1/preauthkey/expire".into(), Some(r#"{"id":"1"}"#.into()), 404, ""),
        ("POST", "/api/v1/node/1/approve_routes".into(), Some(r#"{"routes":["banana"]}"#.into()), 400, "banana"),
        ("POST", "/api/v1/node/1/approve_routes".into(), Some(r#"{"routes":["10.0.0.0/8"]}"#.into()), 400, "announce"),
        ("POST", "/api/v1/node/1/tags".into(), Some(r#"{"tags":["web"]}"#.into()), 400, "tag:"),
        ("POST", "/api/v1/node/1/rename/bad%20name".into(), None, 400, ""),
        (
            "POST",
            "/api/v1/node/1/expire".into(),
            Some(r#"{"expiry":"2030-01-01T00:00:00Z","disableExpiry":true}"#.into()),
            400,
            "not both",
        ),
        ("DELETE", "/api/v1/apikey/nope".into(), None, 404, ""),
        // Review 13: what a key holder could write to flash, and times clients cannot read.
        (
            "POST",
            "/api/v1/user".into(),
            Some(format!(r#"{{"name":"bob","displayName":"{}"}}"#, "x".repeat(300))),
            400,
            "over 256 bytes",
        ),
        (
            "POST",
            "/api/v1/node/1/tags".into(),
            Some(format!(r#"{{"tags":[{}]}}"#, (0..17).map(|i| format!("\"tag:t{i}\"")).collect::<Vec<_>>().join(","))),
            400,
            "at most 16 tags",
        ),
        (
            "POST",
            "/api/v1/node/1/expire".into(),
            Some(r#"{"expiry":"0000-01-01T00:00:00+01:00"}"#.into()),
            400,
            "RFC 3339",
        ),
        (
            "POST",
            "/api/v1/debug/node".into(),
            Some(format!(r#"{{"user":"alice","name":"{}","key":"nodekey:{}"}}"#, "h".repeat(300), "cd".repeat(32))),
            400,
            "hostname",
        ),
        ("POST", "/api/v1/apikey/expire".into(), Some("{}".into()), 400, "prefix or id"),
        ("GET", "/api/v1/../api/v1/user".into(), None, 404, ""),
        ("GET", "/api/v1/node/1%2F..%2F..%2Fuser".into(), None, 400, ""),
        ("DELETE", "/api/v1//user/1".into(), None, 404, ""),
        ("PATCH", "/api/v1/user".into(), None, 404, "no API route"),
        ("POST", "/api/v1/node/backfillips".into(), None, 501, "nothing to backfill"),
        ("POST", "/api/v1/auth/register".into(), Some(r#"{"authId":"nope","user":"alice"}"#.into()), 404, "waiting"),
        ("POST", "/api/v1/auth/reject".into(), Some(r#"{"authId":"nope"}"#.into()), 404, "waiting"),
    ];
    for (method, path, body, want, says) in &cases {
        let (st, r) = rest(&addr, method, path, k, body.as_deref());
        assert_eq!(st, *want, "{method} {path}: {r}");
        let msg = r["message"].as_str().unwrap_or_else(|| panic!("{method} {path}: no message: {r}"));
        assert!(msg.contains(says), "{method} {path}: {msg}");
    }
    s.assert_alive();
    let after = (json(&d, &["users", "list", "-o", "json"]), json(&d, &["nodes", "list", "-o", "json"]));
    assert_eq!(before, after, "bad input changed something");
}
