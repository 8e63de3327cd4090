//! The embedded DERP relay and STUN, with a Rust DERP client, the Rust
//! control client, and real Tailscale clients.

mod common;

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use common::client::{self, Client};
use common::derp_client::{self as dc, DerpClient};
use common::*;
use tinyscale::derp::frame::{self, Frame};

struct Relay {
    _dir: tempfile::TempDir,
    d: std::path::PathBuf,
    server: Server,
    tls: String,
    stun: String,
}

fn log_value(log: &str, marker: &str) -> String {
    let line = log.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} in the log:\n{log}"));
    line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

fn start(extra: &str) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let port = common::idp::free_port();
    std::fs::write(
        d.join("config.yaml"),
        format!(
            "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\nlog:\n  level: debug\nderp:\n  server:\n    enabled: true\n    region_id: 999\n    region_code: home\n    region_name: Home\n    stun_listen_addr: 127.0.0.1:0\n    tls_listen_addr: 127.0.0.1:0\n{extra}"
        ),
    )
    .unwrap();
    let server = Server::start(&d, &[], &[]);
    let log = server.log();
    let tls = log_value(&log, "DERP relay on https://");
    let stun = log_value(&log, "STUN on udp ");
    Relay { _dir: dir, d, server, tls, stun }
}

/// Registers `n` nodes; returns their node private keys and the first one's full map.
async fn nodes(r: &Relay, n: usize) -> (Vec<[u8; 32]>, Value) {
    ok(&r.d, &["users", "create", "alice"]);
    let k = json(&r.d, &["preauthkeys", "create", "--user", "alice", "--reusable", "-o", "json"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = r.server.host_port();
    let server = client::server_key(&addr).await;
    let mut keys = Vec::new();
    let mut first = Value::Null;
    for i in 0..n {
        let mut c = Client::connect(&addr, server, client::random32()).await.unwrap();
        let node = client::random32();
        c.register_with_key(&node, &k, &format!("n{i}")).await;
        if i == 0 {
            first = c.map_stream(&Client::map_request(&node, true)).await.unwrap().next().await.unwrap();
        }
        keys.push(node);
    }
    (keys, first)
}

fn pin_of_map(map: &Value) -> String {
    map["DERPMap"]["Regions"]["999"]["Nodes"][0]["CertName"].as_str().expect("a CertName pin").to_string()
}

#[tokio::test]
async fn the_relay_forwards_pings_and_says_who_is_gone_over_its_pinned_tls() {
    let r = start("");
    let (keys, map) = nodes(&r, 2).await;
    let node = &map["DERPMap"]["Regions"]["999"]["Nodes"][0];
    assert_eq!(node["HostName"], "127.0.0.1");
    assert_eq!(node["IPv4"], "127.0.0.1");
    assert_eq!(node["DERPPort"].as_u64().unwrap().to_string(), r.tls.rsplit(':').next().unwrap());
    assert_eq!(node["STUNPort"].as_u64().unwrap().to_string(), r.stun.rsplit(':').next().unwrap());
    let pin = pin_of_map(&map);
    // The pin is what the listener presents: the wrong pin fails.
    assert!(dc::tls(&r.tls, "sha256-raw:00").await.is_err());
    let mut a = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[0]).await.unwrap();
    let mut b = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[1]).await.unwrap();
    a.send(&b.public, b"hello b").await.unwrap();
    assert_eq!(b.next(5).await, Some(Frame::RecvPacket { src: a.public, packet: b"hello b".to_vec() }));
    b.send(&a.public, b"hello a").await.unwrap();
    assert_eq!(a.next(5).await, Some(Frame::RecvPacket { src: b.public, packet: b"hello a".to_vec() }));
    dc::write(&mut a.io, &Frame::Ping(*b"12345678")).await.unwrap();
    assert_eq!(a.next(5).await, Some(Frame::Pong(*b"12345678")));
    dc::write(&mut a.io, &Frame::NotePreferred(true)).await.unwrap();
    // A disco packet for a key that is not here earns a PeerGone(not here).
    let disco = [&[0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac][..], &[0u8; 60]].concat();
    a.send(&[5; 32], &disco).await.unwrap();
    assert_eq!(a.next(5).await, Some(Frame::PeerGone { key: [5; 32], reason: frame::GONE_NOT_HERE }));
    // b leaves: a, which heard from b, is told.
    drop(b);
    assert_eq!(
        a.next(5).await,
        Some(Frame::PeerGone { key: tinyscale::noise::public_key(&keys[1]), reason: frame::GONE_DISCONNECTED })
    );
    // Plain-HTTP DERP on the main listener too (TS_DEBUG_USE_DERP_HTTP clients).
    let mut c = DerpClient::handshake(dc::plain(&r.server.host_port()).await.unwrap(), keys[1]).await.unwrap();
    a.send(&c.public, b"again").await.unwrap();
    assert_eq!(c.next(5).await, Some(Frame::RecvPacket { src: a.public, packet: b"again".to_vec() }));
}

async fn closed(mut io: Box<dyn dc::Io>) -> bool {
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut io, &mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read).await.unwrap_or(false)
}

#[tokio::test]
async fn bad_input_is_refused_and_other_clients_are_unaffected() {
    let r = start("");
    let (keys, map) = nodes(&r, 3).await;
    let pin = pin_of_map(&map);
    let addr = r.server.host_port();
    // An unregistered key (verify_clients is on by default).
    assert!(DerpClient::handshake(dc::plain(&addr).await.unwrap(), client::random32()).await.is_err());
    // A ClientInfo box sealed to the wrong key.
    let mut io = dc::plain(&addr).await.unwrap();
    dc::upgrade(&mut io).await.unwrap();
    let Frame::ServerKey(_) = dc::read(&mut io).await.unwrap() else { panic!() };
    let me = tinyscale::noise::public_key(&keys[0]);
    let sealed = tinyscale::derp::handshake::seal(&keys[0], &[9; 32], [1; 24], b"{}");
    dc::write(&mut io, &Frame::ClientInfo { key: me, sealed }).await.unwrap();
    assert!(closed(io).await, "a box that does not open must close the connection");
    // A malformed frame and an oversized one after a good handshake.
    let a = DerpClient::handshake(dc::plain(&addr).await.unwrap(), keys[0]).await.unwrap();
    let mut io = a.io;
    io.write_all(&[frame::SEND_PACKET, 0, 0, 0, 4, 1, 2, 3, 4]).await.unwrap();
    assert!(closed(io).await);
    let a = DerpClient::handshake(dc::plain(&addr).await.unwrap(), keys[0]).await.unwrap();
    let mut io = a.io;
    io.write_all(&[frame::SEND_PACKET, 0x40, 0, 0, 0]).await.unwrap();
    assert!(closed(io).await);
    // Mesh frames from a client that is no mesh peer.
    let mut a = DerpClient::handshake(dc::plain(&addr).await.unwrap(), keys[0]).await.unwrap();
    dc::write(&mut a.io, &Frame::WatchConns).await.unwrap();
    assert!(closed(a.io).await);
    // A peer that never reads: flooding it blocks nobody.
    let mut a = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[0]).await.unwrap();
    let mut b = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[1]).await.unwrap();
    let sleeper = DerpClient::handshake(dc::plain(&addr).await.unwrap(), keys[2]).await.unwrap();
    let big = vec![0xaa; 60_000];
    let flood = async {
        for _ in 0..300 {
            a.send(&sleeper.public, &big).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("sending to a stuck peer must not block the sender");
    a.send(&b.public, b"still here").await.unwrap();
    assert_eq!(b.next(5).await, Some(Frame::RecvPacket { src: a.public, packet: b"still here".to_vec() }));
    drop(sleeper);
    // Non-upgrade requests and the side endpoints.
    assert_eq!(http_get(&addr, "/derp").0, 426);
    assert_eq!(http_get(&addr, "/derp/probe").0, 200);
    assert_eq!(http_get(&addr, "/derp/latency-check").0, 200);
    let (status, text) = client::http1(
        &addr,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: abc123\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 204);
    assert!(text.to_ascii_lowercase().contains("x-tailscale-response: response abc123"), "{text}");
    assert_eq!(http_get(&addr, "/health").0, 200);
    assert!(!r.server.log().contains("panicked"));
}

#[tokio::test]
async fn stun_answers_with_the_address_it_saw() {
    let r = start("");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let txid: [u8; 12] = *b"tinyscale-tx";
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&txid);
    sock.send_to(&req, &r.stun).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    let seen = tinyscale::stun::parse_response(&buf[..n], &txid).expect("a binding response");
    assert_eq!(seen, sock.local_addr().unwrap());
    // Garbage gets no answer.
    sock.send_to(b"not stun at all, not at all", &r.stun).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await.is_err());
}

/// A tiny HTTP server handing out whatever `body` holds (a DERP map for `derp.urls`).
#[cfg(feature = "fetch")]
async fn serve_body(body: std::sync::Arc<std::sync::Mutex<(u16, String)>>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let (status, b) = body.lock().unwrap().clone();
            let mut req = [0u8; 2048];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut req).await;
            let resp = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len());
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    addr
}

#[cfg(feature = "fetch")]
fn region(id: u32) -> Value {
    serde_json::json!({"RegionID": id, "RegionCode": format!("r{id}"), "RegionName": "elsewhere",
           "Nodes": [{"Name": format!("{id}a"), "RegionID": id, "HostName": "derp.example"}]})
}

// derp.urls are fetched by the `fetch` feature; a build without it ignores them.
#[cfg(feature = "fetch")]
#[tokio::test]
async fn derp_urls_merge_refresh_as_deltas_and_keep_the_last_good_copy() {
    let body = std::sync::Arc::new(std::sync::Mutex::new((
        200,
        serde_json::json!({"Regions": {"901": region(901)}}).to_string(),
    )));
    let url = serve_body(body.clone()).await;
    let r = start(&format!(
        "  urls:\n    - http://{url}/derpmap.json\n  auto_update_enabled: true\n  update_frequency: 1s\n"
    ));
    ok(&r.d, &["users", "create", "alice"]);
    let k =
        json(&r.d, &["preauthkeys", "create", "--user", "alice", "-o", "json"])["key"].as_str().unwrap().to_string();
    let addr = r.server.host_port();
    let mut c = Client::connect(&addr, client::server_key(&addr).await, client::random32()).await.unwrap();
    let node = client::random32();
    c.register_with_key(&node, &k, "n").await;
    let mut s = c.map_stream(&Client::map_request(&node, true)).await.unwrap();
    let first = s.next().await.unwrap();
    let regions = |m: &Value| -> Vec<String> {
        let mut v: Vec<String> =
            m["DERPMap"]["Regions"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    };
    // The first fetch may land just after the first map: then it comes as a delta.
    let mut seen = regions(&first);
    if seen != ["901", "999"] {
        let d = s.next_update(10).await.expect("the fetched map as a delta");
        seen = regions(&d);
    }
    assert_eq!(seen, ["901", "999"]);
    // The document changes: every client gets the new map as a delta, and only that.
    body.lock().unwrap().1 = serde_json::json!({"Regions": {"901": region(901), "902": region(902)}}).to_string();
    let d = s.next_update(10).await.expect("a DERPMap delta");
    assert_eq!(regions(&d), ["901", "902", "999"]);
    assert!(d.get("Node").is_none() && d.get("Peers").is_none(), "{d}");
    // The URL fails: the last good copy stays, so no delta comes.
    body.lock().unwrap().0 = 500;
    assert!(s.next_update(4).await.is_none(), "a failed fetch must not change the map");
}

#[test]
fn two_real_clients_pass_traffic_through_the_relay() {
    use common::netns::Netns;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new();
    let url = "http://127.0.0.1:18080";
    std::fs::write(
        d.join("config.yaml"),
        format!("server_url: {url}\nlisten_addr: 127.0.0.1:18080\nlog:\n  level: debug\nderp:\n  server:\n    enabled: true\n    region_id: 999\n    stun_listen_addr: 127.0.0.1:3478\n    tls_listen_addr: 127.0.0.1:18443\n"),
    )
    .unwrap();
    let server = ns.serve(d);
    ok(d, &["users", "create", "alice"]);
    let k = json(d, &["preauthkeys", "create", "--user", "alice", "--reusable", "-o", "json"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Force the relay path; no TLS override: the pinned certificate is checked.
    let env = [("TS_DEBUG_ALWAYS_USE_DERP", "1")];
    let a = ns.start_node_env("nodea", url, Some(&k), &d.join("a"), &env);
    let b = ns.start_node_env("nodeb", url, Some(&k), &d.join("b"), &env);
    assert!(a.wait_running(60) && b.wait_running(60), "clients never reached Running");
    assert!(a.wait_log(30, |l| l.contains("derp-999 connected")), "a never connected to the relay");
    assert!(b.wait_log(30, |l| l.contains("derp-999 connected")), "b never connected to the relay");
    let list = json(d, &["nodes", "list", "-o", "json"]);
    let ip = |name: &str| {
        list.as_array().unwrap().iter().find(|n| n["given_name"] == name).unwrap()["ip_addresses"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ip_a, ip_b) = (ip("nodea"), ip("nodeb"));
    let mut hello = String::new();
    for _ in 0..6 {
        hello = ns.curl(&["-H", &format!("X-Ts-Target: {ip_b}:80"), &format!("http://127.0.0.1:{}/", a.proxy_port())]);
        if hello.contains("hello from nodeb") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(hello.contains("hello from nodeb"), "{hello:?}");
    let who =
        ns.curl(&["-H", &format!("X-Ts-Target: {ip_b}:80"), &format!("http://127.0.0.1:{}/whoami", a.proxy_port())]);
    assert!(who.contains("login=alice") && who.contains(&format!("from={ip_a}")), "{who}");
    assert!(server.log().matches(" connected").count() >= 2, "{}", server.log());
    a.stop();
    b.stop();
}

#[tokio::test]
async fn with_an_https_server_url_the_relay_lives_on_the_main_listener() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    self_signed_cert(d);
    let port = common::idp::free_port();
    std::fs::write(
        d.join("config.yaml"),
        format!(
            "server_url: https://localhost:{port}\nlisten_addr: 127.0.0.1:{port}\ntls_cert_path: cert.pem\ntls_key_path: key.pem\nderp:\n  server:\n    enabled: true\n    verify_clients: false\n    stun_listen_addr: 127.0.0.1:0\n"
        ),
    )
    .unwrap();
    let s = Server::start(d, &[], &[]);
    assert!(!s.log().contains("DERP relay on https://"), "a real certificate needs no second listener:\n{}", s.log());
    assert!(!d.join("tinyscale-data/derp_tls.pem").exists(), "nor a self-signed certificate");
    let pem = std::fs::read(d.join("cert.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let pin = tinyscale::derp::cert::pin_of(&der);
    let addr = format!("127.0.0.1:{port}");
    let mut a = DerpClient::handshake(dc::tls(&addr, &pin).await.unwrap(), client::random32()).await.unwrap();
    let mut b = DerpClient::handshake(dc::tls(&addr, &pin).await.unwrap(), client::random32()).await.unwrap();
    a.send(&b.public, b"over the main listener").await.unwrap();
    assert_eq!(b.next(5).await, Some(Frame::RecvPacket { src: a.public, packet: b"over the main listener".to_vec() }));
}

/// Issue 10, item 8: a deleted or expired node kept its relay connection.
#[tokio::test]
async fn deleted_and_expired_nodes_lose_their_relay_connection() {
    let r = start("");
    let (keys, map) = nodes(&r, 3).await;
    let pin = pin_of_map(&map);
    let list = json(&r.d, &["nodes", "list", "-o", "json"]);
    let id_of = |private: &[u8; 32]| {
        let text = format!("nodekey:{}", tinyscale::tailcfg::encode_hex(&tinyscale::noise::public_key(private)));
        list.as_array().unwrap().iter().find(|n| n["node_key"] == text.as_str()).unwrap()["id"].to_string()
    };
    let a = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[0]).await.unwrap();
    let b = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[1]).await.unwrap();
    let b_again = DerpClient::handshake(dc::plain(&r.server.host_port()).await.unwrap(), keys[1]).await.unwrap();
    let mut c = DerpClient::handshake(dc::tls(&r.tls, &pin).await.unwrap(), keys[2]).await.unwrap();
    ok(&r.d, &["nodes", "delete", "-i", &id_of(&keys[1]), "--force"]);
    assert!(closed(b.io).await, "a deleted node kept its relay connection");
    assert!(closed(b_again.io).await, "a deleted node kept its second relay connection");
    ok(&r.d, &["nodes", "expire", "-i", &id_of(&keys[0])]);
    assert!(closed(a.io).await, "an expired node kept its relay connection");
    // The others are untouched.
    dc::write(&mut c.io, &Frame::Ping(*b"stillup!")).await.unwrap();
    assert_eq!(c.next(5).await, Some(Frame::Pong(*b"stillup!")));
}
