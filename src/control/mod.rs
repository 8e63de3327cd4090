//! The control protocol's I/O: `GET /key`, the `/ts2021` upgrade into Noise,
//! HTTP/2 inside it, and the `/register/<id>` login page. The rules live in
//! `state` (who may register) and `mapper` (what a node sees); this module
//! moves bytes and holds connections.

mod body;
mod conn;
mod machine;
mod noise_io;
mod session;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::noise;
use crate::quota::Places;
use crate::secrets::random_bytes;
use crate::state::State;
use crate::tailcfg::{MachinePrivate, MachinePublic, MIN_CAPABILITY_VERSION};

pub use body::{BODY_BUDGET, BODY_DEADLINE, FIRST_BYTE};
pub use conn::{ANSWER_DEADLINE, CONNS_PER_MACHINE, FIRST_REQUEST, IDLE};
pub use noise_io::NoiseIo;
pub use session::FRAME_TAKEN;

/// Upgrades in flight at once (from the 101 answer to the stream in hand),
/// and from one source: beyond them new ones get 503. A real client's takes
/// microseconds, but a loaded router may take most of a second, and a
/// household reconnecting at 20 a second must still get through; one that
/// never reads its 101 holds a place until the deadline.
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKES_PER_SOURCE: usize = 16;
/// From the 101 answer to the upgraded stream in hand.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(5);

/// The connection's place under the listener's caps (`server::admission`).
pub trait Place: Send + Sync + 'static {
    /// Asks to stay connected after the upgrade, as the connection of a
    /// machine with a node or (`keyless`) without; held until dropped.
    fn stay(&self, keyless: bool) -> bool;
    /// The upgraded stream is in hand.
    fn upgraded(&self);
}

/// An upgrade's place among those in flight; given back when dropped.
struct Handshaking {
    places: Arc<Mutex<Places>>,
    from: IpAddr,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.places.lock().unwrap_or_else(|e| e.into_inner()).give_back(self.from);
    }
}

pub struct Control {
    pub state: Arc<State>,
    noise_key: [u8; 32],
    noise_public: MachinePublic,
    server_url: String,
    handshakes: Arc<Mutex<Places>>,
    /// Bytes of request bodies all connections may hold at once.
    budget: Arc<body::Budget>,
    /// The Noise connections of each machine key.
    machine_conns: Mutex<conn::MachineConns>,
    /// The live map session of each node.
    sessions: Mutex<session::Sessions>,
    shutdown: watch::Receiver<bool>,
    /// `tuning.compress_maps`: compress the map frames of clients that ask
    /// for zstd (all current ones); on unless the config says otherwise.
    pub compress_maps: bool,
}

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

impl Control {
    pub fn new(state: Arc<State>, key: &MachinePrivate, server_url: &str, shutdown: watch::Receiver<bool>) -> Control {
        Control {
            state,
            noise_key: *key.bytes(),
            noise_public: MachinePublic(noise::public_key(key.bytes())),
            server_url: server_url.trim_end_matches('/').to_string(),
            handshakes: Arc::new(Mutex::new(Places::new(MAX_HANDSHAKES, HANDSHAKES_PER_SOURCE))),
            budget: Arc::default(),
            machine_conns: Mutex::default(),
            sessions: Mutex::default(),
            shutdown,
            compress_maps: true,
        }
    }

    pub fn public_key(&self) -> MachinePublic {
        self.noise_public
    }

    /// `GET /key?v=<capver>`: the server's Noise public key.
    pub fn key(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let v =
            query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("v="))).and_then(|v| v.parse::<u32>().ok());
        if v.is_none() {
            return text(StatusCode::BAD_REQUEST, "missing or bad ?v=<capability version>\n");
        }
        let body = format!(r#"{{"legacyPublicKey":"mkey:{}","publicKey":"{}"}}"#, "0".repeat(64), self.noise_public);
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        r
    }

    /// `POST /ts2021`: checks the upgrade, answers the Noise handshake and
    /// hands the connection to HTTP/2 once hyper has switched protocols.
    /// `place` is the connection's place under the connection caps: it
    /// stays taken while the Noise stream lives. `from` is the client's
    /// address. A refusal closes the connection: one connection, one handshake.
    pub fn upgrade<P: Place>(
        self: &Arc<Self>,
        req: Request<Incoming>,
        place: Arc<P>,
        from: IpAddr,
    ) -> Response<Full<Bytes>> {
        let mut r = self.upgrade_inner(req, place, from);
        if r.status() != StatusCode::SWITCHING_PROTOCOLS {
            r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        }
        r
    }

    fn upgrade_inner<P: Place>(
        self: &Arc<Self>,
        req: Request<Incoming>,
        place: Arc<P>,
        from: IpAddr,
    ) -> Response<Full<Bytes>> {
        let upgrade = req.headers().get(hyper::header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !upgrade.eq_ignore_ascii_case("tailscale-control-protocol") {
            return text(StatusCode::BAD_REQUEST, "this endpoint needs Upgrade: tailscale-control-protocol\n");
        }
        let init = req
            .headers()
            .get("X-Tailscale-Handshake")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v).ok())
            .filter(|b| b.len() == noise::INITIATION_LEN);
        let Some(init) = init else {
            log::debug!("ts2021: missing or malformed X-Tailscale-Handshake");
            return text(StatusCode::BAD_REQUEST, "bad X-Tailscale-Handshake\n");
        };
        if !self.handshakes.lock().unwrap_or_else(|e| e.into_inner()).take(from) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many handshakes; retry\n");
        }
        let handshaking = Handshaking { places: self.handshakes.clone(), from };
        let version = noise::initiation_version(&init).unwrap_or(0);
        // Too old a client: finish the upgrade only to tell it why (message type 3).
        let first_bytes = if version < MIN_CAPABILITY_VERSION {
            // Debug: anyone can send this, as often as the connection rate allows.
            log::debug!(
                "refusing a client of capability version {version} (tinyscale needs {MIN_CAPABILITY_VERSION} or newer)"
            );
            Err(noise::error_message(&format!(
                "this Tailscale client (capability version {version}) is too old for this server; it needs {MIN_CAPABILITY_VERSION} or newer (Tailscale 1.80+): please upgrade"
            )))
        } else {
            let mut eph = [0u8; 32];
            if random_bytes(&mut eph).is_err() {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness\n");
            }
            match noise::respond(&self.noise_key, &eph, &init) {
                Ok((resp, session)) => Ok((resp, session)),
                Err(e) => {
                    log::debug!("ts2021: handshake failed: {e}");
                    return text(StatusCode::BAD_REQUEST, format!("handshake failed: {e}\n"));
                }
            }
        };
        // Machines without a node have a share of their own (a key is free to make).
        let known = first_bytes
            .as_ref()
            .is_ok_and(|(_, s)| self.state.snapshot().node_by_machine(&MachinePublic(s.peer_static)).is_some());
        if !place.stay(!known) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "server busy; retry\n");
        }
        // Only the upgrade is kept, not the request's headers, while the 101 goes out.
        let pending = hyper::upgrade::on(req);
        let this = self.clone();
        tokio::spawn(async move {
            let upgraded = match tokio::time::timeout(UPGRADE_DEADLINE, pending).await {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => return log::debug!("ts2021: upgrade failed: {e}"),
                Err(_) => return log::debug!("ts2021: upgrade from {from} timed out"),
            };
            place.upgraded();
            drop(handshaking);
            let mut io = TokioIo::new(upgraded);
            let (resp, session) = match first_bytes {
                Ok(x) => x,
                Err(refusal) => {
                    let closing = async {
                        let _ = io.write_all(&refusal).await;
                        let _ = io.shutdown().await;
                    };
                    let _ = tokio::time::timeout(UPGRADE_DEADLINE, closing).await;
                    return;
                }
            };
            let machine = MachinePublic(session.peer_static);
            let noise = NoiseIo::new(io, session.rx, session.tx, resp.to_vec());
            this.serve_h2(noise, machine, version, from, known).await;
            drop(place);
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("tailscale-control-protocol"));
        r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
        r
    }

    /// `GET /register/<id>`: without OIDC, tells the admin what to run.
    pub fn register_page(&self, auth_id: &str) -> Response<Full<Bytes>> {
        if !crate::state::register::valid_auth_id(auth_id) {
            return text(StatusCode::NOT_FOUND, "no such registration\n");
        }
        let waiting = self.state.pending_login(auth_id, Instant::now());
        use crate::web::layout::public_page;
        let body = match waiting {
            None => public_page(
                "Registration not found",
                &format!(
                    "<p>The registration <code>{auth_id}</code> is unknown or expired (they last 15 minutes). \
                     Run <code>tailscale up</code> again for a new link.</p>"
                ),
            ),
            Some(p) => public_page(
                "Register this device",
                &format!(
                    "<p>The device <b>{host}</b> asks to join the tailnet.</p>\
                     <p>An administrator lets it in at <a href=/admin/pending>/admin</a>, or on the router with the user it belongs to:</p>\
                     <pre>tinyscale auth register --auth-id {auth_id} --user USERNAME</pre>\
                     <p>(The older form works too: <code>tinyscale nodes register --key {auth_id} --user USERNAME</code>.)</p>\
                     <p>The device joins as soon as that is done; this page does not need to stay open.</p>",
                    host = crate::web::html_escape(&p.hostname)
                ),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
        crate::web::page_headers(r.headers_mut(), Some(crate::web::layout::STYLE));
        r
    }
}

#[cfg(test)]
mod tests;
