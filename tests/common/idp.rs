//! The real OpenID provider of ../shared/test-idp (node oidc-provider, laid
//! out like authentik), installed into target/idp by tests/run-all.sh.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CLIENT_ID: &str = "tinyscale";
pub const SECRET: &str = "tinyscale-test-secret-0123456789abcdef";

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/idp")
}

pub struct Idp {
    child: Child,
    pub port: u16,
    pub issuer: String,
}

impl Idp {
    /// Starts the provider on a free port; `env` adds settings (ALG, TOKEN_AUTH, …).
    pub fn start(redirect_uri: &str, env: &[(&str, &str)]) -> Idp {
        Idp::start_with(None, redirect_uri, env)
    }

    /// Starts it with `node` given as a prepared command (e.g. nsenter … node,
    /// to run inside a test namespace).
    pub fn start_with(node: Option<Command>, redirect_uri: &str, env: &[(&str, &str)]) -> Idp {
        let server = dir().join("server.mjs");
        assert!(
            dir().join("node_modules/oidc-provider").exists(),
            "the test IdP is not installed in {} (tests/run-all.sh installs it)",
            dir().display()
        );
        let mut c = node.unwrap_or_else(|| Command::new("node"));
        c.arg(server)
            .args(["--port", "0"])
            .env("REDIRECT_URIS", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("node is required for the OIDC tests");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        // A hang guard, not a speed check: node starts in a second, but under
        // a loaded test run (2 cores, 8 tests at once) it took over 20 s.
        let ready = rx.recv_timeout(Duration::from_secs(90)).expect("the test IdP did not start");
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
        Idp { child, port: v["port"].as_u64().unwrap() as u16, issuer: v["issuer"].as_str().unwrap().to_string() }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tinyscale in `d` on a free port, logging in through a fresh provider
/// started with `env`: `top` is more top-level config, `oidc` more lines of
/// the `oidc:` block (indented by two). Returns the provider, the server
/// and the server's URL.
#[allow(dead_code)] // not every test binary logs in
pub fn server_with_provider(d: &Path, env: &[(&str, &str)], top: &str, oidc: &str) -> (Idp, super::Server, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&format!("{url}/oidc/callback"), env);
    let cfg = format!(
        "server_url: {url}\nlisten_addr: 127.0.0.1:{port}\n{top}oidc:\n  issuer: \"{iss}\"\n  client_id: \"{CLIENT_ID}\"\n  client_secret: \"{SECRET}\"\n{oidc}",
        iss = idp.issuer,
    );
    std::fs::write(d.join("config.yaml"), cfg).unwrap();
    let server = super::Server::start(d, &[], &[]);
    (idp, server, url)
}

/// A free TCP port on 127.0.0.1 (tinyscale's server_url must be known before it starts).
///
/// The port is released before tinyscale binds it, so it must not be one the
/// kernel hands out for port 0 (32768–60999 by default), which the many test
/// processes running at once (nextest) take all the time: it is picked at
/// random below that range and checked free.
pub fn free_port() -> u16 {
    let mut seed = [0u8; 2];
    for _ in 0..1000 {
        tinyscale::secrets::random_bytes(&mut seed).unwrap();
        let port = 20_000 + u16::from_le_bytes(seed) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// A browser: curl with a cookie jar.
pub struct Browser {
    jar: PathBuf,
    wrap: Option<Box<dyn Fn() -> Command>>,
}

pub struct Page {
    pub status: u16,
    pub url: String,
    pub location: String,
    pub body: String,
}

impl Browser {
    pub fn new(dir: &Path) -> Browser {
        Browser { jar: dir.join(format!("jar-{}", super::idp::free_port())), wrap: None }
    }

    pub fn inside(dir: &Path, wrap: impl Fn() -> Command + 'static) -> Browser {
        Browser { jar: dir.join(format!("jar-{}", super::idp::free_port())), wrap: Some(Box::new(wrap)) }
    }

    /// curl with this browser's cookie jar.
    fn command(&self) -> Command {
        let mut c = match &self.wrap {
            Some(w) => {
                let mut c = w();
                c.arg("curl");
                c
            }
            None => Command::new("curl"),
        };
        let jar = self.jar.to_str().unwrap();
        c.args(["-sS", "-m", "30", "-b", jar, "-c", jar]);
        c
    }

    fn curl(&self, args: &[&str]) -> Page {
        let mut c = self.command();
        c.args(["-w", "\n%{http_code} %{url_effective} %{redirect_url}"]);
        c.args(args);
        let o = c.output().expect("curl is required");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut t = tail.split(' ');
        let status = t.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Page { status, url: t.next().unwrap_or("").into(), location: t.next().unwrap_or("").into(), body: body.into() }
    }

    /// GET, following every redirect.
    pub fn get(&self, url: &str) -> Page {
        self.curl(&["-L", url])
    }

    /// GET one hop; returns the response head (status line and headers) and the body.
    pub fn get_with_head(&self, url: &str) -> (String, String) {
        let o = self.command().args(["-D", "-", url]).output().expect("curl is required");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_string(), body.to_string())
    }

    /// GET one hop, without following.
    pub fn get_once(&self, url: &str) -> Page {
        self.curl(&[url])
    }

    pub fn post(&self, url: &str, form: &str) -> Page {
        self.curl(&["-d", form, url])
    }

    /// Follows redirects by hand until the next hop starts with `prefix`;
    /// returns that URL (e.g. the callback with its code, not yet visited).
    pub fn walk_until(&self, url: &str, prefix: &str) -> String {
        let mut next = url.to_string();
        for _ in 0..10 {
            let p = self.get_once(&next);
            assert!(!p.location.is_empty(), "no redirect from {next}: {} {}", p.status, p.body);
            if p.location.starts_with(prefix) {
                return p.location;
            }
            next = p.location;
        }
        panic!("never reached {prefix}");
    }
}

/// The CSRF token of a confirmation page, and the form's action.
pub fn confirm_form(body: &str) -> (String, String) {
    let action = body.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a form").to_string();
    let csrf =
        body.split("name=csrf value=\"").nth(1).and_then(|s| s.split('"').next()).expect("a csrf input").to_string();
    (action, csrf)
}

/// Inside the network namespace `ns` (control at 127.0.0.1:18080 there):
/// a fresh provider, the local DERP map and a config that logs in as
/// `login_hint`, with `top` as more top-level config. Returns the provider
/// and the server URL; the caller starts tinyscale (`ns.serve(d)`).
#[allow(dead_code)] // not every test binary runs real clients
pub fn in_namespace(ns: &super::netns::Netns, d: &Path, top: &str, login_hint: &str) -> (Idp, &'static str) {
    let url = "http://127.0.0.1:18080";
    let idp = Idp::start_with(Some(ns.command("node")), &format!("{url}/oidc/callback"), &[]);
    std::fs::write(
        d.join("derp.yaml"),
        "regions:\n  900:\n    regionid: 900\n    regioncode: local\n    regionname: local\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        ipv6: none\n        stunport: -1\n        derpport: 3340\n",
    )
    .unwrap();
    std::fs::write(
        d.join("config.yaml"),
        format!(
            "server_url: {url}\nlisten_addr: 127.0.0.1:18080\nderp:\n  paths: [derp.yaml]\n{top}oidc:\n  issuer: \"{}\"\n  client_id: {CLIENT_ID}\n  client_secret: {SECRET}\n  extra_params:\n    login_hint: {login_hint}\n  allowed_groups: [/headscale]\n  pkce:\n    enabled: true\n  strip_email_domain: true\n",
            idp.issuer
        ),
    )
    .unwrap();
    (idp, url)
}
