//! `tinyscale serve` and the admin CLI, as processes.

mod common;

use common::*;

#[test]
fn serve_with_no_config_answers_health_on_the_embedded_default_port() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[], &[]);
    assert_eq!(s.addr, "http://127.0.0.1:8080");
    let (status, body) = http_get("127.0.0.1:8080", "/health");
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"status":"pass"}"#);
    assert!(s.wait_log("tinyscale users create alice"), "the server says how to add a user:\n{}", s.log());
    assert!(dir.path().join("tinyscale-data/tinyscale.sock").exists());
    let key = std::fs::read_to_string(dir.path().join("tinyscale-data/noise_private.key")).unwrap();
    assert!(key.starts_with("privkey:"));
}

#[test]
fn users_and_keys_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = Server::start_free(d);
    ok(d, &["users", "create", "alice"]);
    let key = json(d, &["preauthkeys", "create", "--user", "alice", "--reusable", "--expiration", "1h", "-o", "json"]);
    let full = key["key"].as_str().unwrap().to_string();
    assert!(full.starts_with("tskey-auth-"), "{key}");
    assert_eq!(key["reusable"], true);
    assert_eq!(key["user"]["name"], "alice");
    let users = json(d, &["users", "list", "-o", "json"]);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["name"], "alice");
    let (status, _) = http_get(&s.host_port(), "/health");
    assert_eq!(status, 200);

    s.kill9();
    let s = Server::start_free(d);
    let again = json(d, &["users", "list", "-o", "json"]);
    assert_eq!(again, users, "users after kill -9 and restart");
    let keys = json(d, &["preauthkeys", "list", "-o", "json"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let prefix = full.trim_start_matches("tskey-auth-").split('-').next().unwrap();
    assert_eq!(keys[0]["key"], format!("tskey-auth-{prefix}-***"));
    assert_eq!(keys[0]["expired"], false);
    assert_eq!(keys[0]["reusable"], true);
    assert_eq!(keys[0]["expiration"], key["expiration"]);
    // The same key text still names it, so it can still be expired by value.
    ok(d, &["preauthkeys", "expire", &full]);
    assert_eq!(json(d, &["preauthkeys", "list", "-o", "json"])[0]["expired"], true);
    drop(s);
}

#[test]
fn node_verbs_and_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _s = Server::start_free(d);
    ok(d, &["users", "create", "bob"]);
    let key = format!("nodekey:{}", "0f".repeat(32));
    let n = json(d, &["debug", "create-node", "--user", "bob", "--name", "Bob's Phone", "--key", &key, "-o", "json"]);
    for field in ["id", "name", "given_name", "ip_addresses", "online", "user", "last_seen", "expiry"] {
        assert!(n.get(field).is_some(), "node JSON lacks {field}: {n}");
    }
    assert_eq!(n["given_name"], "bobs-phone");
    assert_eq!(n["user"]["name"], "bob");
    assert_eq!(n["online"], false);
    let id = n["id"].to_string();
    let list = json(d, &["nodes", "list", "-o", "json"]);
    assert!(list.is_array() && list[0]["ip_addresses"][0] == "100.64.0.1", "{list}");
    ok(d, &["nodes", "rename", "-i", &id, "phone"]);
    ok(d, &["nodes", "expire", "-i", &id]);
    let list = json(d, &["nodes", "list", "-o", "json"]);
    assert_eq!(list[0]["given_name"], "phone");
    assert!(list[0]["expiry"].is_string());
    // Deleting without --force off a terminal is refused; with it, done.
    let o = run(d, &["nodes", "delete", "-i", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"));
    ok(d, &["nodes", "delete", "-i", &id, "--force"]);
    assert_eq!(json(d, &["nodes", "list", "-o", "json"]), serde_json::json!([]));
    // YAML output is the same data.
    let y = ok(d, &["users", "list", "-o", "yaml"]);
    assert!(y.contains("name: bob"), "{y}");
}

#[test]
fn bad_flags_and_unknown_users_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Without a server the CLI says so.
    let o = run(d, &["users", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no tinyscale server is running"), "{}", stderr(&o));

    let _s = Server::start_free(d);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["preauthkeys", "create", "--user", "nobody"], 1, "no user \"nobody\""),
        (&["preauthkeys", "create"], 2, "--user"),
        (&["preauthkeys", "create", "--user", "x", "--expiration", "soon"], 2, "--expiration"),
        (&["users", "create"], 2, "usage"),
        (&["users", "create", "1erin"], 1, "must start with a letter"),
        (&["users", "destroy", "--name", "ghost", "--force"], 1, "no such user"),
        (&["users", "list", "--frobnicate"], 2, "unknown flag --frobnicate"),
        (&["users", "list", "-o", "xml"], 2, "unknown output format"),
        (&["nodes", "rename", "-i", "abc", "x"], 2, "not a node id"),
        (&["nodes", "expire", "-i", "99"], 1, "no node with id 99"),
        (&["preauthkeys", "expire", "--id", "42"], 1, "no pre-auth key with id 42"),
        (&["frobnicate"], 2, "unknown command"),
        (&["users"], 2, "needs a verb"),
        (&[], 2, "no command"),
    ];
    for (args, code, msg) in cases {
        let o = run(d, args);
        assert_eq!(o.status.code(), Some(*code), "tinyscale {args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "tinyscale {args:?} should say {msg:?}:\n{}", stderr(&o));
        if args.contains(&"-o") || args.contains(&"json") {
            assert!(stdout(&o).is_empty());
        }
    }
    // A user with nodes cannot be destroyed; its refusal names the reason.
    ok(d, &["users", "create", "carol"]);
    ok(d, &["debug", "create-node", "-u", "carol", "--name", "c", "--key", &format!("nodekey:{}", "11".repeat(32))]);
    let o = run(d, &["users", "destroy", "--name", "carol", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("still owns 1 node"), "{}", stderr(&o));
}

#[test]
fn sigterm_shuts_down_cleanly_and_a_second_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = Server::start_free(d);
    ok(d, &["users", "create", "dave"]);
    let o = cmd(d).args(["serve"]).env("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    let (status, log) = s.terminate();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains("store flushed"), "{log}");
    assert!(!d.join("tinyscale-data/tinyscale.sock").exists(), "the socket is removed at exit");
    let _s = Server::start_free(d);
    assert_eq!(json(d, &["users", "list", "-o", "json"])[0]["name"], "dave");
}

#[test]
fn socket_permission_and_config_file_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("config.yaml"),
        "listen_addr: 127.0.0.1:0\nunix_socket: ./run/ts.sock\nunix_socket_permission: \"0700\"\ndatabase:\n  sled:\n    path: ./state/db\nnoise:\n  private_key_path: ./state/noise.key\n",
    )
    .unwrap();
    let s = Server::start(d, &[], &[]);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(d.join("run/ts.sock")).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(d.join("state/noise.key").exists() && d.join("state/db").exists());
    // The CLI in the same folder finds ./config.yaml and through it the socket.
    ok(d, &["users", "create", "erin"]);
    // And from elsewhere with -c.
    let other = tempfile::tempdir().unwrap();
    let cfg = d.join("config.yaml");
    let users = json(other.path(), &["-c", cfg.to_str().unwrap(), "users", "list", "-o", "json"]);
    assert_eq!(users[0]["name"], "erin");
    drop(s);
}

#[test]
fn https_when_a_certificate_is_configured() {
    require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    self_signed_cert(d);
    std::fs::write(
        d.join("config.yaml"),
        "listen_addr: 127.0.0.1:0\nserver_url: https://localhost\ntls_cert_path: cert.pem\ntls_key_path: key.pem\n",
    )
    .unwrap();
    let s = Server::start(d, &[], &[]);
    assert!(s.addr.starts_with("https://"), "{}", s.addr);
    let port = s.host_port().rsplit(':').next().unwrap().to_string();
    let o = std::process::Command::new("curl")
        .args(["-sS", "--cacert", "cert.pem", "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/health"))
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), r#"{"status":"pass"}"#, "{}", String::from_utf8_lossy(&o.stderr));
    // A broken key file is a clear start-up error, not a panic.
    std::fs::write(d.join("key.pem"), "not a key").unwrap();
    drop(s);
    let o = cmd(d).arg("serve").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("private key"), "{}", stderr(&o));
}

/// The router builds abort on a panic without printing anything: the harness
/// must still see the crash. A real server is sent the signal such an abort
/// raises (SIGILL on MIPS and ARM, SIGTRAP on some), and a CLI-like process too.
#[test]
fn a_silent_abort_is_seen_as_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_free(dir.path());
    s.assert_alive();
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-ILL", &pid]).status().unwrap().success());
    common::wait_timeout(&mut s.child, std::time::Duration::from_secs(10)).expect("the server did not die");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.assert_alive()));
    assert!(caught.is_err(), "a server killed by SIGILL was not reported");
    // Reported, and the Drop check must not fire again.
    std::mem::forget(s);

    let trap = std::process::Command::new("sh").args(["-c", "kill -TRAP $$"]).output().unwrap();
    assert!(crashed(trap.status, ""), "SIGTRAP is a crash");
    let clean = std::process::Command::new("sh").args(["-c", "exit 1"]).output().unwrap();
    assert!(!crashed(clean.status, "Error: no such user"), "an error exit is not a crash");
}
