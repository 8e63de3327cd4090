//! The attacks anyone on the internet can try without a key, against the
//! real binary: unfinished request bodies, silent connections holding every
//! slot, one address taking all of them, floods of logins that would push a
//! real device's out, and DERP clients that never prove their key. Each test
//! fails on the code before the limits (checked against that binary with
//! TINYSCALE_TEST_BIN) and prints the figures it is about.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use common::client::{self, Client};
use common::*;

/// 127.0.0.n: on loopback every one is a source address of its own.
fn local(a: u8, b: u8) -> IpAddr {
    IpAddr::from([127, 0, a, b])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

fn start(config: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let s = Server::start(dir.path(), &[], &[]);
    (dir, s)
}

fn reusable_key(d: &std::path::Path, user: &str) -> String {
    ok(d, &["users", "create", user]);
    json(d, &["preauthkeys", "create", "--user", user, "--reusable", "-o", "json"])["key"].as_str().unwrap().to_string()
}

/// `/health` on a fresh connection from `from`, retried until it answers
/// 200 or `within` passes; how long that took.
async fn health_within(addr: &str, from: IpAddr, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if client::http1_from(addr, Some(from), req).await.0 == 200 {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Starts POSTs on `c` that send `len` bytes of body and never finish.
fn unfinished(c: &Client, streams: usize, len: usize, tasks: &mut Vec<tokio::task::JoinHandle<u16>>) {
    for k in 0..streams {
        let path = if k % 2 == 0 { "/machine/register" } else { "/machine/map" };
        let (tx, task) = c.post_streaming(path, None);
        tasks.push(task);
        tokio::spawn(async move {
            let mut left = len;
            while left > 0 {
                let n = left.min(16 * 1024);
                if tx.send(Bytes::from(vec![b'{'; n])).await.is_err() {
                    return;
                }
                left -= n;
            }
            // Never the end of the body.
            std::future::pending::<()>().await;
        });
    }
}

fn tally(tasks: &[tokio::task::JoinHandle<u16>]) -> String {
    let done = tasks.iter().filter(|t| t.is_finished()).count();
    format!("{} streams: {done} refused or answered, {} still held open", tasks.len(), tasks.len() - done)
}

#[tokio::test]
async fn unfinished_bodies_grow_the_server_by_at_most_16_mib() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\n");
    let d = dir.path();
    let addr = s.host_port();
    let key = reusable_key(d, "alice");
    let server = client::server_key(&addr).await;
    // A live tailnet first: four nodes with their map streams open.
    let mut nodes = Vec::new();
    for i in 0..4u8 {
        let mut c = Client::connect_from(&addr, server, client::random32(), local(0, 10 + i)).await.unwrap();
        let node = client::random32();
        c.register_with_key(&node, &key, &format!("n{i}")).await;
        let stream = c.map_stream(&Client::map_request(&node, true)).await.unwrap();
        nodes.push((c, node, stream));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = s.child.id();
    let before = rss_kib(pid);

    // The attack of the issue: 4 keyless connections x 16 streams, each a
    // 1 MiB body that never ends; and 4 more whose bodies stop just short of
    // the limits and stall. Each connection from an address of its own.
    let mut tasks = Vec::new();
    let mut keyless = Vec::new();
    for i in 0..8u8 {
        let c = Client::connect_from(&addr, server, client::random32(), local(1, i + 1)).await.unwrap();
        unfinished(&c, 16, if i < 4 { 1 << 20 } else { 60 * 1024 }, &mut tasks);
        keyless.push(c);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let keyless_rss = rss_kib(pid);
    eprintln!(
        "keyless attack: server RSS {before} KiB before, {keyless_rss} KiB under it (+{} KiB); {}",
        keyless_rss.saturating_sub(before),
        tally(&tasks)
    );
    assert!(keyless_rss.saturating_sub(before) <= 16 * 1024, "the keyless attack grew the server by more than 16 MiB");
    // Registered nodes still get their map requests through, and /health answers.
    let (c, node, _) = &mut nodes[0];
    assert_eq!(c.lite(&Client::map_request(node, false)).await, 200, "a registered node was refused under the attack");
    assert_eq!(client::http1(&addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.0, 200);

    // The registered nodes join in, each on a new connection (where it has
    // 16 streams), stalled short of the limit.
    let mut registered = Vec::new();
    for (i, (c, _, _)) in nodes.iter().enumerate() {
        let again = Client::connect_from(&addr, server, c.machine_private, local(0, 10 + i as u8)).await.unwrap();
        unfinished(&again, 16, 60 * 1024, &mut tasks);
        registered.push(again);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    eprintln!(
        "with registered nodes too: server RSS {before} KiB before, {after} KiB after (+{} KiB, body budget {} KiB); {}",
        after.saturating_sub(before),
        tinyscale::control::BODY_BUDGET / 1024,
        tally(&tasks)
    );
    assert!(after.saturating_sub(before) <= 16 * 1024, "the server grew by more than 16 MiB");
    drop(keyless);
}

#[tokio::test]
async fn health_answers_while_silent_noise_connections_hold_every_slot() {
    let (_dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 64\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    // 64 connections from 8 addresses finish the ts2021 handshake and go silent.
    let mut silent = Vec::new();
    let mut refused = 0;
    for i in 0..64u8 {
        let (init, initiator) =
            tinyscale::noise::Initiator::start(client::VERSION, &client::random32(), &client::random32(), &server.0)
                .unwrap();
        let (mut sock, status, _) = client::upgrade_from(&addr, &init, Some(local(2, 1 + i % 8))).await;
        if status != 101 {
            refused += 1;
            continue;
        }
        let mut resp = [0u8; 51];
        sock.read_exact(&mut resp).await.unwrap();
        initiator.finish(&resp).unwrap();
        silent.push(sock);
    }
    eprintln!("{} silent Noise connections held, {refused} refused (max_connections 64)", silent.len());
    let took = health_within(&addr, local(0, 1), Duration::from_secs(30)).await;
    let took = took.expect("/health did not answer within 30 s while silent connections held the slots");
    eprintln!("/health answered after {took:?}");
    // The silent ones are closed once the first-request deadline passes.
    let t = Instant::now();
    for mut sock in silent {
        let mut rest = Vec::new();
        let deadline = tinyscale::control::FIRST_REQUEST + Duration::from_secs(10);
        let r = tokio::time::timeout(deadline.saturating_sub(t.elapsed()), sock.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "a silent Noise connection was kept past the first-request deadline");
    }
    eprintln!("all silent connections were closed {:?} after /health answered", t.elapsed());
}

#[tokio::test]
async fn one_address_gets_32_connections_and_20_handshakes_a_second_but_not_every_slot() {
    let (_dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 64\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let home = local(3, 1);
    // A household behind one NAT: 32 Noise connections at once.
    let mut family = Vec::new();
    for i in 0..32 {
        let c = Client::connect_from(&addr, server, client::random32(), home).await;
        family.push(c.unwrap_or_else(|e| panic!("connection {i} of one address refused: {e:?}")));
    }
    // It may not take every slot: the 33rd is refused, another address is not.
    assert!(Client::connect_from(&addr, server, client::random32(), home).await.is_err(), "a 33rd was let in");
    let neighbour = Client::connect_from(&addr, server, client::random32(), local(3, 2)).await;
    assert!(neighbour.is_ok(), "another address was refused");
    drop(family);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 20 handshakes a second from that address, for 3 seconds: each started
    // on time, whether or not the one before has finished.
    let t = Instant::now();
    let mut handshakes = Vec::new();
    for i in 0..60u32 {
        tokio::time::sleep_until((t + Duration::from_millis(50) * i).into()).await;
        let addr = addr.clone();
        handshakes.push(tokio::spawn(async move {
            Client::connect_from(&addr, server, client::random32(), home).await.map(drop)
        }));
    }
    let started = t.elapsed();
    for (i, h) in handshakes.into_iter().enumerate() {
        h.await.unwrap().unwrap_or_else(|e| panic!("handshake {i} at 20/s refused: {e:?}"));
    }
    eprintln!("60 handshakes from one address started over {started:?}, all done after {:?}", t.elapsed());
    // A flood from one address is cut to its rate.
    let flood = local(3, 3);
    let t = Instant::now();
    let mut answered = 0;
    for _ in 0..150 {
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        answered += (client::http1_from(&addr, Some(flood), req).await.0 == 200) as usize;
    }
    eprintln!("a flood of 150 connections in {:?}: {answered} served", t.elapsed());
    assert!(answered < 150, "a flood from one address was not rated");
}

/// A device asking to join without a key, from `from`: its client and login URL.
async fn keyless_device(addr: &str, server: tinyscale::tailcfg::MachinePublic, from: IpAddr) -> (Client, Value) {
    let mut c = Client::connect_from(addr, server, client::random32(), from).await.unwrap();
    let node = client::random32();
    let req = json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node), "Hostinfo": {"Hostname": "laptop"}});
    let (status, r) = c.register(&req).await;
    assert_eq!(status, 200, "{r}");
    let mut follow = req;
    follow["Followup"] = r["AuthURL"].clone();
    (c, follow)
}

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
        let mut c = Client::connect_from(&addr, server, client::random32(), local(4, 1)).await.unwrap();
        let node = client::random32();
        let (status, r) =
            c.register(&json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node)})).await;
        if status == 200 && r["AuthURL"].is_string() {
            opened += 1;
        } else {
            refused += 1;
        }
    }
    // And 200 more from 25 other addresses, 8 each: enough to fill every place.
    for i in 0..200u32 {
        let from = local(5, 1 + (i / 8) as u8);
        let mut c = Client::connect_from(&addr, server, client::random32(), from).await.unwrap();
        let node = client::random32();
        let (status, r) =
            c.register(&json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node)})).await;
        if status == 200 && r["AuthURL"].is_string() {
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
    use common::idp::{self, confirm_form, Browser, Idp};
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let port = idp::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let provider = Idp::start(&format!("{url}/oidc/callback"), &[("ALG", "RS256")]);
    let cfg = format!(
        "server_url: {url}\nlisten_addr: 127.0.0.1:{port}\noidc:\n  only_start_if_oidc_is_available: true\n  issuer: \"{iss}\"\n  client_id: \"{id}\"\n  client_secret: \"{secret}\"\n  scope: [\"openid\", \"profile\", \"email\", \"custom\"]\n  extra_params:\n    login_hint: alice\n  allowed_groups:\n    - /headscale\n",
        iss = provider.issuer,
        id = idp::CLIENT_ID,
        secret = idp::SECRET,
    );
    std::fs::write(d.join("config.yaml"), cfg).unwrap();
    let s = Server::start(&d, &[], &[]);
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

#[cfg(feature = "derp")]
mod relay {
    use super::*;
    use common::derp_client::{self as dc, DerpClient};
    use tinyscale::derp::frame;
    use tokio::io::AsyncWriteExt;

    fn log_value(log: &str, marker: &str) -> String {
        let line = log.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} in:\n{log}"));
        line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().to_string()
    }

    fn relay_config(extra: &str) -> String {
        format!(
            "listen_addr: 127.0.0.1:0\nderp:\n  server:\n    enabled: true\n    region_id: 999\n    region_code: home\n    region_name: Home\n    stun_listen_addr: 127.0.0.1:0\n    tls_listen_addr: 127.0.0.1:0\n{extra}"
        )
    }

    /// Upgrades a plain connection to DERP from `from` and reads the server
    /// key, then sends nothing: Some(stream) if it was let in.
    async fn silent(addr: &str, from: IpAddr) -> Option<Box<dyn dc::Io>> {
        let mut io: Box<dyn dc::Io> = Box::new(client::tcp_from(addr, Some(from)).await.ok()?);
        let head = dc::upgrade(&mut io).await.ok()?;
        if !head.starts_with("HTTP/1.1 101") {
            return None;
        }
        matches!(dc::read(&mut io).await, Ok(frame::Frame::ServerKey(_))).then_some(io)
    }

    #[tokio::test]
    async fn unauthenticated_derp_clients_cannot_fill_the_relay() {
        let (dir, s) = start(&relay_config("    max_clients: 4\n"));
        let d = dir.path();
        let addr = s.host_port();
        let key = reusable_key(d, "alice");
        let server = client::server_key(&addr).await;
        let mut nodes = Vec::new();
        for i in 0..5 {
            let mut c = Client::connect(&addr, server, client::random32()).await.unwrap();
            let node = client::random32();
            c.register_with_key(&node, &key, &format!("n{i}")).await;
            nodes.push(node);
        }
        // 20 connections from 5 addresses upgrade to DERP and never send their ClientInfo.
        let mut held = Vec::new();
        for i in 0..20u8 {
            held.extend(silent(&addr, local(7, 1 + i % 5)).await);
        }
        assert_eq!(held.len(), 20, "the silent connections were not even let in");
        // The registered nodes still get all four client places.
        let mut admitted = Vec::new();
        for node in &nodes[..4] {
            let io = dc::plain(&addr).await.unwrap();
            let c = DerpClient::handshake(io, *node).await;
            admitted.push(c.unwrap_or_else(|e| panic!("a registered node was refused by the relay: {e}")));
        }
        // The cap on admitted clients holds: a fifth is refused.
        let fifth = DerpClient::handshake(dc::plain(&addr).await.unwrap(), nodes[4]).await;
        assert!(fifth.is_err(), "a fifth client got past max_clients 4");
        drop(admitted);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Handshakes in flight have a small cap of their own.
        let mut more = 0;
        for i in 0..20u8 {
            if let Some(io) = silent(&addr, local(7, 10 + i % 5)).await {
                held.push(io);
                more += 1;
            }
        }
        eprintln!(
            "{} DERP handshakes held open at once ({more} of 20 more let in; the cap is {})",
            held.len(),
            tinyscale::derp::relay::MAX_HANDSHAKING
        );
        assert_eq!(held.len(), tinyscale::derp::relay::MAX_HANDSHAKING);
        // And they are closed when the handshake deadline passes.
        for mut io in held {
            let mut rest = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(15), io.read_to_end(&mut rest)).await;
            assert!(r.is_ok(), "a silent DERP connection outlived the handshake deadline");
        }
    }

    #[tokio::test]
    async fn a_large_pre_auth_frame_is_refused_at_once() {
        let (_dir, s) = start(&relay_config(""));
        let addr = s.host_port();
        let mut io = silent(&addr, local(0, 1)).await.expect("a DERP upgrade");
        // A ClientInfo that claims 200 KiB.
        let mut header = vec![frame::CLIENT_INFO];
        header.extend_from_slice(&(200u32 * 1024).to_be_bytes());
        io.write_all(&header).await.unwrap();
        io.flush().await.unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), io.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "the relay waited for a 200 KiB ClientInfo");
        eprintln!("a 200 KiB ClientInfo was refused after {:?}", t.elapsed());
    }

    #[tokio::test]
    async fn the_relay_tls_port_counts_against_the_same_connection_cap() {
        let (_dir, s) = start(&relay_config("tuning:\n  max_connections: 8\n"));
        let addr = s.host_port();
        let tls = log_value(&s.log(), "DERP relay on https://");
        // Eight connections to the relay's TLS port hold every place.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(tokio::net::TcpStream::connect(&tls).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(client::http1(&addr, req).await.0, 0, "the main listener had places of its own");
        drop(held);
        assert!(health_within(&addr, local(0, 1), Duration::from_secs(5)).await.is_some());
    }
}
