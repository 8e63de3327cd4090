//! The control-plane benchmark: N simulated nodes (the Rust test client) on
//! the real tinyscale binary. Prints, for N = 50, 250, 1000: server RSS,
//! handshakes and registrations per second, the time to a new node's first
//! (full) map, and the fan-out latency of one node's change to every other
//! stream (p50/p99), under a policy (database mode, set by the CLI). Then
//! one `figure` line per goal, with the floor measured in this process:
//! `serde_json::to_vec` of the same first map, and five X25519 operations
//! (a Noise IK handshake's four DH and one key generation) for the server's
//! CPU per handshake. Figures only; nothing here asserts a time.
//!
//!   cargo bench --bench fanout            (BENCH_NODES=50,250 to choose sizes)
//!   BENCH_BIN=target/x86_64-unknown-linux-musl/release/tinyscale cargo bench --bench fanout

#[path = "../tests/common/client.rs"]
mod client;
mod common;

use common::{cli, cpu_us, figure, rss_kib, user_with_key, Server};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, MapStream};
use serde_json::{json, Value};
use tinyscale::tailcfg::MachinePublic;
use tokio::sync::mpsc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A home tailnet's policy: members reach their own devices and the
/// servers, admins reach everything.
const POLICY: &str = r#"{
  "groups": {"group:admins": ["bench@"]},
  "tagOwners": {"tag:server": ["group:admins"]},
  "acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*", "tag:server:80,443"]},
    {"action": "accept", "src": ["group:admins"], "dst": ["*:*"]}
  ]
}"#;

struct Row {
    n: usize,
    rss_idle: u64,
    rss_n: u64,
    handshakes_per_s: f64,
    handshake_cpu_us: f64,
    first_map_floor_ms: f64,
    registrations_per_s: f64,
    first_map_ms: f64,
    first_map_bytes: usize,
    fanout_p50_ms: f64,
    fanout_p99_ms: f64,
    /// The server's CPU per fan-out round, and the bench's own (its
    /// receivers, all on one thread).
    round_cpu_ms: f64,
    client_cpu_ms: f64,
    /// The size of one fan-out frame on the wire, as a stream received it.
    patch_bytes: usize,
}

async fn bench(n: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Room for every node's connection and, before it registers, for as
    // many machines without a node (the default caps are a router's).
    let server =
        Server::start_with(d, &[("TINYSCALE_POLICY_MODE", "database"), ("TINYSCALE_TUNING_MAX_CONNECTIONS", "8192")]);
    let (pid, addr) = (server.pid, server.addr.clone());
    std::fs::write(d.join("policy.hujson"), POLICY).unwrap();
    cli(d, &["policy", "set", "-f", "policy.hujson"]);
    let key = Arc::new(user_with_key(d, "bench"));
    let server_key = client::server_key(&addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_kib(pid);

    // Handshakes: connect N clients, 16 at a time.
    let cpu0 = cpu_us(pid);
    let t = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut machines = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let futs: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    Client::connect_from(&addr, server_key, client::random32(), source(i)).await.unwrap()
                })
            })
            .collect();
        for f in futs {
            let c = f.await.unwrap();
            machines.push(c.machine_private);
            clients.push(c);
        }
    }
    let handshakes_per_s = n as f64 / t.elapsed().as_secs_f64();
    let handshake_cpu_us = (cpu_us(pid) - cpu0) as f64 / n as f64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_conn = rss_kib(pid);

    // Registrations (each one is a flushed write to the store), 16 at a time.
    let t = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut registered = Vec::with_capacity(n);
    let mut it = clients.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = (&mut it).take(16).collect();
        let futs: Vec<_> = batch
            .into_iter()
            .map(|(i, mut c)| {
                let key = key.clone();
                tokio::spawn(async move {
                    let node = client::random32();
                    c.register_with_key(&node, &key, &format!("n{i}")).await;
                    (c, node)
                })
            })
            .collect();
        for f in futs {
            let (c, node) = f.await.unwrap();
            registered.push(c);
            nodes.push(node);
        }
    }
    let registrations_per_s = n as f64 / t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_reg = rss_kib(pid);

    // Streams: every node opens its map stream, four at a time (as many
    // full maps as the server's blocking pool builds at once; one by one,
    // the last connections sat idle past the server's 90 s idle close on a
    // busy machine); then the last ten, one by one and timed.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant, usize)>();
    let mut first_map = Vec::new();
    let mut first_map_floor = Vec::new();
    let mut first_map_bytes = 0;
    let total = n;
    const OPENING: u32 = 4;
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING as usize));
    for (i, (mut c, node)) in registered.into_iter().zip(nodes.iter().copied()).enumerate() {
        if i + 10 < total {
            let permit = opening.clone().acquire_owned().await.unwrap();
            let tx = tx.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut s = open_stream(&mut c, &node, &addr, server_key, i).await;
                s.next_frame().await.unwrap();
                drop(permit);
                hear_patches(i, c, s, tx).await;
            });
            continue;
        }
        // The timed ones join a settled tailnet: every earlier node streams
        // and the previous node's online notice has reached every stream
        // (that is the fan-out figure).
        drop(opening.acquire_many(OPENING).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // From sending the request to the last byte of the first frame.
        let t = Instant::now();
        let mut s = open_stream(&mut c, &node, &addr, server_key, i).await;
        let frame = s.next_frame().await.unwrap();
        let took = t.elapsed();
        first_map.push(took.as_secs_f64() * 1000.0);
        first_map_bytes = frame.len();
        let first = client::map_json(&frame);
        first_map_floor.push(to_vec_ms(&first));
        if let Ok(path) = std::env::var("BENCH_DUMP") {
            let _ = std::fs::write(format!("{path}.{n}.json"), first.to_string());
        }
        tokio::spawn(hear_patches(i, c, s, tx.clone()));
    }
    // Let the online notices settle.
    tokio::time::sleep(Duration::from_secs(2 + n as u64 / 250)).await;
    while rx.try_recv().is_ok() {}
    let rss_n = rss_kib(pid);
    drop(tx);
    if std::env::var("BENCH_VERBOSE").is_ok() {
        eprintln!("n={n}: RSS idle {rss_idle} KiB, connected {rss_conn}, registered {rss_reg}, streaming {rss_n}");
    }

    // Fan-out: node 0 reports new endpoints five times (over a second
    // connection of its own machine); every other stream must hear it.
    let mut c0 = Client::connect_from(&addr, server_key, machines[0], source(0)).await.unwrap();
    let mut lat = Vec::new();
    let mut round_cpu_us = 0;
    let mut client_cpu_us = 0;
    let mut patch_bytes = 0;
    let me = std::process::id();
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    for round in 0..rounds {
        let mut req = Client::map_request(&nodes[0], false);
        req["Endpoints"] = json!([format!("203.0.113.{}:41641", round % 250 + 1)]);
        let t = Instant::now();
        let cpu0 = cpu_us(pid);
        let client0 = cpu_us(me);
        let status = c0.lite(&req).await;
        assert_eq!(status, 200, "lite update refused");
        let mut got = 0;
        while got < n - 1 {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((_, at, bytes))) => {
                    lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
                    patch_bytes = bytes;
                    got += 1;
                }
                _ => break,
            }
        }
        round_cpu_us += cpu_us(pid) - cpu0;
        client_cpu_us += cpu_us(me) - client0;
        if got < n - 1 {
            eprintln!("round {round}: only {got} of {} streams heard the change", n - 1);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    first_map.sort_by(|a, b| a.partial_cmp(b).unwrap());
    first_map_floor.sort_by(|a, b| a.partial_cmp(b).unwrap());
    server.stop();
    Row {
        n,
        rss_idle,
        rss_n,
        handshakes_per_s,
        handshake_cpu_us,
        first_map_floor_ms: percentile(&first_map_floor, 0.5),
        registrations_per_s,
        first_map_ms: percentile(&first_map, 0.5),
        first_map_bytes,
        fanout_p50_ms: percentile(&lat, 0.5),
        fanout_p99_ms: percentile(&lat, 0.99),
        round_cpu_ms: round_cpu_us as f64 / rounds as f64 / 1000.0,
        client_cpu_ms: client_cpu_us as f64 / rounds as f64 / 1000.0,
        patch_bytes,
    }
}

/// Node `i`'s map stream. On a busy machine, a node registered early may
/// wait for its turn longer than the server keeps a connection with nothing
/// in flight (`control::IDLE`, 90 s); it then reconnects, as a real client does.
async fn open_stream(c: &mut Client, node: &[u8; 32], addr: &str, server_key: MachinePublic, i: usize) -> MapStream {
    let req = Client::map_request(node, true);
    match c.map_stream(&req).await {
        Ok(s) => s,
        Err(_) => {
            *c = Client::connect_from(addr, server_key, c.machine_private, source(i)).await.unwrap();
            c.map_stream(&req).await.unwrap()
        }
    }
}

/// Each node connects from its own loopback address, as the devices of a
/// tailnet do from their own (one source is capped as a household is).
fn source(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8).into()
}

/// Reads stream `i` until it ends, telling `tx` when it hears the fan-out's
/// change (node 0's endpoints in 203.0.113.0/24).
async fn hear_patches(i: usize, c: Client, mut s: MapStream, tx: mpsc::UnboundedSender<(usize, Instant, usize)>) {
    let _keep = c;
    while let Some(frame) = s.next_frame().await {
        let bytes = frame.len();
        let m = client::map_json(&frame);
        let hit = m["PeersChangedPatch"].as_array().into_iter().flatten().any(|p| {
            p["Endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with("203.0.113."))))
        });
        if hit {
            let _ = tx.send((i, Instant::now(), bytes));
        }
    }
}

/// The floor of a first map: `serde_json::to_vec` of it, the best of 20.
fn to_vec_ms(map: &Value) -> f64 {
    (0..20)
        .map(|_| {
            let t = Instant::now();
            let v = serde_json::to_vec(std::hint::black_box(map)).unwrap();
            std::hint::black_box(v);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

/// What the kernel alone costs a fan-out on one core: one thread writing a
/// `bytes`-long record to each of `n` loopback TCP sockets, as the server's
/// one thread does for a change, the best of 20 rounds in milliseconds.
/// Without readers (the writes alone), then with every socket's reader
/// waiting in another thread's epoll, as the bench's streams wait (on
/// loopback, a write runs the receiving side's TCP and wakes its reader).
fn write_floor_ms(n: usize, bytes: usize) -> (f64, f64) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (mut writers, mut readers): (Vec<TcpStream>, Vec<TcpStream>) = (0..n)
        .map(|_| {
            let w = TcpStream::connect(addr).unwrap();
            w.set_nodelay(true).unwrap();
            (w, l.accept().unwrap().0)
        })
        .unzip();
    let record = vec![0x5a; bytes];
    let best_of_20 = |writers: &mut [TcpStream]| {
        (0..20)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                let t = Instant::now();
                for w in writers.iter_mut() {
                    w.write_all(&record).unwrap();
                }
                t.elapsed().as_secs_f64() * 1000.0
            })
            .fold(f64::INFINITY, f64::min)
    };
    let alone = best_of_20(&mut writers);
    let mut sink = vec![0; bytes * 20];
    for r in &mut readers {
        r.read_exact(&mut sink).unwrap();
    }
    // The readers, parked in another thread's epoll until the writers close.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for r in readers {
                r.set_nonblocking(true).unwrap();
                let mut r = tokio::net::TcpStream::from_std(r).unwrap();
                tasks.spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0; 4096];
                    while r.read(&mut buf).await.is_ok_and(|k| k > 0) {}
                });
            }
            ready_tx.send(()).unwrap();
            while tasks.join_next().await.is_some() {}
        })
    });
    ready_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let woken = best_of_20(&mut writers);
    drop(writers);
    reading.join().unwrap();
    (alone, woken)
}

/// The floor of a handshake's CPU: four X25519 agreements and one key
/// generation, as the server's Noise IK does them, in microseconds.
fn x25519_floor_us() -> f64 {
    use x25519_dalek::{PublicKey, StaticSecret};
    let secret = StaticSecret::from(client::random32());
    let peer = PublicKey::from(&StaticSecret::from(client::random32()));
    let rounds = 400;
    let t = Instant::now();
    for _ in 0..rounds {
        let e = StaticSecret::from(std::hint::black_box(client::random32()));
        std::hint::black_box(PublicKey::from(&e));
        for k in [&e, &secret, &e, &secret] {
            std::hint::black_box(k.diffie_hellman(std::hint::black_box(&peer)));
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_NODES")
        .unwrap_or_else(|_| "50,250,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("| nodes | server RSS idle (MiB) | server RSS with N streams (MiB) | handshakes/s | registrations/s | first map of a new node (ms, bytes) | fan-out p50 (ms) | fan-out p99 (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for n in sizes {
        let r = rt.block_on(bench(n));
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} ms, {} B | {:.1} | {:.1} |",
            r.n,
            r.rss_idle as f64 / 1024.0,
            r.rss_n as f64 / 1024.0,
            r.handshakes_per_s,
            r.registrations_per_s,
            r.first_map_ms,
            r.first_map_bytes,
            r.fanout_p50_ms,
            r.fanout_p99_ms
        );
        rows.push(r);
    }
    // The goals' figures, of the largest tailnet run (1,000 by default).
    let Some(r) = rows.last() else { return };
    let n = r.n;
    figure(&format!("first_map_{n}"), r.first_map_ms, "ms", r.first_map_floor_ms);
    figure(&format!("fanout_p99_{n}"), r.fanout_p99_ms, "ms", 0.0);
    // What bounds the fan-out: the server's CPU per round against the
    // kernel's share of it, measured here, and the bench's own receiving.
    let record = r.patch_bytes + 32; // length prefix, HTTP/2 and Noise framing
    let (alone, woken) = write_floor_ms(n - 1, record);
    println!(
        "fan-out of {n}: server CPU {:.1} ms a round ({:.1} µs a stream); one thread writing {record} B to {} loopback sockets: {alone:.1} ms, {woken:.1} ms with their readers waiting; the bench's receivers: {:.1} ms of CPU a round",
        r.round_cpu_ms,
        r.round_cpu_ms * 1000.0 / (n - 1) as f64,
        n - 1,
        r.client_cpu_ms
    );
    figure("handshake_cpu", r.handshake_cpu_us, "µs", x25519_floor_us());
    figure(&format!("rss_{n}"), r.rss_n as f64 / 1024.0, "MiB", r.rss_idle as f64 / 1024.0);
}
