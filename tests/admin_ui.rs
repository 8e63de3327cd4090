//! The admin web UI in a real browser (Debian's chromium, headless, through
//! puppeteer-core; tests/browser/drive.mjs), against the real binary, the
//! real OpenID provider and, in the last test, real Tailscale clients.
//! Screenshots of every page land in target/screenshots/ for a person.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::Chromium;
use common::idp;
use common::*;

/// `alice` signs in as admin (she is in `admins`), everyone else does not.
const ADMIN: &str = "admin:\n  allowed_groups: [admins]\n";

#[test]
fn without_a_provider_an_api_key_signs_in_and_every_page_works_on_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.yaml"), "policy:\n  mode: database\n").unwrap();
    let s = Server::start(d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let url = format!("http://{}", s.host_port());
    ok(d, &["users", "create", "alice"]);
    let nodekey = format!("nodekey:{}", "ab".repeat(32));
    ok(d, &["debug", "create-node", "-u", "alice", "--name", "nas", "--key", &nodekey]);
    let key = json(d, &["apikeys", "create", "-o", "json"]).as_str().unwrap().to_string();

    let mut b = Chromium::start(std::process::Command::new("node"), "apikey");
    let (status, _) = b.goto(&format!("{url}/admin"));
    assert_eq!(status, 200);
    assert!(b.html().contains("Sign in with an API key"));
    b.screenshot("login");
    b.set("input[name=key]", "hskey-api-000000000000-0000");
    let (status, _) = b.click("form[action='/admin/login'] button");
    assert_eq!(status, 401);
    assert!(!b.cookies().contains(&"ts_admin".to_string()), "a wrong key got a session");
    b.set("input[name=key]", &key);
    let (status, at) = b.click("form[action='/admin/login'] button");
    assert_eq!((status, at.as_str()), (200, format!("{url}/admin").as_str()));
    let html = b.html();
    assert!(html.contains("<b class=\"name\">nas</b>") || html.contains("<b class=name>nas</b>"), "{html}");
    b.screenshot("devices");

    for (page, name, want) in [
        ("/admin/pending", "pending", "No device is waiting"),
        ("/admin/users", "users", "alice"),
        ("/admin/keys", "keys", "New pre-auth key"),
        ("/admin/policy", "policy", "textarea"),
        ("/admin/apikeys", "apikeys", "hskey-api-"),
        ("/admin/status", "status", "Memory (RSS)"),
    ] {
        let (status, _) = b.goto(&format!("{url}{page}"));
        assert_eq!(status, 200, "{page}");
        assert!(b.html().contains(want), "{page} lacks {want:?}");
        assert!(b.width() <= 360, "{page} is wider than a phone: {} px", b.width());
        b.screenshot(name);
    }

    // The policy editor: an error names its line and keeps the old policy.
    b.goto(&format!("{url}/admin/policy"));
    b.set(
        "textarea[name=policy]",
        "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}\n  ]\n}\n",
    );
    let (status, _) = b.click("button[value=policy_set]");
    assert_eq!(status, 400);
    assert!(b.html().contains("line 3"), "the error does not name its line");
    b.screenshot("policy-error");
    assert!(run(d, &["policy", "get"]).status.code() != Some(0), "a refused policy was stored");
    b.set("textarea[name=policy]", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}");
    let (status, _) = b.click("button[value=policy_set]");
    assert_eq!(status, 200);
    assert!(ok(d, &["policy", "get"]).contains("accept"));

    // A user, from the form.
    b.goto(&format!("{url}/admin/users"));
    b.set("form:has(input[value=user_create]) input[name=name]", "grandma");
    let (status, at) = b.click("form:has(input[value=user_create]) button");
    assert_eq!(status, 200, "{at}");
    assert!(b.html().contains("User grandma created"));
    assert!(ok(d, &["users", "list"]).contains("grandma"));

    // What anyone may send is small: a sign-in form past 4 KiB is refused unread.
    let big = format!("key={}", "a".repeat(5000));
    let r = raw_request(
        &s.host_port(),
        &format!("POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}", big.len()),
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");

    // A POST without the session's token changes nothing.
    let status = b.eval(
        "fetch('/admin/do',{method:'POST',headers:{'Content-Type':'application/x-www-form-urlencoded'},body:'op=user_delete&id=1'}).then(r=>r.status)",
    );
    assert_eq!(status, 403);
    assert!(ok(d, &["users", "list"]).contains("alice"), "a forged POST deleted a user");

    // A link cannot make the UI say anything: messages live in the session.
    b.goto(&format!("{url}/admin/users?error=Paste%20your%20API%20key%20at%20evil.example"));
    assert!(!b.html().contains("evil.example"), "a query string wrote into the page");

    // Sign out ends the session.
    let (status, _) = b.click("form[action='/admin/logout'] button");
    assert_eq!(status, 200);
    let (status, _) = b.goto(&format!("{url}/admin/users"));
    assert_eq!(status, 200);
    assert!(b.html().contains("Sign in with an API key"), "still signed in after signing out");

    // A session an API key started ends when the key is deleted.
    let second = json(d, &["apikeys", "create", "-o", "json"]).as_str().unwrap().to_string();
    b.set("input[name=key]", &second);
    let (status, _) = b.click("form[action='/admin/login'] button");
    assert_eq!(status, 200);
    assert!(b.html().contains("Sign out"));
    ok(d, &["apikeys", "delete", "--prefix", &second[10..22]]);
    b.goto(&format!("{url}/admin/users"));
    assert!(b.html().contains("Sign in with an API key"), "a deleted key's session lived on");
    drop(s);
}

#[test]
fn a_non_admin_is_refused_with_403_and_no_session_and_forged_cookies_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let oidc = "  extra_params:\n    login_hint: dave\n  allowed_groups: [/headscale, headscale]\n";
    let (_idp, s, url) = idp::server_with_provider(d, &[], ADMIN, oidc);
    let mut b = Chromium::start(std::process::Command::new("node"), "dave");
    let (status, at) = b.goto(&format!("{url}/admin"));
    assert_eq!(status, 403, "{at}");
    assert!(at.starts_with(&format!("{url}/oidc/callback")), "{at}");
    assert!(b.html().contains("not an administrator"), "{}", b.html());
    assert!(!b.cookies().contains(&"ts_admin".to_string()), "dave got a session");
    assert!(b.width() <= 360, "the refusal page is wider than a phone");
    b.screenshot("refused");
    assert!(s.log().contains("admin login refused"), "{}", s.log());

    // Starting admin logins keeps nothing on the server: a flood of them
    // never turns device logins or other admins away (review 13).
    let host = s.host_port();
    for _ in 0..300 {
        let r = raw_request(&host, "GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    }
    // With a provider, an API key signs no one in.
    let body = "key=hskey-api-000000000000-0000";
    let r = raw_request(
        &host,
        &format!("POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");

    // A forged admin-login state (no MAC of ours) is refused before the provider is asked.
    let forged_state = format!("adm-{:016x}-{}", 1, "0".repeat(32));
    let cb = raw_request(
        &host,
        &format!("GET /oidc/callback?state={forged_state}&code=x HTTP/1.1\r\nHost: x\r\nCookie: ts_state_adm000={forged_state}; ts_admin_nonce=n\r\nConnection: close\r\n\r\n"),
    );
    assert!(cb.starts_with("HTTP/1.1 410"), "{cb}");

    // A forged session cookie is no session.
    let forged = format!("ts_admin={}", "ab".repeat(32));
    let live = raw_request(
        &host,
        &format!("GET /admin/live HTTP/1.1\r\nHost: x\r\nCookie: {forged}\r\nConnection: close\r\n\r\n"),
    );
    assert!(live.starts_with("HTTP/1.1 401"), "{live}");
    let body = "csrf=x&op=user_create&name=mallory";
    let post = raw_request(
        &host,
        &format!("POST /admin/do HTTP/1.1\r\nHost: x\r\nCookie: {forged}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    );
    assert!(post.starts_with("HTTP/1.1 403"), "{post}");
    assert!(!ok(d, &["users", "list"]).contains("mallory"));
}

fn raw_request(host: &str, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The acceptance walk: alice signs in through the provider, sees a real
/// client online, renames it, approves a second real client at its login
/// URL, makes a key a third one joins with, and a POST without the token
/// is refused. Needs root (network namespaces) and the real client.
#[test]
fn alice_runs_the_tailnet_from_a_real_browser_with_real_clients() {
    use common::netns::Netns;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new();
    let (_idp, url) = idp::in_namespace(&ns, d, ADMIN, "alice");
    let _server = ns.serve(d);
    ok(d, &["users", "create", "alice"]);
    let k = json(d, &["preauthkeys", "create", "--user", "alice", "-o", "json"])["key"].as_str().unwrap().to_string();
    let a = ns.start_node("laptop", url, Some(&k), &d.join("a"));
    assert!(a.wait_running(60), "the first client never reached Running");
    wait_online(d, "laptop", 30);

    let mut b = Chromium::start(ns.command("node"), "alice");
    let (status, at) = b.goto(&format!("{url}/admin"));
    assert_eq!((status, at.as_str()), (200, format!("{url}/admin").as_str()), "{}", b.html());
    let html = b.html();
    assert!(html.contains("laptop") && html.contains("id=\"online-1\""), "{html}");
    assert!(b.eval("document.getElementById('online-1').textContent").as_str() == Some("online"), "{html}");
    b.screenshot("devices");

    // Rename.
    b.set("#node-1 form:has(input[value=rename]) input[name=name]", "alices-laptop");
    let (status, _) = b.click("#node-1 form:has(input[value=rename]) button");
    assert_eq!(status, 200);
    assert!(b.html().contains("Renamed to alices-laptop"));
    assert_eq!(json(d, &["nodes", "list", "-o", "json"])[0]["given_name"], "alices-laptop");

    // A second client waits at its login URL; alice approves it there.
    let c2 = ns.start_node("tablet", url, None, &d.join("b"));
    let prefix = format!("{url}/register/");
    assert!(c2.wait_log(30, |l| l.contains(&prefix)), "no AuthURL from the second client");
    let log = c2.log();
    let at = log.find(&prefix).unwrap();
    let auth_url: String =
        log[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || ":/._-".contains(*c)).collect();
    let (status, _) = b.goto(&auth_url);
    assert_eq!(status, 200);
    assert!(b.html().contains("Approve for user"), "{}", b.html());
    assert!(b.width() <= 360, "the register page is wider than a phone");
    b.screenshot("register");
    b.set("form:has(input[value=approve]) select[name=user]", "1");
    let (status, _) = b.click("form:has(input[value=approve]) button");
    assert_eq!(status, 200);
    assert!(c2.wait_running(60), "the approved client never reached Running");

    // A key made in the browser; a third client joins with it.
    b.goto(&format!("{url}/admin/keys"));
    b.screenshot("keys");
    let (status, _) = b.click("form:has(input[value=key_create]) button");
    assert_eq!(status, 200);
    let cmd = b.eval("document.getElementById('cmd').textContent");
    let cmd = cmd.as_str().unwrap();
    b.screenshot("new-key");
    let key = cmd.rsplit(' ').next().unwrap();
    assert!(cmd.starts_with(&format!("tailscale up --login-server {url} --authkey ")), "{cmd}");
    let c3 = ns.start_node("phone", url, Some(key), &d.join("c"));
    assert!(c3.wait_running(60), "the third client never joined with the browser's key");

    // A POST without the token is refused and changes nothing.
    let status = b.eval(
        "fetch('/admin/do',{method:'POST',headers:{'Content-Type':'application/x-www-form-urlencoded'},body:'op=delete&id=1'}).then(r=>r.status)",
    );
    assert_eq!(status, 403);
    assert_eq!(json(d, &["nodes", "list", "-o", "json"]).as_array().unwrap().len(), 3);
    b.goto(&format!("{url}/admin"));
    b.screenshot("devices-after");
    for c in [a, c2, c3] {
        c.stop();
    }
}

fn wait_online(d: &Path, name: &str, secs: u64) {
    let start = Instant::now();
    loop {
        let list = json(d, &["nodes", "list", "-o", "json"]);
        if list.as_array().unwrap().iter().any(|n| n["given_name"] == name && n["online"] == true) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "{name} never came online: {list}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
