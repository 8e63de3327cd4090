//! The attacks anyone on the internet can try without a key, against the
//! real binary: unfinished request bodies, silent connections holding every
//! slot, one address taking all of them, floods of logins that would push a
//! real device's out, and DERP clients that never prove their key. Each test
//! fails on the code before the limits (checked against that binary with
//! TINYSCALE_TEST_BIN) and prints the figures it is about.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// `n` machines with a node of `user`: their machine keys.
async fn devices(
    d: &std::path::Path,
    addr: &str,
    server: tinyscale::tailcfg::MachinePublic,
    n: usize,
) -> Vec<[u8; 32]> {
    let key = reusable_key(d, "family");
    let mut machines = Vec::new();
    for i in 0..n {
        let machine = client::random32();
        let mut c = Client::connect(addr, server, machine).await.unwrap();
        c.register_with_key(&client::random32(), &key, &format!("dev{i}")).await;
        machines.push(machine);
    }
    machines
}

#[tokio::test]
async fn one_address_gets_32_connections_and_20_handshakes_a_second_but_not_every_slot() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 64\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let home = local(3, 1);
    // A household behind one NAT: 32 devices with a Noise connection each.
    let machines = devices(dir.path(), &addr, server, 33).await;
    let mut family = Vec::new();
    for (i, m) in machines[..32].iter().enumerate() {
        let c = Client::connect_from(&addr, server, *m, home).await;
        family.push(c.unwrap_or_else(|e| panic!("connection {i} of one address refused: {e:?}")));
    }
    // It may not take every slot: the 33rd is refused, another address is not.
    assert!(Client::connect_from(&addr, server, machines[32], home).await.is_err(), "a 33rd was let in");
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

/// A Noise connection from `from` (127.0.0.1 when `None`) whose HTTP/2
/// client grants the server no window: it takes no answer's body. Also the
/// task that ends with the connection. Err: the status of a refused upgrade.
async fn shut_window(
    addr: &str,
    server: tinyscale::tailcfg::MachinePublic,
    machine: [u8; 32],
    from: Option<IpAddr>,
) -> Result<(hyper::client::conn::http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), u16> {
    let (init, initiator) =
        tinyscale::noise::Initiator::start(client::VERSION, &machine, &client::random32(), &server.0).unwrap();
    let sock = client::tcp_from(addr, from).await.map_err(|_| 0u16)?;
    let (mut sock, status, _) = client::upgrade_on(sock, addr, &init).await;
    if status != 101 {
        return Err(status);
    }
    let mut first = [0u8; 3];
    sock.read_exact(&mut first).await.map_err(|_| 0u16)?;
    let mut rest = vec![0u8; u16::from_be_bytes([first[1], first[2]]) as usize];
    sock.read_exact(&mut rest).await.map_err(|_| 0u16)?;
    let msg: Vec<u8> = first.iter().copied().chain(rest).collect();
    let session = initiator.finish(&msg).unwrap();
    let io = tinyscale::control::NoiseIo::new(sock, session.rx, session.tx, Vec::new());
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| 0u16)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, task))
}

fn post_json(path: &str, body: &Value) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!("https://tinyscale{path}")).body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A connection from `from` that pipelines `GET /health` and never reads
/// the answers (its receive buffer is tiny): hyper is left writing. Returns
/// its read half; the writing goes on in a task until the server closes.
async fn stalled_pipeline(addr: &str, from: IpAddr) -> Option<tokio::net::tcp::OwnedReadHalf> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.set_recv_buffer_size(2048).ok()?;
    sock.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let tcp = sock.connect(addr.parse().ok()?).await.ok()?;
    let (rd, mut wr) = tcp.into_split();
    let pipeline = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while wr.write_all(pipeline.as_bytes()).await.is_ok() {}
    });
    Some(rd)
}

/// Whether the server has closed `rd`: its end of file (or reset) within `within`.
async fn closed_within(rd: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let end = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, end).await.is_ok()
}

/// Review finding 2: a client that pipelines requests and never reads the
/// answers kept its connection for good (hyper's header timer runs only
/// while it reads a head), and 2 addresses × 32 such connections refused
/// `/health` to everyone else for 80 s and more.
#[tokio::test]
async fn pipelined_requests_never_read_hold_a_connection_for_a_minute_at_most() {
    let (_dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 64\n");
    let addr = s.host_port();
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for a in 1..=2u8 {
        for _ in 0..32 {
            stalled.extend(stalled_pipeline(&addr, local(10, a)).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Their answers fill the buffers; the ones refused are closed at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut held = Vec::new();
    for mut rd in stalled {
        if !closed_within(&mut rd, Duration::from_millis(300)).await {
            held.push(rd);
        }
    }
    eprintln!("64 stalled pipelines from 2 addresses: {} held open (max_connections 64)", held.len());
    let took = health_within(&addr, local(10, 3), Duration::from_secs(10)).await;
    eprintln!("/health from a third address: {took:?}");
    assert!(took.is_some(), "/health did not answer within 10 s while stalled pipelines held the connections");
    // Each stalled one is closed once it has lasted SHORT_LIFETIME.
    let limit = tinyscale::server::SHORT_LIFETIME + Duration::from_secs(10);
    let mut open = 0;
    for mut rd in held {
        if !closed_within(&mut rd, limit.saturating_sub(opened.elapsed())).await {
            open += 1;
        }
    }
    eprintln!("{open} stalled connections still open {:?} after they were opened", opened.elapsed());
    assert_eq!(open, 0, "a stalled pipeline outlived SHORT_LIFETIME");
}

/// Review finding 3: one registered node opened 48 connections × 16 map
/// streams with a zero window (against 20 peers with a 4 KiB Hostinfo
/// each): each unread stream kept a full map queued, and RSS grew by 75 MiB.
#[tokio::test]
async fn one_node_cannot_make_the_server_hold_many_unread_maps() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 256\n");
    let d = dir.path();
    let addr = s.host_port();
    let key = reusable_key(d, "mallory");
    let server = client::server_key(&addr).await;
    for i in 0..20 {
        let mut c = Client::connect(&addr, server, client::random32()).await.unwrap();
        let mut req = Client::register_request(&client::random32(), &key, &format!("peer{i}"));
        req["Hostinfo"]["Services"] = json!([{"Proto": "tcp", "Port": 1, "Description": "x".repeat(4000)}]);
        assert_eq!(c.register(&req).await.0, 200);
    }
    let machine = client::random32();
    let node = client::random32();
    Client::connect(&addr, server, machine).await.unwrap().register_with_key(&node, &key, "mallory").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = s.child.id();
    let before = rss_kib(pid);
    let mut req = Client::map_request(&node, true);
    req["Compress"] = json!("");
    let (mut opened, mut conns) = (0, 0);
    let mut held = Vec::new();
    for _ in 0..48 {
        let Ok((send, task)) = shut_window(&addr, server, machine, None).await else { continue };
        conns += 1;
        for _ in 0..16 {
            let mut s2 = send.clone();
            if s2.ready().await.is_err() {
                break;
            }
            match s2.send_request(post_json("/machine/map", &req)).await {
                Ok(resp) if resp.status() == 200 => {
                    opened += 1;
                    held.push(resp);
                }
                _ => break,
            }
        }
        held_too(send, task);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    eprintln!(
        "{conns} connections, {opened} unread map streams of one node: server RSS {before} KiB -> {after} KiB (+{} KiB)",
        after.saturating_sub(before)
    );
    assert!(after.saturating_sub(before) <= 16 * 1024, "one node made the server hold more than 16 MiB of maps");
    drop(held);
}

/// Keeps a client connection alive until the test ends.
fn held_too<T: Send + 'static>(send: T, task: tokio::task::JoinHandle<()>) {
    tokio::spawn(async move {
        let _send = send;
        let _ = task.await;
    });
}

/// Review finding 5: a keyless connection whose one answer never got a
/// window kept its request in flight, and stayed open past 125 s (IDLE is 90 s).
#[tokio::test]
async fn a_keyless_connection_that_takes_no_answer_is_closed() {
    let (_dir, s) = start("listen_addr: 127.0.0.1:0\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let (mut send, task) = shut_window(&addr, server, client::random32(), Some(local(11, 1))).await.unwrap();
    let t = Instant::now();
    send.ready().await.unwrap();
    let resp = send.send_request(post_json("/machine/whatever", &json!({}))).await.unwrap();
    let limit = tinyscale::control::ANSWER_DEADLINE + Duration::from_secs(15);
    let closed = tokio::time::timeout(limit, task).await.is_ok();
    eprintln!("answer {} never granted a window: connection closed {closed} after {:?}", resp.status(), t.elapsed());
    assert!(closed, "a connection that takes no answer outlived the answer deadline");
}

/// Review finding 5: keyless connections (any random key is one) could take
/// every long-lived place, so no device of the tailnet got back in.
#[tokio::test]
async fn keyless_connections_leave_the_tailnets_devices_their_places() {
    let (dir, s) = start("listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 64\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let device = devices(dir.path(), &addr, server, 1).await[0];
    // 8 addresses, 8 keyless connections each, every one with a request in flight.
    let mut held = Vec::new();
    let mut refused = 0;
    for a in 1..=8u8 {
        for _ in 0..8 {
            match Client::connect_from(&addr, server, client::random32(), local(12, a)).await {
                Ok(c) => {
                    held.push(c.post_streaming("/machine/register", None));
                    held_clients(c);
                }
                Err(_) => refused += 1,
            }
        }
    }
    eprintln!("64 keyless connections tried: {} held, {refused} refused (max_connections 64)", held.len());
    let back = Client::connect_from(&addr, server, device, local(12, 100)).await;
    assert!(back.is_ok(), "a device of the tailnet was refused: {:?}", back.err());
    eprintln!("a device of the tailnet connected");
    drop(held);
}

fn held_clients(c: Client) {
    tokio::spawn(async move {
        let _c = c;
        std::future::pending::<()>().await;
    });
}

/// Review finding 7: a body without Content-Length reserved 64 KiB before
/// a byte came: 2 addresses × 4 connections × 4 streams of headers only
/// spent the keyless share, and a new device's /machine/register got 503.
#[tokio::test]
async fn request_headers_alone_spend_no_body_budget() {
    let (_dir, s) = start("listen_addr: 127.0.0.1:0\n");
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let mut held = Vec::new();
    let mut tasks = Vec::new();
    for a in 1..=2u8 {
        for _ in 0..4 {
            let c = Client::connect_from(&addr, server, client::random32(), local(13, a)).await.unwrap();
            for _ in 0..4 {
                let (tx, task) = c.post_streaming("/machine/register", None);
                held.push(tx);
                tasks.push(task);
            }
            held_clients(c);
        }
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut victim = Client::connect_from(&addr, server, client::random32(), local(13, 3)).await.unwrap();
    let req = Client::register_request(&client::random32(), "", "victim");
    let (status, body) = victim.register(&req).await;
    eprintln!("a new device's register from another address while 32 header-only bodies wait: {status} {body}");
    assert_eq!(status, 200, "{body}");
    // The header-only requests are cut at the first-byte deadline.
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        let code = tokio::time::timeout(Duration::from_secs(15), task).await.map(|r| r.unwrap()).unwrap_or(0);
        *statuses.entry(code).or_insert(0) += 1;
    }
    eprintln!("the header-only requests were answered {statuses:?} within {:?}", t.elapsed());
    assert_eq!(statuses.get(&408), Some(&32), "{statuses:?}");
    drop(held);
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
    use common::idp::{self, Idp};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = idp::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let provider = Idp::start(&format!("{url}/oidc/callback"), &[]);
    let cfg = format!(
        "server_url: {url}\nlisten_addr: 127.0.0.1:{port}\noidc:\n  only_start_if_oidc_is_available: true\n  issuer: \"{iss}\"\n  client_id: \"{id}\"\n  client_secret: \"{secret}\"\n",
        iss = provider.issuer,
        id = idp::CLIENT_ID,
        secret = idp::SECRET,
    );
    std::fs::write(d.join("config.yaml"), cfg).unwrap();
    let s = Server::start(d, &[], &[]);
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

/// After a router restart a household's devices all reconnect at once,
/// from one address: Noise and DERP. Each retries as a client would (a
/// refusal closes the connection); all must be in within a few tries.
#[cfg(feature = "derp")]
#[tokio::test]
async fn a_household_of_30_devices_reconnects_at_once_within_a_few_retries() {
    use common::derp_client::{self as dc, DerpClient};
    let cfg = "listen_addr: 127.0.0.1:0\nderp:\n  server:\n    enabled: true\n    region_id: 999\n    region_code: home\n    region_name: Home\n    stun_listen_addr: 127.0.0.1:0\n    tls_listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 256\n";
    let (dir, s) = start(cfg);
    let addr = s.host_port();
    let server = client::server_key(&addr).await;
    let key = reusable_key(dir.path(), "family");
    let mut family = Vec::new();
    for i in 0..30 {
        let (machine, node) = (client::random32(), client::random32());
        let mut c = Client::connect(&addr, server, machine).await.unwrap();
        c.register_with_key(&node, &key, &format!("dev{i}")).await;
        family.push((machine, node));
    }
    let home = local(16, 1);
    let t = Instant::now();
    let mut joins = Vec::new();
    for (machine, node) in family {
        let addr = addr.clone();
        joins.push(tokio::spawn(async move {
            let mut tries = 0u32;
            let mut backoff = Duration::from_millis(100);
            let (mut noise, mut relay) = (None, None);
            while noise.is_none() || relay.is_none() {
                tries += 1;
                assert!(tries <= 6, "a device was still out after 5 retries");
                if noise.is_none() {
                    noise = Client::connect_from(&addr, server, machine, home).await.ok();
                }
                if relay.is_none() {
                    if let Ok(tcp) = client::tcp_from(&addr, Some(home)).await {
                        relay = DerpClient::handshake(Box::new(tcp) as Box<dyn dc::Io>, node).await.ok();
                    }
                }
                if noise.is_none() || relay.is_none() {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            (tries, noise, relay)
        }));
    }
    let mut retries = std::collections::BTreeMap::new();
    let mut kept = Vec::new();
    for j in joins {
        let (tries, noise, relay) = j.await.unwrap();
        *retries.entry(tries - 1).or_insert(0) += 1;
        kept.push((noise, relay));
    }
    eprintln!("30 devices of one address reconnected in {:?}; devices by retries needed: {retries:?}", t.elapsed());
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

    /// Registered node keys for the relay: `n` of them.
    async fn relay_nodes(d: &std::path::Path, addr: &str, n: usize) -> Vec<[u8; 32]> {
        let key = reusable_key(d, "mallory");
        let server = client::server_key(addr).await;
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut c = Client::connect(addr, server, client::random32()).await.unwrap();
            let node = client::random32();
            c.register_with_key(&node, &key, &format!("n{i}")).await;
            nodes.push(node);
        }
        nodes
    }

    /// Review finding 4: each registered client that does not read held
    /// its 64-frame queue of up to 64 KiB frames, with no write deadline:
    /// 8 of them grew the server by 21 MiB.
    #[tokio::test]
    async fn relay_clients_that_do_not_read_cost_little_and_are_closed() {
        let (dir, s) = start(&relay_config(""));
        let addr = s.host_port();
        let nodes = relay_nodes(dir.path(), &addr, 9).await;
        let pid = s.child.id();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(pid);
        // Receivers with tiny receive buffers that never read.
        let mut receivers = Vec::new();
        for node in &nodes[1..] {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let tcp = sock.connect(addr.parse().unwrap()).await.unwrap();
            receivers.push(DerpClient::handshake(Box::new(tcp) as Box<dyn dc::Io>, *node).await.unwrap());
        }
        let mut sender = DerpClient::handshake(dc::plain(&addr).await.unwrap(), nodes[0]).await.unwrap();
        // Each says hello to the sender, which is then told when it goes.
        for r in &mut receivers {
            r.send(&sender.public, b"hello").await.unwrap();
        }
        let packet = vec![0u8; 64 * 1024];
        let t = Instant::now();
        for r in &receivers {
            for _ in 0..80 {
                sender.send(&r.public, &packet).await.unwrap();
            }
        }
        let flooded = t.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid);
        eprintln!(
            "8 relay clients that do not read, each sent 80 x 64 KiB in {flooded:?}: server RSS {before} KiB -> {after} KiB (+{} KiB)",
            after.saturating_sub(before)
        );
        assert!(
            after.saturating_sub(before) <= 8 * 1024,
            "non-reading relay clients grew the server by more than 8 MiB"
        );
        // Flooded on, their writes block: the write deadline closes them, and
        // the sender, which sent to them, hears they are gone.
        let (mut rd, mut wr) = tokio::io::split(sender.io);
        let (gone_tx, mut gone_rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let mut h = [0u8; frame::HEADER_LEN];
                if rd.read_exact(&mut h).await.is_err() {
                    return;
                }
                let Ok(Some((kind, len))) = frame::header(&h) else { return };
                let mut p = vec![0u8; len];
                if rd.read_exact(&mut p).await.is_err() {
                    return;
                }
                if let Ok(frame::Frame::PeerGone { key, .. }) = frame::parse(kind, &p) {
                    let _ = gone_tx.send(key);
                }
            }
        });
        let mut left: Vec<[u8; 32]> = receivers.iter().map(|r| r.public).collect();
        let flood = Instant::now();
        let mut send = vec![];
        frame::encode(&frame::Frame::SendPacket { dst: [0; 32], packet: packet.clone() }, &mut send);
        while !left.is_empty() && flood.elapsed() < Duration::from_secs(15) {
            for dst in &left {
                send[frame::HEADER_LEN..frame::HEADER_LEN + 32].copy_from_slice(dst);
                use tokio::io::AsyncWriteExt;
                wr.write_all(&send).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(key) = gone_rx.try_recv() {
                left.retain(|k| *k != key);
            }
        }
        eprintln!("{} of 8 closed {:?} into a steady flood", 8 - left.len(), flood.elapsed());
        assert!(left.is_empty(), "a relay client that does not read outlived the write deadline");
        reader.abort();
        drop(receivers);
    }

    /// DERP over a connection from `from`.
    async fn derp_from(addr: &str, from: IpAddr, node: [u8; 32]) -> Result<DerpClient, String> {
        let tcp = client::tcp_from(addr, Some(from)).await.map_err(|e| e.to_string())?;
        DerpClient::handshake(Box::new(tcp) as Box<dyn dc::Io>, node).await
    }

    /// Review finding 6: one address took all 32 relay handshake places
    /// (each held up to 20 s), and other addresses got 503.
    #[tokio::test]
    async fn one_address_cannot_take_every_relay_handshake() {
        let (dir, s) = start(&relay_config(""));
        let addr = s.host_port();
        let node = relay_nodes(dir.path(), &addr, 1).await[0];
        let mut held = Vec::new();
        for _ in 0..40 {
            held.extend(silent(&addr, local(17, 1)).await);
        }
        let t = Instant::now();
        eprintln!(
            "one address holds {} of the {} relay handshakes",
            held.len(),
            tinyscale::derp::relay::MAX_HANDSHAKING
        );
        let other = derp_from(&addr, local(17, 2), node).await;
        assert!(other.is_ok(), "another address was refused by the relay: {:?}", other.err());
        // The silent ones are closed at the ClientInfo deadline.
        let limit = tinyscale::derp::relay::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
        let mut open = 0;
        for mut io in held {
            let mut rest = Vec::new();
            open += tokio::time::timeout(limit.saturating_sub(t.elapsed()), io.read_to_end(&mut rest)).await.is_err()
                as usize;
        }
        eprintln!("{open} silent handshakes still open {:?} after", t.elapsed());
        assert_eq!(open, 0, "a silent relay handshake outlived the ClientInfo deadline");
    }

    /// Review finding 10: any number of connections of one node key were
    /// kept (and, with no write deadline, never timed out).
    #[tokio::test]
    async fn a_node_key_keeps_two_relay_connections_and_loses_its_oldest() {
        let (dir, s) = start(&relay_config(""));
        let addr = s.host_port();
        let node = relay_nodes(dir.path(), &addr, 1).await[0];
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(DerpClient::handshake(dc::plain(&addr).await.unwrap(), node).await.unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut alive = Vec::new();
        for mut c in conns {
            let up = dc::write(&mut c.io, &frame::Frame::Ping(*b"areyouup")).await.is_ok()
                && c.next(3).await == Some(frame::Frame::Pong(*b"areyouup"));
            alive.push(up);
        }
        eprintln!("4 relay connections of one key, oldest first: alive {alive:?}");
        assert_eq!(alive, [false, false, true, true]);
    }
}
