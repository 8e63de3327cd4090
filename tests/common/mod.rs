//! Runs the real `tinyscale` binary as a process, in a folder of its own.
#![allow(dead_code)]

pub mod attack;
pub mod browser;
pub mod client;
#[cfg(feature = "derp")]
pub mod derp_client;
pub mod idp;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The binary under test and how to start it. Normally this build's binary;
/// `TINYSCALE_TEST_BIN` points the process tests at a router build instead,
/// started through the emulator in `TINYSCALE_TEST_RUNNER` (qemu-user), as
/// tests/run-all.sh does with the mipsel binary.
pub fn tinyscale_argv() -> Vec<String> {
    let bin = match std::env::var("TINYSCALE_TEST_BIN") {
        Ok(b) if !b.is_empty() => std::fs::canonicalize(&b)
            .unwrap_or_else(|e| panic!("TINYSCALE_TEST_BIN={b}: {e}"))
            .to_string_lossy()
            .into_owned(),
        _ => env!("CARGO_BIN_EXE_tinyscale").to_string(),
    };
    match std::env::var("TINYSCALE_TEST_RUNNER") {
        Ok(r) if !r.is_empty() => vec![r, bin],
        _ => vec![bin],
    }
}

/// `tinyscale_argv` as a command, for wrappers such as `nsenter`.
pub fn tinyscale_command(wrap: impl FnOnce(&str) -> Command) -> Command {
    let argv = tinyscale_argv();
    let mut c = wrap(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// A command for the binary with a clean environment, run in `dir`.
pub fn cmd(dir: &Path) -> Command {
    let mut c = tinyscale_command(|p| Command::new(p));
    c.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// Whether a tinyscale process crashed rather than exited: the router builds
/// abort on a panic at once (SIGILL or SIGTRAP, nothing printed), other builds
/// exit 101 after printing "panicked". qemu-user passes the guest's signal on.
pub fn crashed(status: std::process::ExitStatus, stderr: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal().is_some() || status.code() == Some(101) || stderr.contains("panicked")
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    let out = cmd(dir).args(args).stdin(Stdio::null()).output().expect("run tinyscale");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!crashed(out.status, &stderr), "tinyscale {args:?} crashed ({}):\n{stderr}", out.status);
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "tinyscale {args:?} failed ({}):\n{}{}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tinyscale {args:?} printed non-JSON ({e}):\n{out}"))
}

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub addr: String,
    log: Arc<Mutex<String>>,
    /// Set when the test itself stops the server (kill -9, SIGTERM).
    stopped_by_test: bool,
}

impl Server {
    /// Starts `serve` in `dir` with `env`, and waits for its "listening on" line.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut c = cmd(dir);
        c.arg("serve").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Server::spawn(dir, c)
    }

    /// Runs a prepared `serve` command and waits for its "listening on" line.
    pub fn spawn(dir: &Path, mut c: Command) -> Server {
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tinyscale serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("tinyscale serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Server { child, dir: dir.to_path_buf(), addr, log, stopped_by_test: false }
    }

    /// Starts on a free port (via TINYSCALE_LISTEN_ADDR).
    pub fn start_free(dir: &Path) -> Server {
        Server::start(dir, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")])
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the log holds `needle`: lines are read on
    /// their own thread, so the ones after "listening on" may still be on their way.
    pub fn wait_log(&self, needle: &str) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn host_port(&self) -> String {
        self.addr.split("://").nth(1).unwrap_or(&self.addr).to_string()
    }

    /// Fails the test if the server is gone without the test stopping it.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            panic!("tinyscale serve ended by itself ({status}):\n{}", self.log());
        }
    }

    pub fn kill9(mut self) {
        self.assert_alive();
        self.stopped_by_test = true;
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and the full log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.assert_alive();
        self.stopped_by_test = true;
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(20)).expect("serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A crash during the test (an abort prints nothing on the router
        // builds) fails it, unless it is failing already.
        if !self.stopped_by_test && !std::thread::panicking() {
            self.assert_alive();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < t {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(host_port: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(host_port).unwrap_or_else(|e| panic!("connect {host_port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A required external program: its absence fails the test (never a silent skip).
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is required for this test and is not installed (tests/run-all.sh installs it)");
}

/// A self-signed P-256 certificate for `localhost`, as `cert.pem` and `key.pem` in `dir`.
pub fn self_signed_cert(dir: &Path) {
    require_tool("openssl");
    let gen = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(gen.status.success(), "openssl: {}", String::from_utf8_lossy(&gen.stderr));
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}
