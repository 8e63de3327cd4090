//! Map compression, decided by numbers: what zstd saves on the frames
//! tinyscale sends and what it costs. A tailnet of N nodes (BENCH_NODES,
//! 1000 by default) joins the real binary, each with a Hostinfo, endpoints
//! and a disco key as tailscaled sends them (policy-less, so every node sees
//! every other). Then, for a new node's first (full) map, the first map of
//! a tailnet's second node, a one-peer patch
//! (new endpoints), a new peer (`PeersChanged` with one node) and a
//! keep-alive, it prints:
//!
//! - the JSON's size, the frame the server sent (with `tuning.compress_maps`
//!   on, unless BENCH_COMPRESS_MAPS=false, and raw below
//!   `frame::COMPRESS_FROM`), and what the shipped encoder
//!   (`mapper::frame::compressed`, ruzstd's `Fastest`) makes of it;
//! - that encoder's CPU per message in this process, median of many runs,
//!   against the floor of `serde_json::to_vec` of the same message;
//! - the C library's sizes and speeds at levels 1 and 3, from the zstd
//!   tool's own in-memory benchmark (`zstd -b`), so no C code is linked here.
//!
//! Then `figure` lines: bytes (floor: the raw JSON) and µs (floor: to_vec).
//! Figures only; nothing here asserts a time. BENCH_MAP=<file.json> measures
//! a map from a file instead (e.g. one the fanout bench dumped with
//! BENCH_DUMP), without starting a server; BENCH_DUMP=<prefix> writes each
//! message's JSON to <prefix>.<message>.json.
//!
//!   cargo bench --bench compression

#[path = "../tests/common/client.rs"]
mod client;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, MapStream};
use common::{figure, user_with_key, Server};
use serde_json::{json, Value};
use tinyscale::mapper::frame;

/// What one kind of message weighs and costs.
struct Row {
    /// full_map (of the N-node tailnet), full_map_2 (a 2-node one),
    /// peer_changed, peer_patch, keepalive.
    name: &'static str,
    json: Vec<u8>,
    /// The frame as the server sent it (without the length prefix); empty
    /// when measured from a file.
    sent: usize,
}

/// Each node connects from its own loopback address, as the devices of a
/// tailnet do from their own (one source is capped as a household is).
fn source(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8).into()
}

fn hex(b: &[u8; 32]) -> String {
    tinyscale::tailcfg::encode_hex(b)
}

/// A Hostinfo as tailscaled 1.90 on Linux sends it: its log IDs are random
/// per node, the rest is what a tailnet's devices share or vary a little.
fn hostinfo(i: usize) -> Value {
    json!({
        "IPNVersion": "1.90.9-t8a3d4fc2e-g1f2c3d4e5",
        "FrontendLogID": hex(&client::random32()),
        "BackendLogID": hex(&client::random32()),
        "OS": "linux",
        "OSVersion": format!("6.{}.0-{}-amd64", 1 + i % 5, 10 + i % 20),
        "Distro": "debian",
        "DistroVersion": "12.8",
        "DistroCodeName": "bookworm",
        "Hostname": format!("n{i}"),
        "Machine": "x86_64",
        "GoArch": "amd64",
        "GoArchVar": "v1",
        "GoVersion": "go1.25.3",
        "Services": [
            {"Proto": "peerapi4", "Port": 40000 + i % 20000},
            {"Proto": "peerapi6", "Port": 40000 + i % 20000},
            {"Proto": "peerapi-dns-proxy", "Port": 1}
        ],
        "NetInfo": {
            "MappingVariesByDestIP": false,
            "WorkingIPv6": false,
            "OSHasIPv6": true,
            "WorkingUDP": true,
            "WorkingICMPv4": false,
            "UPnP": false,
            "PMP": false,
            "PCP": false,
            "PreferredDERP": 999,
            "LinkType": "wired",
            "DERPLatency": {"999-v4": 0.0021 + (i % 7) as f64 * 0.0003},
            "FirewallMode": "nft-default"
        },
        "Userspace": false,
        "UserspaceRouter": false
    })
}

/// The map request of node `i`: its Hostinfo, a LAN and a public endpoint.
fn map_request(node: &[u8; 32], i: usize) -> Value {
    let mut req = Client::map_request(node, true);
    req["Hostinfo"] = hostinfo(i);
    req["Endpoints"] = json!([
        format!("198.51.100.{}:{}", i % 250 + 1, 41641 + i % 3),
        format!("192.168.{}.{}:41641", i / 250, i % 250 + 2)
    ]);
    req
}

/// The next update on `s` that `pick` accepts, as it came and as JSON.
async fn next_such(s: &mut MapStream, pick: impl Fn(&Value) -> bool) -> (Vec<u8>, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let frame = tokio::time::timeout_at(deadline, s.next_frame()).await.expect("no such update").unwrap();
        let json = client::unzstd(&frame);
        if std::env::var("BENCH_VERBOSE").is_ok() {
            eprintln!("update: {}", String::from_utf8_lossy(&json[..json.len().min(300)]));
        }
        if pick(&serde_json::from_slice(&json).unwrap()) {
            return (frame, json);
        }
    }
}

/// Joins `n` nodes to a fresh server and returns the messages to measure.
async fn tailnet(n: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut env = vec![("TINYSCALE_TUNING_MAX_CONNECTIONS", "8192".to_string())];
    if let Ok(v) = std::env::var("BENCH_COMPRESS_MAPS") {
        env.push(("TINYSCALE_TUNING_COMPRESS_MAPS", v));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(d, &env);
    let addr = server.addr.clone();
    let key = Arc::new(user_with_key(d, "bench"));
    let server_key = client::server_key(&addr).await;

    // n - 1 nodes join, 16 at a time, their streams drained in the
    // background, so each is online with its endpoints.
    let join = |i: usize| {
        let (addr, key) = (addr.clone(), key.clone());
        tokio::spawn(async move {
            let mut c = Client::connect_from(&addr, server_key, client::random32(), source(i)).await.unwrap();
            let node = client::random32();
            c.register_with_key(&node, &key, &format!("n{i}")).await;
            let req = map_request(&node, i);
            let s = c.map_stream(&req).await.unwrap();
            (c, req, s)
        })
    };
    // The second node's first map is a small tailnet's full map.
    let mut small = (Vec::new(), Vec::new());
    for i in 0..2 {
        let (c, _req, mut s) = join(i).await.unwrap();
        let frame = s.next_frame().await.unwrap();
        small = (client::unzstd(&frame), frame);
        tokio::spawn(async move {
            let _keep = c;
            while s.next_frame().await.is_some() {}
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for chunk in (2..n - 1).collect::<Vec<_>>().chunks(16) {
        let joined: Vec<_> = chunk.iter().map(|&i| join(i)).collect();
        for j in joined {
            let (c, _req, mut s) = j.await.unwrap();
            tokio::spawn(async move {
                let _keep = c;
                while s.next_frame().await.is_some() {}
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The measured node joins a settled tailnet: its first map has every peer.
    let (_c, _req, mut s) = join(n - 1).await.unwrap();
    let first = s.next_frame().await.unwrap();
    let full = client::unzstd(&first);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another node joins: a PeersChanged with one node. Then it reports new
    // endpoints: a PeersChangedPatch.
    let (mut c, req, mut so) = join(n).await.unwrap();
    // (The first notice of it comes at registration, before its stream
    // brought its disco key, endpoints and Hostinfo.)
    let whole =
        |m: &Value| m["PeersChanged"].as_array().is_some_and(|p| p.len() == 1 && p[0].get("Hostinfo").is_some());
    let (new_frame, new_json) = next_such(&mut s, whole).await;
    tokio::spawn(async move { while so.next_frame().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A lite update as tailscaled sends it: the same disco key, new endpoints.
    let mut lite = req.clone();
    (lite["Stream"], lite["OmitPeers"]) = (json!(false), json!(true));
    lite["Endpoints"] = json!(["203.0.113.7:41641", "192.168.9.9:41641"]);
    assert_eq!(c.lite(&lite).await, 200, "lite update refused");
    let (patch_frame, patch_json) =
        next_such(&mut s, |m| m["PeersChangedPatch"].as_array().is_some_and(|p| !p.is_empty())).await;
    server.stop();
    let keepalive = serde_json::to_vec(&tinyscale::mapper::keepalive()).unwrap();
    vec![
        Row { name: "full_map", json: full, sent: first.len() },
        Row { name: "full_map_2", json: small.0, sent: small.1.len() },
        Row { name: "peer_changed", json: new_json, sent: new_frame.len() },
        Row { name: "peer_patch", json: patch_json, sent: patch_frame.len() },
        // Keep-alives come after 50 s of quiet: not waited for, framed here as the server does.
        Row { name: "keepalive", sent: frame::map_frame(&keepalive, true).len() - 4, json: keepalive },
    ]
}

/// Median CPU of `f` in microseconds over enough runs to fill about a second.
fn median_us(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64();
    let runs = ((1.0 / once.max(1e-7)) as usize).clamp(21, 20_001);
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The C library at `level`, from the zstd tool's benchmark of `json`:
/// (compressed bytes, µs per message).
fn zstd_tool(json: &[u8], level: u32) -> Option<(usize, f64)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("m.json");
    std::fs::write(&path, json).ok()?;
    let out = std::process::Command::new("zstd").args([&format!("-b{level}"), "-i1", "-q"]).arg(&path).output().ok()?;
    // "-1   120345 (4.821) 310.2 MB/s  900.1 MB/s  m.json"
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with(&format!("-{level} ")))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let bytes: usize = f.get(1)?.parse().ok()?;
    let mb_s: f64 = f.get(3)?.parse().ok()?;
    Some((bytes, json.len() as f64 / mb_s))
}

fn main() {
    let rows = match std::env::var("BENCH_MAP") {
        Ok(path) => vec![Row { name: "full_map", json: std::fs::read(&path).unwrap(), sent: 0 }],
        Err(_) => {
            let n: usize = std::env::var("BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(tailnet(n))
        }
    };
    println!("| message | JSON (B) | frame sent (B) | ruzstd Fastest (B) | ruzstd (µs) | to_vec (µs) | C zstd -1 (B, µs) | C zstd -3 (B, µs) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut figures = Vec::new();
    for r in &rows {
        if let Ok(path) = std::env::var("BENCH_DUMP") {
            let _ = std::fs::write(format!("{path}.{}.json", r.name), &r.json);
        }
        let value: Value = serde_json::from_slice(&r.json).unwrap();
        let ours = frame::compressed(&r.json).len();
        let ours_us = median_us(|| {
            std::hint::black_box(frame::compressed(std::hint::black_box(&r.json)));
        });
        let to_vec_us = median_us(|| {
            std::hint::black_box(serde_json::to_vec(std::hint::black_box(&value)).unwrap());
        });
        let c = |l| zstd_tool(&r.json, l).map_or("-".into(), |(b, us): (usize, f64)| format!("{b}, {us:.1}"));
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} |",
            r.name,
            r.json.len(),
            r.sent,
            ours,
            ours_us,
            to_vec_us,
            c(1),
            c(3)
        );
        figures.push((r.name, ours, r.json.len(), ours_us, to_vec_us));
    }
    for (name, ours, raw, us, floor) in figures {
        figure(&format!("{name}_bytes"), ours as f64, "B", raw as f64);
        figure(&format!("{name}_compress_cpu"), us, "µs", floor);
    }
}
