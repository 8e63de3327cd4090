//! The flash-wear benchmark: 20 nodes join, open their map streams and sit
//! idle, as a home tailnet does most of the day; the server's writes to
//! storage (`write_bytes` in /proc, on a disk-backed folder) over
//! BENCH_FLASH_SECS (default 600) are extrapolated to a day. The joins
//! themselves are left out: the count starts once every stream is open.
//!
//!   cargo bench --bench flash            (BENCH_BIN as in the fanout bench)

#[path = "../tests/common/client.rs"]
mod client;
mod common;

use common::{figure, user_with_key, write_bytes, Server};
use std::time::Duration;

const NODES: usize = 20;

fn main() {
    let secs: u64 = std::env::var("BENCH_FLASH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    // /proc counts writes to a block device, which a tmpfs /tmp is not.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = dir.path();
    let server = Server::start(d);
    let at_start = write_bytes(server.pid);
    let key = user_with_key(d, "home");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let mut j = client::join(&server.addr, &key, &format!("idle{i}")).await;
            // Read what the server sends (keep-alives, online notices), as a client does.
            nodes.push(tokio::spawn(async move {
                let _keep = j.client;
                while j.stream.next().await.is_some() {}
            }));
        }
        // Let the joins' writes reach the disk before counting.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = write_bytes(server.pid);
        // The joins are flushed writes: a count of nothing means this
        // folder's writes are not counted, and the figure would mean nothing.
        println!("the {NODES} joins wrote {} bytes", before - at_start);
        assert!(before > at_start, "no writes counted for {}: not a disk-backed folder?", d.display());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let written = write_bytes(server.pid) - before;
        let per_day = written as f64 / 1024.0 * 86400.0 / secs as f64;
        println!("{NODES} idle streaming nodes, {secs} s: {written} bytes written");
        figure("flash_kib_per_day", per_day, "KiB", 0.0);
        let alive = nodes.iter().filter(|n| !n.is_finished()).count();
        assert_eq!(alive, NODES, "streams ended during the count: the figure would not be of {NODES} nodes");
    });
    server.stop();
}
