//! A closed network namespace with the real Tailscale client
//! (../shared/realclient), for tests that need real clients.
//!
//! One process holds the namespace (`netns.sh sleep`); everything else runs
//! in it through `nsenter`. The admin socket is a file, so the CLI works from
//! outside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/realclient")
}

/// Where tests/run-all.sh installs the client.
pub fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/realclient")
}

pub struct Netns {
    holder: Child,
    pid: String,
}

impl Netns {
    /// A namespace with loopback and the veth pair (192.0.2.1/.2) clients need to reach Running.
    pub fn new() -> Netns {
        let caddy = client_dir().join("bin/caddy");
        assert!(
            caddy.exists(),
            "the real client is not installed at {} (tests/run-all.sh installs it)",
            caddy.display()
        );
        let holder = Command::new(shared().join("netns.sh"))
            .args(["sleep", "3600"])
            .env("NETNS_VETH", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("netns.sh (needs root)");
        let pid = holder.id().to_string();
        let ns = Netns { holder, pid };
        let start = Instant::now();
        loop {
            let o = ns.run("ip", &["-4", "addr", "show", "dev", "tsv1"]);
            if String::from_utf8_lossy(&o.stdout).contains("192.0.2.2") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the namespace did not come up (needs root)");
            std::thread::sleep(Duration::from_millis(50));
        }
        ns
    }

    /// The namespace holder's pid, for `nsenter -t`.
    pub fn pid(&self) -> String {
        self.pid.clone()
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid, "-n", "--", program]);
        c.env("REALCLIENT_DIR", client_dir());
        c
    }

    /// `tinyscale serve` in `dir`, inside the namespace.
    pub fn serve(&self, dir: &Path) -> super::Server {
        let mut c = super::tinyscale_command(|p| self.command(p));
        c.arg("serve").current_dir(dir);
        super::Server::spawn(dir, c)
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).stdin(Stdio::null()).output().expect("nsenter")
    }

    /// Starts a real node; `auth_key` `None` registers interactively.
    pub fn start_node(&self, name: &str, control: &str, auth_key: Option<&str>, dir: &Path) -> Node {
        self.start_node_env(name, control, auth_key, dir, &[])
    }

    /// Starts a real node with extra environment for the client (e.g. TS_DEBUG_* knobs).
    pub fn start_node_env(
        &self,
        name: &str,
        control: &str,
        auth_key: Option<&str>,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Node {
        // run-node.sh writes the key into a Caddyfile; `""` is Caddy's empty argument.
        let key = auth_key.unwrap_or("\"\"");
        let mut c = self.command(shared().join("run-node.sh").to_str().unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.args([name, control, key]).arg(dir).output().unwrap();
        assert!(
            o.status.success(),
            "run-node.sh {name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Node { dir: dir.to_path_buf() }
    }

    /// `curl` inside the namespace; returns the body.
    pub fn curl(&self, args: &[&str]) -> String {
        let mut a = vec!["-s", "-m", "20"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&self.run("curl", &a).stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub struct Node {
    pub dir: PathBuf,
}

impl Node {
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("node.log")).unwrap_or_default()).into_owned()
    }

    pub fn proxy_port(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.port")).unwrap_or_default().trim().to_string()
    }

    pub fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("caddy.pid")).ok().map(|s| s.trim().to_string())
    }

    /// Waits for ipn state Running.
    pub fn wait_running(&self, secs: u64) -> bool {
        Command::new(shared().join("node-status.sh"))
            .arg(&self.dir)
            .args(["--wait", &secs.to_string()])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits until the log holds a line matching `pred`.
    pub fn wait_log(&self, secs: u64, pred: impl Fn(&str) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if self.log().lines().any(&pred) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// The peer count of the newest netmap the node logged.
    pub fn peers(&self) -> Option<usize> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("magicsock: got updated network map; "))?;
        let rest = line.split("got updated network map; ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    }

    /// Waits until the newest netmap has `n` peers.
    pub fn wait_peers(&self, n: usize, secs: u64) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if self.peers() == Some(n) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(&pid).status();
            std::thread::sleep(Duration::from_secs(2));
            // Nodes that relayed through DERP may hang on SIGTERM (realclient README).
            let _ = Command::new("kill").args(["-9", &pid]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid]).stderr(Stdio::null()).status();
        }
    }
}
