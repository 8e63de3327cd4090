//! A real browser (Debian's chromium, headless) driven by
//! tests/browser/drive.mjs through puppeteer-core, both installed by
//! tests/run-all.sh: one JSON command a line, one JSON answer a line.
#![allow(dead_code)] // not every test binary uses every step

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use serde_json::{json, Value};

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser")
}

/// Where screenshots go, for a person to look at.
pub fn screenshots() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Chromium {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    prefix: String,
}

impl Chromium {
    /// Starts the browser with `node` (`Command::new("node")`, or one run
    /// inside a test namespace); `prefix` names this test's screenshots.
    pub fn start(mut node: Command, prefix: &str) -> Chromium {
        super::require_tool("chromium");
        assert!(
            dir().join("node_modules/puppeteer-core").exists(),
            "puppeteer-core is not installed in {} (tests/run-all.sh installs it)",
            dir().display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/drive.mjs");
        // Resolved from target/browser/node_modules; one copy per test, as tests run at once.
        let runner = dir().join(format!("drive-{prefix}.mjs"));
        std::fs::copy(&script, &runner).unwrap();
        node.arg(&runner).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = node.spawn().expect("node is required for the browser tests");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut c = Chromium { child, stdin, lines, prefix: prefix.to_string() };
        let ready = c.answer();
        assert_eq!(ready["ready"], true, "{ready}");
        c
    }

    fn answer(&mut self) -> Value {
        // A hang guard, not a speed check: a page load under a loaded test run.
        let line = self.lines.recv_timeout(Duration::from_secs(120)).expect("the browser stopped answering");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON from the browser ({e}): {line}"))
    }

    pub fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").expect("the browser is gone");
        let a = self.answer();
        assert_eq!(a["ok"], true, "browser step {cmd} failed: {a}");
        a
    }

    /// Opens `url`; the final status and URL (after redirects).
    pub fn goto(&mut self, url: &str) -> (u16, String) {
        let a = self.call(json!({"op": "goto", "url": url}));
        (a["status"].as_u64().unwrap_or(0) as u16, a["url"].as_str().unwrap_or("").to_string())
    }

    pub fn html(&mut self) -> String {
        self.call(json!({"op": "html"}))["html"].as_str().unwrap_or("").to_string()
    }

    pub fn screenshot(&mut self, name: &str) {
        let path = screenshots().join(format!("{}-{name}.png", self.prefix));
        self.call(json!({"op": "screenshot", "path": path}));
    }

    /// Fills the field at `selector`.
    pub fn set(&mut self, selector: &str, value: &str) {
        self.call(json!({"op": "set", "selector": selector, "value": value}));
    }

    /// Clicks `selector` and waits for the page it leads to.
    pub fn click(&mut self, selector: &str) -> (u16, String) {
        let a = self.call(json!({"op": "click", "selector": selector}));
        (a["status"].as_u64().unwrap_or(0) as u16, a["url"].as_str().unwrap_or("").to_string())
    }

    pub fn eval(&mut self, js: &str) -> Value {
        self.call(json!({"op": "eval", "js": js}))["value"].clone()
    }

    pub fn cookies(&mut self) -> Vec<String> {
        let a = self.call(json!({"op": "cookies"}));
        a["cookies"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_string)).collect()
    }

    /// How wide the page is drawn, in CSS pixels (the viewport is 360).
    pub fn width(&mut self) -> u64 {
        self.call(json!({"op": "width"}))["value"].as_u64().unwrap_or(0)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
