//! The relay against clients that do not play by its rules: unauthenticated
//! DERP clients, huge pre-auth frames, clients that do not read, one address
//! or one key taking every place, and a household reconnecting at once.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tinyscale::derp::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::attack::*;
use common::client::{self, Client};
use common::derp_client::{self as dc, DerpClient};

/// After a router restart a household's devices all reconnect at once,
/// from one address: Noise and DERP. Each retries as a client would (a
/// refusal closes the connection); all must be in within a few tries.
#[tokio::test]
async fn a_household_of_30_devices_reconnects_at_once_within_a_few_retries() {
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
    assert!(after.saturating_sub(before) <= 8 * 1024, "non-reading relay clients grew the server by more than 8 MiB");
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
    eprintln!("one address holds {} of the {} relay handshakes", held.len(), tinyscale::derp::relay::MAX_HANDSHAKING);
    let other = derp_from(&addr, local(17, 2), node).await;
    assert!(other.is_ok(), "another address was refused by the relay: {:?}", other.err());
    // The silent ones are closed at the ClientInfo deadline.
    let limit = tinyscale::derp::relay::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    let mut open = 0;
    for mut io in held {
        let mut rest = Vec::new();
        open +=
            tokio::time::timeout(limit.saturating_sub(t.elapsed()), io.read_to_end(&mut rest)).await.is_err() as usize;
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
