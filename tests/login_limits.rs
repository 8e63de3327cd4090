//! Logins anyone can start without a key, against the real binary: floods
//! of keyless registrations and of OIDC logins must not push a real device's
//! login out, a pending login keeps little of what it was sent, and nothing
//! a stranger sends can flush the log.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::attack::*;
use common::client::{self, Client};
use common::*;

#[tokio::test]
async fn keyless_registrations_do_not_evict_a_waiting_device() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\n");
    let d = dir.path().to_path_buf();
    let addr = s.host_port();
    ok(&d, &["users", "create", "alice"]);
    let server = client::server_key(&addr).await;
    // A real device waits for `auth register`.
    let (mut real, follow) = keyless_device(&addr, server, local(0, 1)).await;
    let id = follow["Followup"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let waiting = tokio::spawn(async move { real.register(&follow).await });
    // 140 keyless registrations from one address, each with a machine key of its own.
    let t = Instant::now();
    let (mut opened, mut refused) = (0, 0);
    for i in 0..140u32 {
        tokio::time::sleep_until((t + Duration::from_millis(45) * i).into()).await;
        if opens_a_login(&addr, server, local(4, 1)).await {
            opened += 1;
        } else {
            refused += 1;
        }
    }
    // And 200 more from 25 other addresses, 8 each: enough to fill every place.
    for i in 0..200u32 {
        let from = local(5, 1 + (i / 8) as u8);
        if opens_a_login(&addr, server, from).await {
            opened += 1;
        } else {
            refused += 1;
        }
    }
    let pending = json(&d, &["auth", "pending", "-o", "json"]);
    let pending = pending.as_array().unwrap();
    eprintln!("340 keyless registrations: {opened} opened a login, {refused} refused; {} waiting now", pending.len());
    assert!(pending.len() <= 128);
    assert!(pending.iter().any(|p| p["auth_id"] == id.as_str()), "the real device's login was evicted");
    // The admin approves the real device, and its waiting client hears so.
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || ok(&d2, &["auth", "register", "--auth-id", &id, "--user", "alice"]))
        .await
        .unwrap();
    let (status, r) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["MachineAuthorized"], true, "{r}");
}

#[cfg(feature = "oidc")]
#[tokio::test]
async fn a_flood_of_oidc_logins_does_not_cancel_another_browsers() {
    use common::idp::{self, confirm_form, Browser};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let oidc = "  only_start_if_oidc_is_available: true\n  scope: [\"openid\", \"profile\", \"email\", \"custom\"]\n  extra_params:\n    login_hint: alice\n  allowed_groups:\n    - /headscale\n";
    let (_provider, s, url) = idp::server_with_provider(&d, &[("ALG", "RS256")], "", oidc);
    let addr = s.host_port();
    let server = client::server_key(&addr).await;

    // A real device asks to join; its owner's browser starts the login.
    let (mut real, follow) = keyless_device(&addr, server, local(0, 1)).await;
    let login_url = follow["Followup"].as_str().unwrap().to_string();
    let waiting = tokio::spawn(async move { real.register(&follow).await });
    // The browser (curl) blocks this test's thread for its requests; it
    // talks only to the server and the provider, never to tasks here.
    let b = Browser::new(&d);
    let start = b.get_once(&login_url);
    assert_eq!(start.status, 302, "{}", start.body);

    // From another address: 8 devices of its own, then 300 logins for them
    // on one keep-alive connection.
    let attacker = local(6, 1);
    let mut ids = Vec::new();
    let mut held = Vec::new();
    for _ in 0..8 {
        let (c, f) = keyless_device(&addr, server, attacker).await;
        ids.push(f["Followup"].as_str().unwrap().rsplit('/').next().unwrap().to_string());
        held.push(c);
    }
    let mut sock = client::tcp_from(&addr, Some(attacker)).await.unwrap();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let req = format!("GET /register/{} HTTP/1.1\r\nHost: x\r\n\r\n", ids[i % ids.len()]);
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(sock.read(&mut byte).await.unwrap(), 1, "the connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).await.unwrap();
        *statuses.entry(head.split_whitespace().nth(1).unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    eprintln!("300 logins started from one address: {statuses:?}");

    // The real browser finishes its login, confirms, and the device joins.
    let page = b.get(&start.location);
    assert_eq!(page.status, 200, "the real login was cancelled: {}", page.body);
    let (action, csrf) = confirm_form(&page.body);
    let done = b.post(&format!("{url}{action}"), &format!("csrf={csrf}"));
    assert!(done.body.contains("Device added"), "{}", done.body);
    let (status, r) = tokio::time::timeout(Duration::from_secs(15), waiting).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["MachineAuthorized"], true, "{r}");
}

/// Review finding 8: pending logins kept the Hostinfo and Hostname at full
/// size: 16 addresses × 8 keyless registrations with a 60 KB Hostname grew
/// RSS by 16 MiB, for 15 minutes.
#[tokio::test]
async fn pending_logins_keep_little_of_a_huge_hostname() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let pid = s.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut opened = 0;
    for a in 1..=16u8 {
        for _ in 0..8 {
            let mut c = Client::connect_from(&addr, server, client::random32(), local(14, a)).await.unwrap();
            let mut req = Client::register_request(&client::random32(), "", "x");
            req["Hostinfo"]["Hostname"] = json!("h".repeat(60_000));
            let (status, v) = c.register(&req).await;
            opened += (status == 200 && v["AuthURL"].as_str().is_some_and(|u| !u.is_empty())) as usize;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let pending = json(dir.path(), &["auth", "pending", "-o", "json"]);
    let longest = pending.as_array().unwrap().iter().map(|p| p["hostname"].as_str().unwrap().len()).max();
    eprintln!(
        "{opened} keyless logins pending, longest hostname kept {longest:?} bytes: server RSS {before} KiB -> {after} KiB (+{} KiB)",
        after.saturating_sub(before)
    );
    assert!(longest.is_some_and(|n| n <= 255), "a pending login keeps a hostname of {longest:?} bytes");
}

/// Review finding 11: `/oidc/callback?error=` logged up to 32 KiB of the
/// caller's text at info for every request, and every keyless registration
/// logged a line: one request flushed OpenWrt's 64 KiB log buffer.
#[cfg(feature = "oidc")]
#[tokio::test]
async fn requests_without_a_key_cannot_flush_the_log() {
    use common::idp;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_provider, s, _url) = idp::server_with_provider(d, &[], "", "  only_start_if_oidc_is_available: true\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = s.log().len();
    for _ in 0..4 {
        let req = format!(
            "GET /oidc/callback?error={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "A".repeat(30 * 1024)
        );
        assert_eq!(client::http1_from(&addr, Some(local(15, 1)), &req).await.0, 403);
    }
    for _ in 0..20 {
        let mut c = Client::connect_from(&addr, server, client::random32(), local(15, 2)).await.unwrap();
        let req = Client::register_request(&client::random32(), "", "laptop");
        assert_eq!(c.register(&req).await.0, 200);
        let bad = Client::register_request(&client::random32(), "not-a-key", "laptop");
        let (status, r) = c.register(&bad).await;
        assert!(status == 200 && r["Error"].as_str().is_some_and(|e| !e.is_empty()), "{status} {r}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = s.log().len() - before;
    eprintln!("4 callbacks with 30 KiB of error text and 40 keyless registrations: the log grew by {grown} bytes");
    let log = s.log();
    assert!(grown <= 4096, "the log grew by {grown} bytes:\n{}", log[before..].chars().take(2000).collect::<String>());
}

/// A machine without a node asks to join from `from`: was it given a login URL?
async fn opens_a_login(addr: &str, server: tinyscale::tailcfg::MachinePublic, from: std::net::IpAddr) -> bool {
    let mut c = Client::connect_from(addr, server, client::random32(), from).await.unwrap();
    let node = client::random32();
    let (status, r) = c.register(&json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node)})).await;
    status == 200 && r["AuthURL"].is_string()
}
