use super::*;
use std::net::TcpListener;
use std::thread;

#[test]
fn ssl_cert_file_wins_and_pem_certificates_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path(), "test-ca");
    let file = ca.to_string_lossy().into_owned();
    let env = move |k: &str| (k == "SSL_CERT_FILE").then(|| file.clone());
    assert_eq!(load_roots(&env).len(), 1);
    let d = dir.path().to_string_lossy().into_owned();
    let env = move |k: &str| (k == "SSL_CERT_DIR").then(|| d.clone());
    // The directory holds the certificate and its key: only the certificate counts.
    assert_eq!(load_roots(&env).len(), 1);
    let none = |k: &str| (k == "SSL_CERT_FILE").then(|| "/nonexistent.pem".to_string());
    assert!(load_roots(&none).is_empty());
}

/// A self-signed certificate for `cn` (also its DNS name) and its key, by openssl.
fn self_signed(dir: &std::path::Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={cn}"), "-addext", &format!("subjectAltName=DNS:{cn}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required for this test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[test]
fn urls_become_targets() {
    let t = Target::parse("https://auth.example.net/application/o/ts/.well-known/openid-configuration?x=1").unwrap();
    assert_eq!(
        t,
        Target {
            tls: true,
            host: "auth.example.net".into(),
            port: 443,
            path: "/application/o/ts/.well-known/openid-configuration?x=1".into()
        }
    );
    assert_eq!(t.host_header(), "auth.example.net");
    let t = Target::parse("http://[::1]:9000").unwrap();
    assert_eq!((t.host.as_str(), t.port, t.path.as_str(), t.host_header()), ("::1", 9000, "/", "[::1]:9000".into()));
    assert_eq!(Target::parse("https://h?x=1").unwrap().path, "/?x=1");
    let t = Target::parse("https://h:8443/a/b/c?q=1").unwrap();
    for (loc, want) in [
        ("https://other/x", "https://other/x"),
        ("//other/p", "https://other/p"),
        ("/root", "https://h:8443/root"),
        ("?z=2", "https://h:8443/a/b/c?z=2"),
        ("d", "https://h:8443/a/b/d"),
        ("../e", "https://h:8443/a/b/../e"),
    ] {
        assert_eq!(t.resolve(loc), want, "{loc}");
    }
    for bad in ["ftp://x/", "/relative", "https://user:pw@host/", "", "http://"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

/// A reader that hands out `parts` one read at a time.
struct Pieces(Vec<Vec<u8>>);

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Ok(0);
        }
        let p = &mut self.0[0];
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        p.drain(..n);
        if p.is_empty() {
            self.0.remove(0);
        }
        Ok(n)
    }
}

fn parse(parts: &[&[u8]]) -> Result<Response, String> {
    read_response(&mut Pieces(parts.iter().map(|p| p.to_vec()).collect()), false)
}

#[test]
fn bodies_are_read_by_their_framing_whatever_the_reads() {
    let r = parse(&[b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n", b"\r\n{\"a\"", b":1}trailing"]).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"a\":1}"[..]));
    let r = parse(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a",
        b"\"\r\n4;ext=1\r\n:1}x\r\n0\r\n\r\n",
    ])
    .unwrap();
    assert_eq!(r.body, b"{\"a\":1}x");
    // Interim answers are skipped, whole or split across reads.
    let r = parse(&[
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early",
        b" Hints\r\nLink: x\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    ])
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (201, &b"{}"[..]));
    let r = parse(&[b"HTTP/1.0 302 Found\r\nLocation: /there\r\n\r\nmoved", b" on"]).unwrap();
    assert_eq!((r.status, r.location.as_deref(), r.body.as_slice()), (302, Some("/there"), &b"moved on"[..]));
}

#[test]
fn bad_and_oversized_answers_are_errors() {
    let big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
    assert!(parse(&[big.as_bytes()]).unwrap_err().contains("larger"));
    let chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY + 1);
    assert!(parse(&[chunk.as_bytes()]).unwrap_err().contains("larger"));
    let endless = vec![b'a'; MAX_BODY + 10];
    assert!(parse(&[b"HTTP/1.1 200 OK\r\n\r\n", &endless]).unwrap_err().contains("larger"));
    let long_head = vec![b'x'; MAX_HEAD + 10];
    assert!(parse(&[b"HTTP/1.1 200 OK\r\nX: ", &long_head]).unwrap_err().contains("too long"));
    assert!(parse(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).unwrap_err().contains("chunk"));
    assert!(parse(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"]).unwrap_err().contains("ended"));
    let no_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n";
    assert!(parse(&[no_crlf]).unwrap_err().contains("chunk"));
    let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n";
    // Where usize is 32 bits the size itself does not parse: an error too.
    let e = parse(&[huge]).unwrap_err();
    assert!(e.contains("larger") || e.contains("chunk size"), "{e}");
    let short = parse(&[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":1}"]).unwrap_err();
    assert!(short.contains("ended after 7 of its 100"), "{short}");
    assert!(parse(&[b"NOT HTTP\r\n\r\n"]).is_err());
    assert!(parse(&[b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]).is_err());
    assert!(parse(&[b"HTTP/1.1 200"]).unwrap_err().contains("closed"));
}

/// Serves each connection with `answer(request bytes)`, on a thread.
fn serve(answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let req = read_request(&mut s);
            let _ = s.write_all(&answer(&req));
        }
    });
    addr
}

/// A request's head and its Content-Length body.
fn read_request(s: &mut impl Read) -> Vec<u8> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        let n = s.read(&mut b).unwrap_or(0);
        if n == 0 {
            return req;
        }
        req.extend_from_slice(&b[..n]);
        if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if req.len() >= end + 4 + len {
                return req;
            }
        }
    }
}

#[test]
fn get_follows_redirects_and_post_sends_a_form() {
    let addr = serve(|req| {
        let req = String::from_utf8_lossy(req).into_owned();
        if req.starts_with("GET /old ") {
            b"HTTP/1.1 301 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_vec()
        } else if req.starts_with("GET /new ") {
            assert!(req.contains("Authorization: Bearer tok\r\n"), "{req}");
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"ok\":1\r\n1\r\n}\r\n0\r\n\r\n".to_vec()
        } else if req.starts_with("POST /token ") {
            let body = req.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            let json = serde_json::json!({ "body": body }).to_string();
            format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{json}", json.len()).into_bytes()
        } else {
            b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec()
        }
    });
    let c = Client::new(Vec::new());
    assert_eq!(c.get_json(&format!("http://{addr}/old"), Some("tok")).unwrap(), serde_json::json!({"ok": 1}));
    let e = c.get_json(&format!("http://{addr}/missing"), None).unwrap_err().to_string();
    assert!(e.contains("HTTP 404"), "{e}");
    let (status, v) = c
        .post_form(&format!("http://{addr}/token"), None, &[("code", "a b&c=d"), ("redirect_uri", "http://x/cb")])
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(v["body"], "code=a%20b%26c%3Dd&redirect_uri=http%3A%2F%2Fx%2Fcb");
}

#[test]
fn a_server_that_never_answers_or_redirects_forever_is_given_up() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts, then says nothing for a minute: far longer than the client
    // waits, so only giving up at the deadline ends the call before it,
    // however slow the machine.
    thread::spawn(move || {
        let held = l.accept();
        thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let mut c = Client::new(Vec::new());
    c.deadline = Duration::from_millis(300);
    let t = Instant::now();
    let e = c.get_json(&format!("http://{addr}/"), None).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(30), "{e}");
    assert!(e.contains("timed out"), "{e}");
    let addr = serve(|_| b"HTTP/1.1 302 Found\r\nLocation: /again\r\n\r\n".to_vec());
    let e = Client::new(Vec::new()).get_json(&format!("http://{addr}/"), None).unwrap_err().to_string();
    assert!(e.contains("redirects"), "{e}");
}

#[test]
fn https_is_verified_against_the_given_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let req = read_request(&mut tls);
            if req.starts_with(b"GET /doc ") {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"tls\":true}");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            } else if req.starts_with(b"GET /cut ") {
                // Framed by the close, and closed without TLS's close_notify:
                // as a network attacker's injected FIN would end it.
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n\r\n{\"tls\":true}");
                let _ = tls.flush();
            } else if req.starts_with(b"GET /down ") {
                let _ = tls.write_all(b"HTTP/1.1 302 Found\r\nLocation: http://localhost/x\r\n\r\n");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    let url = format!("https://localhost:{port}/doc");
    let c = Client::new(certs.clone());
    assert_eq!(c.get_json(&url, None).unwrap(), serde_json::json!({"tls": true}));
    let e = c.get_json(&format!("https://localhost:{port}/cut"), None).unwrap_err().to_string();
    assert!(e.contains("reading the answer"), "{e}");
    let e = c.get_json(&format!("https://localhost:{port}/down"), None).unwrap_err().to_string();
    assert!(e.contains("not followed"), "{e}");
    let e = Client::new(Vec::new()).get_json(&url, None).unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn credentials_stay_with_their_origin_and_cannot_add_headers() {
    let other = serve(|req| {
        let req = String::from_utf8_lossy(req);
        let json = serde_json::json!({ "auth": req.contains("Authorization") }).to_string();
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}", json.len()).into_bytes()
    });
    let first = serve(move |_| format!("HTTP/1.1 302 Found\r\nLocation: http://{other}/x\r\n\r\n").into_bytes());
    let c = Client::new(Vec::new());
    // The redirect goes to another port: another origin, so no token.
    assert_eq!(c.get_json(&format!("http://{first}/"), Some("secret")).unwrap(), serde_json::json!({"auth": false}));
    let e = c.get_json(&format!("http://{first}/"), Some("tok\r\nX-Evil: 1")).unwrap_err().to_string();
    assert!(e.contains("line break"), "{e}");
}
