//! The relay benchmark: packet throughput between two DERP clients on
//! loopback, and the server's memory for 1000 idle clients over plain TCP
//! and over TLS, then each idle figure as a `figure` line. Figures only;
//! nothing here asserts a time.
//!
//!   cargo bench --bench derp       (BENCH_BIN as in the fanout bench)

mod common;
#[path = "../tests/common/derp_client.rs"]
mod dc;

use common::{bin, figure, rss_kib};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dc::DerpClient;
use tinyscale::derp::frame::Frame;

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    tinyscale::secrets::random_bytes(&mut b).unwrap();
    b
}

/// Relays `packets` from a to b with at most `WINDOW` in flight (b acks every
/// `ACK_EVERY`), as a congestion-controlled tunnel would; returns MB/s and
/// the share of packets lost.
async fn throughput(a: &mut DerpClient, b: DerpClient, packets: usize, size: usize) -> (f64, f64) {
    const WINDOW: usize = 48;
    const ACK_EVERY: usize = 16;
    let (dst, src) = (b.public, a.public);
    // The receiver runs on a thread of its own, as a peer on another machine would.
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut b = b;
            let mut got = 0usize;
            while let Some(f) = b.next(2).await {
                if let Frame::RecvPacket { .. } = f {
                    got += 1;
                    if got.is_multiple_of(ACK_EVERY) {
                        b.send(&src, &(got as u64).to_be_bytes()).await.unwrap();
                    }
                }
                if got == packets {
                    break;
                }
            }
            got
        })
    });
    let payload = vec![0x55u8; size];
    let t = Instant::now();
    let (mut sent, mut acked) = (0usize, 0usize);
    while sent < packets {
        if sent - acked < WINDOW {
            a.send(&dst, &payload).await.unwrap();
            sent += 1;
            continue;
        }
        match a.next(1).await {
            Some(Frame::RecvPacket { packet, .. }) if packet.len() == 8 => {
                acked = u64::from_be_bytes(packet[..8].try_into().unwrap()) as usize;
            }
            // A lost packet stalls the window: give up on what is in flight.
            None => acked = sent,
            _ => {}
        }
    }
    let got = reader.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    ((got * size) as f64 / secs / 1e6, 100.0 * (packets - got) as f64 / packets as f64)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        d.join("config.yaml"),
        format!("server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\nderp:\n  server:\n    enabled: true\n    verify_clients: false\n    max_clients: 5000\n    stun_listen_addr: 127.0.0.1:0\n    tls_listen_addr: 127.0.0.1:0\ntuning:\n  max_connections: 5000\n"),
    )
    .unwrap();
    let mut server =
        Command::new(bin()).arg("serve").current_dir(d).env_clear().stderr(Stdio::piped()).spawn().unwrap();
    let pid = server.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        let (mut pin, mut tls) = (None, None);
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(p) = line.split('(').nth(1).filter(|p| p.starts_with("sha256-raw:")) {
                pin = Some(p.trim_end_matches(')').to_string());
            }
            if let Some(a) = line.split("DERP relay on https://").nth(1) {
                tls = a.split_whitespace().next().map(str::to_string);
            }
            if line.contains("listening on") {
                let _ = tx.send((pin.clone().unwrap_or_default(), tls.clone().unwrap_or_default()));
            }
        }
    });
    let (pin, tls) = rx.recv_timeout(Duration::from_secs(20)).expect("server start");
    let plain = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!("| relay path | packets of 1200 B, 48 in flight | MB/s received | lost |");
        println!("|---|---|---|---|");
        for (name, is_tls) in [("plain TCP", false), ("TLS", true)] {
            let connect = || async {
                let io = if is_tls { dc::tls(&tls, &pin).await.unwrap() } else { dc::plain(&plain).await.unwrap() };
                DerpClient::handshake(io, random32()).await.unwrap()
            };
            let mut a = connect().await;
            let b = connect().await;
            let (mbs, drop) = throughput(&mut a, b, 20_000, 1200).await;
            println!("| {name} | 20000 | {mbs:.1} | {drop:.1} % |");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!();
        println!("| idle clients | transport | server RSS before (MiB) | after (MiB) | per client (KiB) |");
        println!("|---|---|---|---|---|");
        let mut keep = Vec::new();
        let mut idle = Vec::new();
        for (name, is_tls) in [("plain TCP", false), ("TLS", true)] {
            let before = rss_kib(pid);
            for _ in 0..1000 {
                let io = if is_tls { dc::tls(&tls, &pin).await.unwrap() } else { dc::plain(&plain).await.unwrap() };
                keep.push(DerpClient::handshake(io, random32()).await.unwrap());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = rss_kib(pid);
            let per_client = (after.saturating_sub(before)) as f64 / 1000.0;
            println!(
                "| 1000 | {name} | {:.1} | {:.1} | {per_client:.1} |",
                before as f64 / 1024.0,
                after as f64 / 1024.0,
            );
            idle.push(per_client);
        }
        println!();
        figure("derp_idle_tcp", idle[0], "KiB", 0.0);
        figure("derp_idle_tls", idle[1], "KiB", 0.0);
    });
    let _ = server.kill();
    let _ = server.wait();
}
