//! What reaches the log, the admin's terminal and the browser, with the real
//! binary: `log.format: json`, text from outside escaped in every log line
//! and CLI table, and the hardening headers of the HTML pages.

mod common;

use serde_json::{json, Value};

use common::client::{self, Client};
use common::*;

/// The value of header `name` in an HTTP response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A page no other site may frame, load into or script.
fn assert_hardened(head: &str) {
    assert_eq!(header(head, "x-frame-options"), Some("DENY"), "{head}");
    assert_eq!(header(head, "x-content-type-options"), Some("nosniff"), "{head}");
    assert_eq!(header(head, "referrer-policy"), Some("no-referrer"), "{head}");
    let csp = header(head, "content-security-policy").unwrap_or_else(|| panic!("no CSP:\n{head}"));
    for part in ["default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"), "{csp}");
}

#[tokio::test]
async fn log_format_json_writes_every_record_as_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // logtail.enabled draws a config warning: it too must come out as JSON.
    std::fs::write(
        d.join("config.yaml"),
        "server_url: http://127.0.0.1:8080\nlog:\n  level: debug\n  format: json\nlogtail:\n  enabled: true\n",
    )
    .unwrap();
    let s = Server::start(d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = s.host_port();
    assert_eq!(http_get(&addr, "/health").0, 200);
    // A bad upgrade is logged at debug level.
    let (status, _) = client::http1(
        &addr,
        "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: bm90IGEgaGFuZHNoYWtl\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    ok(d, &["users", "create", "alice"]);
    assert!(s.wait_log("malformed X-Tailscale-Handshake"), "{}", s.log());
    let (status, log) = s.terminate();
    assert!(status.success(), "{log}");

    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l:?}\n{log}")))
        .collect();
    for r in &records {
        let time = r["time"].as_str().unwrap_or_else(|| panic!("no time: {r}"));
        assert!(time.len() == 20 && time.ends_with('Z'), "{r}");
        assert!(["error", "warn", "info", "debug", "trace"].contains(&r["level"].as_str().unwrap_or("")), "{r}");
        assert!(r["target"].is_string() && r["msg"].is_string(), "{r}");
        assert_eq!(r.as_object().unwrap().len(), 4, "{r}");
    }
    let msgs: Vec<&str> = records.iter().map(|r| r["msg"].as_str().unwrap()).collect();
    for want in ["config: ", "listening on http://127.0.0.1:", "ts2021: missing or malformed", "store flushed; bye"] {
        assert!(msgs.iter().any(|m| m.contains(want)), "no record says {want:?}:\n{log}");
    }
    assert!(records.iter().any(|r| r["level"] == "warn" && r["msg"].as_str().unwrap().contains("logtail")), "{log}");
}

/// A device asks to join without a key; returns its auth id.
async fn pending_device(addr: &str, hostname: &str) -> String {
    let server = client::server_key(addr).await;
    let mut c = Client::connect(addr, server, client::random32()).await.unwrap();
    let node = client::random32();
    let req = json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node), "Hostinfo": {"Hostname": hostname}});
    let (status, r) = c.register(&req).await;
    assert_eq!(status, 200, "{r}");
    let url = r["AuthURL"].as_str().expect("an AuthURL");
    url.rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn a_hostname_from_a_keyless_device_reaches_the_admin_escaped_and_its_page_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = Server::start_free(d);
    let addr = s.host_port();
    // Clears the screen, then a forged row; the bell; a right-to-left override.
    let evil = "laptop\u{1b}[2J\u{1b}[31m\nabc123 | router | 1s\u{7}\u{202e}";
    let id = pending_device(&addr, evil).await;

    let table = ok(d, &["auth", "pending"]);
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters reach the terminal: {table:?}"
    );
    assert_eq!(table.lines().count(), 2, "a forged row:\n{table}");
    assert!(table.contains("laptop\\u{1b}[2J\\u{1b}[31m\\nabc123 | router | 1s\\u{7}\\u{202e}"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(&id), "{table}");
    // The machine formats carry the hostname exactly.
    assert_eq!(json(d, &["auth", "pending", "-o", "json"])[0]["hostname"], evil);

    // /register/<id>: the page that tells the admin what to run.
    let (status, text) =
        client::http1(&addr, &format!("GET /register/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(body.contains(&format!("tinyscale auth register --auth-id {id}")), "{body}");
    assert_hardened(head);
}

#[cfg(feature = "oidc")]
mod oidc {
    use super::*;
    use std::path::Path;

    use common::idp::{self, Browser, Idp};

    fn start_with_provider(d: &Path) -> (Idp, Server, String) {
        idp::server_with_provider(d, &[], "log:\n  level: debug\n", "  extra_params:\n    login_hint: alice\n")
    }

    /// `/oidc/callback?error=` is reachable by anyone, and its text is logged (at debug).
    #[test]
    fn a_newline_in_a_callback_error_does_not_forge_a_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let (_idp, s, _) = start_with_provider(dir.path());
        let forged = "1970-01-01T00:00:00Z INFO  oidc: FORGED admin approved every device";
        let query = format!("error=denied%0a{}%0d%1b[2J%e2%80%a8", forged.replace(' ', "%20"));
        let (status, page) = http_get(&s.host_port(), &format!("/oidc/callback?{query}"));
        assert_eq!(status, 403, "{page}");
        assert!(s.wait_log("FORGED"), "the refusal was not logged:\n{}", s.log());
        let log = s.log();
        for line in log.lines().filter(|l| l.contains("FORGED")) {
            assert!(
                line.contains("refused a login: denied\\n1970-01-01T00:00:00Z INFO  oidc: FORGED"),
                "a forged log line: {line:?}\n{log}"
            );
            assert!(!line.chars().any(char::is_control) && !line.contains('\u{2028}'), "{line:?}");
        }
        assert!(!log.lines().any(|l| l.starts_with("1970-01-01T00:00:00Z INFO  oidc: FORGED")), "{log}");
    }

    #[test]
    fn the_confirmation_page_cannot_be_framed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (_idp, s, url) = start_with_provider(d);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let id = rt.block_on(pending_device(&s.host_port(), "laptop"));
        let b = Browser::new(d);
        let callback = b.walk_until(&format!("{url}/register/{id}"), &format!("{url}/oidc/callback"));
        let (head, body) = b.get_with_head(&callback);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        assert!(body.contains("Add this device to the tailnet?"), "{body}");
        assert_hardened(&head);
        // The page's own style is allowed, by its hash: nothing else inline is.
        let csp = header(&head, "content-security-policy").unwrap();
        let style = body.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).expect("a style");
        let hash = ring::digest::digest(&ring::digest::SHA256, style.as_bytes());
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, hash.as_ref());
        assert!(csp.contains(&format!("style-src 'sha256-{b64}'")), "the browser would drop the style: {csp}");
        // Refusals are pages too.
        let (head, _) = b.get_with_head(&format!("{url}/oidc/callback?state=nothing&code=x"));
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert_hardened(&head);
    }
}
