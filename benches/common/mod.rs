//! What both benchmarks need: the server binary under test and its RSS.

/// The server under test: BENCH_BIN (e.g. the static musl build a router
/// runs, whose allocator differs from glibc's), else this build's binary.
/// Made absolute, since the server runs from a scratch folder.
pub fn bin() -> String {
    match std::env::var("BENCH_BIN") {
        Ok(b) if !b.is_empty() => {
            std::fs::canonicalize(&b).unwrap_or_else(|e| panic!("BENCH_BIN={b}: {e}")).to_string_lossy().into_owned()
        }
        _ => env!("CARGO_BIN_EXE_tinyscale").to_string(),
    }
}

/// The resident set of `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
