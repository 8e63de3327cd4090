//! The outgoing HTTP client (the OIDC provider, `derp.urls`): blocking
//! HTTP/1.1 over std's sockets (callers run it in `spawn_blocking`), rustls
//! with ring, and the system's CA bundle (`SSL_CERT_FILE`/`SSL_CERT_DIR`
//! honoured) so an authentik behind a private CA works and no root
//! certificates are compiled into the binary.
//!
//! Its own, instead of ureq, for size (about 90 KB): the responses are
//! parsed by httparse, which hyper already links, and the rest is one
//! request per connection (`Connection: close`) with a deadline for the
//! whole exchange and a cap on what is read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// Where distributions and OpenWrt's ca-bundle put the trusted roots.
const BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem", "/etc/pki/tls/certs/ca-bundle.crt"];
/// Largest document read from the provider.
const MAX_BODY: usize = 1024 * 1024;
/// Largest status line and headers.
const MAX_HEAD: usize = 32 * 1024;
/// The whole exchange, from the name lookup to the last byte.
const DEADLINE: Duration = Duration::from_secs(15);
/// Redirects a GET follows (discovery documents behind a moved path).
const MAX_REDIRECTS: usize = 5;

fn pem_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(f) = env("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    if let Some(dirs) = env("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
        let mut out = Vec::new();
        for d in dirs.split(':') {
            if let Ok(rd) = std::fs::read_dir(d) {
                out.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()));
            }
        }
        return out;
    }
    BUNDLES.iter().map(PathBuf::from).filter(|p| p.is_file()).take(1).collect()
}

/// The trusted roots; an empty list means HTTPS to the provider will fail.
pub fn load_roots(env: &dyn Fn(&str) -> Option<String>) -> Vec<CertificateDer<'static>> {
    let mut roots = Vec::new();
    for f in pem_files(env) {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        roots.extend(CertificateDer::pem_slice_iter(&bytes).flatten());
    }
    roots
}

#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    deadline: Duration,
}

#[derive(Debug)]
pub struct HttpError(pub String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a request goes, from an `http://` or `https://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("only http:// and https:// URLs can be fetched".into()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("credentials in a URL are not sent".into());
        }
        Ok(Target {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: match uri.path_and_query().map_or("", |p| p.as_str()) {
                p if p.starts_with('/') => p.to_string(),
                p => format!("/{p}"),
            },
        })
    }

    /// Where a redirect's `Location` points, from this target (RFC 3986
    /// reference resolution, without removing dot segments: servers do).
    fn resolve(&self, loc: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let origin = format!("{scheme}://{}", self.host_header());
        let path = self.path.split(['?', '#']).next().unwrap_or("/");
        if loc.contains("://") {
            loc.to_string()
        } else if let Some(rest) = loc.strip_prefix("//") {
            format!("{scheme}://{rest}")
        } else if loc.starts_with('/') {
            format!("{origin}{loc}")
        } else if loc.starts_with('?') {
            format!("{origin}{path}{loc}")
        } else {
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{origin}{dir}{loc}")
        }
    }

    /// The Host header: the port only when it is not the scheme's.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, p) => format!("{host}:{p}"),
        }
    }
}

/// A request's method, extra headers and body (`Content-Type`, bytes).
struct Request<'a> {
    method: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<(&'a str, &'a [u8])>,
}

/// What came back: the status and the body, decoded from its framing.
#[derive(Debug)]
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// A socket whose every read and write ends by the exchange's deadline.
struct Timed<S> {
    inner: S,
    by: Instant,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

fn left(by: Instant) -> io::Result<Duration> {
    let d = by.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(timed_out());
    }
    Ok(d)
}

/// A socket timeout shows as EAGAIN ("resource temporarily unavailable"),
/// which would puzzle whoever reads the log: it is the deadline.
fn deadline_as_timeout<T>(r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| if e.kind() == io::ErrorKind::WouldBlock { timed_out() } else { e })
}

impl Read for Timed<TcpStream> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.set_read_timeout(Some(left(self.by)?))?;
        deadline_as_timeout(self.inner.read(buf))
    }
}

impl Write for Timed<TcpStream> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.set_write_timeout(Some(left(self.by)?))?;
        deadline_as_timeout(self.inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The addresses of `host`, by the deadline: the system's lookup has no
/// timeout of its own, so it runs on a thread of its own, left behind if late.
fn lookup(host: &str, port: u16, by: Instant) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new().name("lookup".into()).stack_size(128 * 1024).spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    })?;
    rx.recv_timeout(left(by)?).map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the name lookup timed out"))?
}

fn connect(t: &Target, by: Instant) -> io::Result<Timed<TcpStream>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in lookup(&t.host, t.port, by)? {
        match TcpStream::connect_timeout(&addr, left(by)?) {
            Ok(s) => return Ok(Timed { inner: s, by }),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn head(t: &Target, req: &Request) -> Vec<u8> {
    let mut h = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tinyscale/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        req.method,
        t.path,
        t.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in req.headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ctype, body)) = req.body {
        h.push_str(&format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n", body.len()));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Reads one response from `r`, which ends with the connection; `tls`:
/// the end must be TLS's own (close_notify) where only the close frames
/// the body, since a dropped connection would look the same.
fn read_response(r: &mut impl Read, tls: bool) -> Result<Response, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut scanned: usize = 0;
    let (status, location, framing, at) = loop {
        // Parsed once the blank line is in: a head sent a byte at a time
        // is not parsed again at every byte.
        let blank = buf[scanned.saturating_sub(3)..].windows(4).any(|w| w == b"\r\n\r\n");
        scanned = buf.len();
        if blank {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(at) = resp.parse(&buf).map_err(|e| format!("a malformed answer: {e}"))? {
                let status = resp.code.unwrap_or(0);
                if (100..200).contains(&status) && status != 101 {
                    // 100 Continue, 103 Early Hints: the answer follows.
                    buf.drain(..at);
                    scanned = 0;
                    continue;
                }
                let get = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let chunked = get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
                let framing = match (chunked, get("content-length")) {
                    (true, _) => Framing::Chunked,
                    (false, Some(n)) => Framing::Length(n.parse().map_err(|_| "a bad Content-Length")?),
                    (false, None) => Framing::Close,
                };
                break (status, get("location"), framing, at);
            }
        }
        if buf.len() > MAX_HEAD {
            return Err("the answer's headers are too long".into());
        }
        let n = read_some(r, &mut chunk, false)?;
        if n == 0 {
            return Err("the connection closed before the answer's headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(at);
    let body = match framing {
        Framing::Length(n) if n > MAX_BODY => return Err(format!("the answer is larger than {MAX_BODY} bytes")),
        Framing::Length(n) => {
            let mut body = rest;
            read_to(r, &mut body, n, false)?;
            if body.len() < n {
                return Err(format!("the answer ended after {} of its {n} bytes", body.len()));
            }
            body.truncate(n);
            body
        }
        Framing::Close => {
            let mut body = rest;
            read_to(r, &mut body, MAX_BODY + 1, tls)?;
            if body.len() > MAX_BODY {
                return Err(format!("the answer is larger than {MAX_BODY} bytes"));
            }
            body
        }
        Framing::Chunked => dechunk(r, rest)?,
    };
    Ok(Response { status, location, body })
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// One read. Unless `strict`, a peer that closes TLS without saying so ends
/// the stream too: the framing then says whether anything is missing.
fn read_some(r: &mut impl Read, buf: &mut [u8], strict: bool) -> Result<usize, String> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !strict => return Ok(0),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
}

/// Reads into `out` until it holds `want` bytes or the stream ends.
fn read_to(r: &mut impl Read, out: &mut Vec<u8>, want: usize, strict: bool) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    while out.len() < want {
        let n = read_some(r, &mut chunk[..(want - out.len()).min(4096)], strict)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Decodes a chunked body whose first bytes are `have`.
fn dechunk(r: &mut impl Read, mut have: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    let mut more = |have: &mut Vec<u8>| -> Result<(), String> {
        let before = have.len();
        read_to(r, have, before + 4096, false)?;
        if have.len() == before {
            return Err("the answer ended inside its chunks".into());
        }
        Ok(())
    };
    loop {
        let line_end = loop {
            if let Some(i) = have[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + i;
            }
            if have.len() - pos > 1024 {
                return Err("a chunk header is too long".into());
            }
            more(&mut have)?;
        };
        let line = std::str::from_utf8(&have[pos..line_end]).map_err(|_| "a bad chunk header")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("a bad chunk size {size:?}"))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, if any, are not read: the connection closes anyway.
            return Ok(body);
        }
        // `body` never holds more than MAX_BODY: no overflow, even where usize is 32 bits.
        if size > MAX_BODY - body.len() {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        while have.len() < pos + size + 2 {
            more(&mut have)?;
        }
        if &have[pos + size..pos + size + 2] != b"\r\n" {
            return Err("a chunk does not end where its size says".into());
        }
        body.extend_from_slice(&have[pos..pos + size]);
        pos += size + 2;
        // What was consumed is dropped, so `have` stays near one chunk.
        have.drain(..pos);
        pos = 0;
    }
}

/// `application/x-www-form-urlencoded`, as browsers write it.
fn form_encode(form: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');
    let pairs: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, FORM), utf8_percent_encode(v, FORM)))
        .collect();
    pairs.join("&")
}

impl Client {
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Client {
        let mut store = rustls::RootCertStore::empty();
        // A root that does not parse is skipped, as a CA bundle's odd entry should be.
        let _ = store.add_parsable_certificates(roots);
        // Invariant: ring's provider supports rustls's default versions
        // (TLS 1.2 and 1.3), the only way this builder step can fail.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        Client { tls: Arc::new(tls), deadline: DEADLINE }
    }

    fn exchange(&self, t: &Target, req: &Request, by: Instant) -> Result<Response, String> {
        // A value with a line break would start a header of its own.
        if req.headers.iter().any(|(_, v)| v.contains(['\r', '\n'])) {
            return Err("a header value holds a line break".into());
        }
        let mut tcp = connect(t, by).map_err(|e| format!("connecting: {e}"))?;
        let head = head(t, req);
        let body = req.body.map_or(&[][..], |(_, b)| b);
        if !t.tls {
            tcp.write_all(&head).and_then(|_| tcp.write_all(body)).map_err(|e| format!("sending: {e}"))?;
            return read_response(&mut tcp, false);
        }
        let name = ServerName::try_from(t.host.clone()).map_err(|_| format!("{:?} is not a host name", t.host))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).map_err(|e| format!("TLS: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(&head).and_then(|_| tls.write_all(body)).map_err(|e| format!("sending: {e}"))?;
        read_response(&mut tls, true)
    }

    /// One request, following a GET's redirects; its headers (credentials)
    /// go only to the origin it was made for.
    fn request(&self, url: &str, req: &Request) -> Result<Response, HttpError> {
        let by = Instant::now() + self.deadline;
        let origin = Target::parse(url).map_err(|e| HttpError(format!("{url}: {e}")))?;
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let t = Target::parse(&url).map_err(|e| HttpError(format!("{url}: {e}")))?;
            let same = (t.tls, &t.host, t.port) == (origin.tls, &origin.host, origin.port);
            let req = &Request { headers: if same { req.headers } else { &[] }, ..*req };
            let resp = self.exchange(&t, req, by).map_err(|e| HttpError(format!("{url}: {e}")))?;
            match (resp.status, &resp.location) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) if req.method == "GET" => {
                    url = t.resolve(loc);
                    if t.tls && !url.starts_with("https://") {
                        return Err(HttpError(format!("{url}: a redirect from https to plain http is not followed")));
                    }
                }
                _ => return Ok(resp),
            }
        }
        Err(HttpError(format!("{url}: more than {MAX_REDIRECTS} redirects")))
    }

    /// GET a JSON document; non-2xx or non-JSON is an error.
    pub fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, HttpError> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let resp = self.request(url, &Request { method: "GET", headers: &headers, body: None })?;
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        match resp.status {
            200..=299 if !v.is_null() => Ok(v),
            s => Err(HttpError(format!("{url} answered HTTP {s}"))),
        }
    }

    /// POST a form (the token request); returns the status and JSON body.
    pub fn post_form(
        &self,
        url: &str,
        basic_auth: Option<String>,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), HttpError> {
        let headers: Vec<(&str, &str)> = basic_auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let body = form_encode(form);
        let body = Some(("application/x-www-form-urlencoded", body.as_bytes()));
        let resp = self.request(url, &Request { method: "POST", headers: &headers, body })?;
        Ok((resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null)))
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
