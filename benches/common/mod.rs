//! What the process benchmarks share: the server binary under test, its
//! start and stop, and what /proc says of it.
// Each benchmark uses a part of this module.
#![allow(dead_code)]

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

/// The server under test, serving from `dir` on embedded defaults and a
/// loopback port; `addr` is the `host:port` it logged.
pub struct Server {
    pub child: std::process::Child,
    pub pid: u32,
    pub addr: String,
}

impl Server {
    pub fn start(dir: &std::path::Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// [`Server::start`] with config keys set through the environment.
    /// BENCH_SERVER_LOG=<file> keeps the server's log there.
    pub fn start_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(bin())
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Drained to the end, so the server never blocks on a full pipe.
        let mut log = std::env::var("BENCH_SERVER_LOG").ok().and_then(|p| std::fs::File::create(p).ok());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the server did not start");
        Server { pid: child.id(), child, addr }
    }

    /// Stops the server as its service manager does (SIGTERM) and waits.
    pub fn stop(mut self) {
        term(self.pid);
        let _ = self.child.wait();
    }
}

fn term(pid: u32) {
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Runs the CLI against the server in `dir`; its standard output.
pub fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new(bin()).args(args).current_dir(dir).env_clear().output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Makes `user` and a reusable pre-auth key of it, through the CLI.
pub fn user_with_key(dir: &std::path::Path, user: &str) -> String {
    cli(dir, &["users", "create", user]);
    let key: serde_json::Value =
        serde_json::from_str(&cli(dir, &["preauthkeys", "create", "--user", user, "--reusable", "-o", "json"]))
            .unwrap();
    key["key"].as_str().unwrap().to_string()
}

/// Bytes `pid` has caused to be written to storage (`write_bytes` in /proc).
pub fn write_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// CPU time `pid` has used, user and system, in microseconds.
pub fn cpu_us(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is 3rd, utime 14th, stime 15th.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    let hz = std::process::Command::new("getconf").arg("CLK_TCK").output().ok();
    let hz: u64 = hz.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).unwrap_or(100).max(1);
    f.iter().sum::<u64>() * 1_000_000 / hz
}

/// One figure as scripts read it: `figure <name> <value> <unit> floor <v> ratio <r>`.
pub fn figure(name: &str, value: f64, unit: &str, floor: f64) {
    let ratio = if floor > 0.0 { value / floor } else { 0.0 };
    println!("figure {name} {value:.3} {unit} floor {floor:.3} ratio {ratio:.3}");
}
