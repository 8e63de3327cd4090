//! The main HTTP(S) listener: `/health`, and the control protocol's plain-HTTP
//! side (`/key`, the `/ts2021` upgrade, `/register/<id>`). `/oidc` and `/derp`
//! join it in later issues.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "oidc")]
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::admission::Admission;
use crate::control::Control;
#[cfg(feature = "derp")]
use crate::derp::relay::Relay;
#[cfg(feature = "oidc")]
use crate::oidc::Oidc;

/// Slow clients may not hold a connection open by trickling headers (or
/// by idling between requests: the timer runs while hyper waits for a head).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may last until it is upgraded, TLS handshake
/// included. hyper's header timer runs only while it reads a head: a client
/// that pipelines requests and never reads the answers leaves hyper writing
/// with no timer at all. Past it the connection is asked to close, and
/// dropped [`CLOSE_GRACE`] later.
pub const SHORT_LIFETIME: Duration = Duration::from_secs(60);
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// hyper's read buffer, which holds a request head: 32 KiB is room for any
/// real one (cookies included) and bounds what a slow client costs.
const MAX_HEAD: usize = 32 * 1024;

/// What a build with the optional features serves besides the control protocol.
#[derive(Clone, Default)]
pub struct Extras {
    #[cfg(feature = "oidc")]
    pub oidc: Option<Arc<Oidc>>,
    #[cfg(feature = "derp")]
    pub relay: Option<Arc<Relay>>,
    /// Failed API key attempts per source, one table for every listener.
    pub api_failures: Arc<crate::api::auth::Failures>,
    /// The admin web UI at `/admin`.
    pub admin: Option<Arc<crate::web::admin::Admin>>,
}

pub struct Http {
    pub control: Arc<Control>,
    pub extras: Extras,
    pub tls: Option<super::tls_stream::TlsAcceptor>,
    /// Shared by every listener.
    pub admission: Arc<Admission>,
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Holds the connection's place under the caps for as long as any part of
/// the connection lives, the upgraded Noise or DERP stream included.
pub type Slot = Arc<super::admission::Slot>;

impl crate::control::Place for super::admission::Slot {
    fn stay(&self, keyless: bool) -> bool {
        self.long_lived(keyless).inspect_err(|why| log::debug!("an upgrade refused: {why}")).is_ok()
    }

    fn upgraded(&self) {
        super::admission::Slot::upgraded(self);
    }
}

/// The confirmation form is a few hundred bytes, and comes at once.
#[cfg(feature = "oidc")]
const MAX_FORM: usize = 16 * 1024;
#[cfg(feature = "oidc")]
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// An upgrade refused for want of a long-lived place: the connection closes.
#[cfg(feature = "derp")]
fn busy() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "server busy; retry\n");
    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}

async fn route(
    req: Request<Incoming>,
    app: Arc<App>,
    slot: Slot,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    #[cfg(feature = "oidc")]
    let cookies = req.headers().get(hyper::header::COOKIE).and_then(|v| v.to_str().ok()).map(str::to_string);
    #[cfg(feature = "derp")]
    if let Some(relay) = &app.extras.relay {
        match (req.method().as_str(), path.as_str()) {
            ("GET", "/derp") => return Ok(derp_upgrade(req, relay, slot, peer)),
            ("GET" | "HEAD", "/derp/probe" | "/derp/latency-check") => {
                return Ok(text(StatusCode::OK, "text/plain; charset=utf-8", ""))
            }
            ("GET", "/generate_204") => return Ok(generate_204(&req)),
            _ => {}
        }
    }
    if let Some(admin) = &app.extras.admin {
        if path == "/admin" || path.starts_with("/admin/") {
            return Ok(admin.handle(req, peer).await);
        }
        // A signed-in admin approves a waiting device from its login URL at once.
        if let Some(id) = path.strip_prefix("/register/").filter(|_| req.method() == hyper::Method::GET) {
            let cookie = req.headers().get(hyper::header::COOKIE).and_then(|v| v.to_str().ok());
            if let Some(page) = admin.register_page(id, cookie).await {
                return Ok(page);
            }
        }
    }
    #[cfg(feature = "oidc")]
    if let Some(o) = app.extras.oidc.as_ref().filter(|o| o.ready()).cloned() {
        match (req.method().as_str(), path.as_str()) {
            ("GET", "/oidc/callback") => {
                return Ok(o.callback(req.uri().query().unwrap_or(""), cookies.as_deref(), peer).await)
            }
            ("POST", p) if p.starts_with("/register/confirm/") => {
                let id = p["/register/confirm/".len()..].to_string();
                let form = http_body_util::Limited::new(req.into_body(), MAX_FORM).collect();
                return Ok(match tokio::time::timeout(FORM_DEADLINE, form).await {
                    Ok(Ok(b)) => o.confirm(&id, &b.to_bytes(), cookies.as_deref()).await,
                    Ok(Err(_)) => text(StatusCode::PAYLOAD_TOO_LARGE, "text/plain; charset=utf-8", "form too large\n"),
                    Err(_) => text(StatusCode::REQUEST_TIMEOUT, "text/plain; charset=utf-8", "form too slow\n"),
                });
            }
            ("GET", p) if p.starts_with("/register/") => return Ok(o.start(&p["/register/".len()..], peer)),
            _ => {}
        }
    }
    if path.starts_with("/api/v1/") {
        let state = app.control.state.clone();
        return Ok(super::api_http::answer_keyed(req, state, &app.extras.api_failures, peer).await);
    }
    Ok(match (req.method().as_str(), path.as_str()) {
        ("GET" | "HEAD", "/health") => text(StatusCode::OK, "application/health+json", r#"{"status":"pass"}"#),
        ("GET", "/key") => app.control.key(req.uri().query()),
        ("POST" | "GET", "/ts2021") => app.control.upgrade(req, slot, peer),
        ("GET", p) if p.starts_with("/register/") => app.control.register_page(&p["/register/".len()..]),
        _ => text(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "404 page not found\n"),
    })
}

/// What the listener serves.
struct App {
    control: Arc<Control>,
    extras: Extras,
}

/// From the 101 answer to the upgraded stream in hand.
#[cfg(feature = "derp")]
const UPGRADE_DEADLINE: Duration = Duration::from_secs(5);

/// `GET /derp` with `Upgrade: DERP` from `peer`: the relay takes the
/// connection over. Until the client has proven its key it holds a
/// handshake place, never a client's; a refusal closes the connection.
#[cfg(feature = "derp")]
fn derp_upgrade(req: Request<Incoming>, relay: &Arc<Relay>, slot: Slot, peer: IpAddr) -> Response<Full<Bytes>> {
    let upgrade = req.headers().get(hyper::header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !upgrade.eq_ignore_ascii_case("derp") {
        let mut r =
            text(StatusCode::UPGRADE_REQUIRED, "text/plain; charset=utf-8", "DERP requires connection upgrade\n");
        r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        return r;
    }
    if slot.long_lived(false).is_err() {
        return busy();
    }
    let handshaking = match relay.try_handshake(peer) {
        Ok(p) => p,
        Err(why) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", format!("{why}\n"));
            r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            return r;
        }
    };
    let relay2 = relay.clone();
    // Only the upgrade is kept, not the request's headers, while the 101 goes out.
    let pending = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match tokio::time::timeout(UPGRADE_DEADLINE, pending).await {
            Ok(Ok(up)) => {
                slot.upgraded();
                relay2.serve(TokioIo::new(up), handshaking).await
            }
            Ok(Err(e)) => log::debug!("derp: upgrade failed: {e}"),
            Err(_) => log::debug!("derp: upgrade timed out"),
        }
        drop(slot);
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("DERP"));
    h.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    h.insert("Derp-Version", hyper::header::HeaderValue::from_static("2"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&crate::tailcfg::encode_hex(&relay.public_key())) {
        h.insert("Derp-Public-Key", v);
    }
    r
}

/// `GET /generate_204`: the captive-portal check, echoing the challenge.
#[cfg(feature = "derp")]
fn generate_204(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let challenge = req.headers().get("X-Tailscale-Challenge").and_then(|v| v.to_str().ok());
    let valid =
        challenge.filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    if let Some(v) = valid.and_then(|c| hyper::header::HeaderValue::from_str(&format!("response {c}")).ok()) {
        r.headers_mut().insert("X-Tailscale-Response", v);
    }
    r
}

/// Serves HTTP/1 on one connection until it ends, is upgraded, or reaches
/// `deadline` ([`SHORT_LIFETIME`] after it was accepted).
async fn serve_conn<S>(
    io: S,
    app: Arc<App>,
    slot: Slot,
    peer: IpAddr,
    deadline: tokio::time::Instant,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(
            TokioIo::new(io),
            hyper::service::service_fn(move |req| route(req, app.clone(), slot.clone(), peer)),
        )
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("http connection: {e}");
            }
            return;
        }
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep_until(deadline) => log::debug!("closing the connection of {peer}: it lasted {SHORT_LIFETIME:?}"),
    }
    // Whatever it is doing (writing to a client that does not read, say) ends.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

impl Http {
    /// Accepts connections until `shutdown` turns true.
    pub async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let app = Arc::new(App { control: self.control.clone(), extras: self.extras.clone() });
        loop {
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            // Small frames (keep-alives, deltas) must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let slot = match self.admission.admit(peer.ip(), Instant::now()) {
                Ok(s) => Arc::new(s),
                Err(why) => {
                    log::debug!("refusing {peer}: {why}");
                    continue;
                }
            };
            let (app, tls, rx) = (app.clone(), self.tls.clone(), shutdown.clone());
            let deadline = tokio::time::Instant::now() + SHORT_LIFETIME;
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(stream, app, slot, peer.ip(), deadline, rx).await,
                    Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_conn(tls, app, slot, peer.ip(), deadline, rx).await,
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    },
                }
            });
        }
    }
}
