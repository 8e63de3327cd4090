//! The HTTP/2 requests inside Noise: `/machine/register` and `/machine/map`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use super::conn::Answer;
use super::{body, session, Body, Control};
use crate::clock;
use crate::mapper;
use crate::state::pending::{LoginRefused, LoginWait};
use crate::state::presence::Reported;
use crate::state::register::{auth_id_of, Approval, RegisterError, Registered};
use crate::state::{Node, Snapshot};
use crate::tailcfg::{
    Login, MachinePublic, MapRequest, RegisterRequest, RegisterResponse, User, MIN_CAPABILITY_VERSION,
};
use crate::text::clip;

/// How long a followup request waits for the login before the client asks again.
const FOLLOWUP_WAIT: Duration = Duration::from_secs(10 * 60);

pub(super) fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

fn json(v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => respond(StatusCode::OK, "application/json", b),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed"),
    }
}

fn authorized(snap: &Snapshot, n: &Node) -> RegisterResponse {
    let profile = mapper::user_profile(snap, n.user_id);
    let created = snap.users.get(&n.user_id).map_or(n.created_at, |u| u.created_at);
    RegisterResponse {
        user: Some(User {
            id: profile.id,
            display_name: profile.display_name.clone(),
            profile_pic_url: profile.profile_pic_url.clone(),
            created: clock::rfc3339(created),
        }),
        login: Some(Login {
            id: profile.id,
            provider: String::new(),
            login_name: profile.login_name,
            display_name: profile.display_name,
            profile_pic_url: profile.profile_pic_url,
        }),
        machine_authorized: true,
        ..Default::default()
    }
}

impl Control {
    pub(super) async fn machine_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        machine: MachinePublic,
        mut payer: body::Payer,
        answer: Answer,
    ) -> Response<Body> {
        let from = payer.from;
        // A machine that registered on this connection pays as a known one from then on.
        payer.known = payer.known || self.state.snapshot().node_by_machine(&machine).is_some();
        if req.method() != hyper::Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        let path = req.uri().path().to_string();
        let Some(limit) = body::limit(&path) else {
            return plain(StatusCode::NOT_IMPLEMENTED, "not implemented by tinyscale");
        };
        let held = match body::read(&self.budget, req.into_body(), limit, payer).await {
            Ok(b) => b,
            Err(e) => {
                log::debug!("{machine}: {path}: body refused: {}", e.message());
                return plain(e.status(), e.message());
            }
        };
        // The body's bytes and budget go as soon as it is parsed: a request
        // may then wait minutes (a login, a map stream) holding only what it needs.
        if path == "/machine/register" {
            let req = serde_json::from_slice::<RegisterRequest>(&held.bytes);
            drop(held);
            match req {
                Ok(r) => self.register(machine, from, r).await,
                Err(e) => {
                    log::debug!("{machine}: bad RegisterRequest: {e}");
                    plain(StatusCode::BAD_REQUEST, &format!("bad RegisterRequest: {e}"))
                }
            }
        } else {
            let req = serde_json::from_slice::<MapRequest>(&held.bytes);
            drop(held);
            match req {
                Ok(r) => self.map(machine, r, answer).await,
                Err(e) => {
                    log::debug!("{machine}: bad MapRequest: {e}");
                    plain(StatusCode::BAD_REQUEST, &format!("bad MapRequest: {e}"))
                }
            }
        }
    }

    async fn register(
        self: &Arc<Self>,
        machine: MachinePublic,
        from: IpAddr,
        mut req: RegisterRequest,
    ) -> Response<Body> {
        let has_auth_key = req.auth.as_ref().is_some_and(|a| !a.auth_key.is_empty());
        if !req.followup.is_empty() && !has_auth_key {
            let waiter = auth_id_of(&req.followup).and_then(|id| self.state.login_waiter(id, machine, Instant::now()));
            if let Some(wait) = waiter {
                // Only the URL is kept while the client waits.
                let followup = std::mem::take(&mut req.followup);
                drop(req);
                return self.follow_up(wait, followup).await;
            }
            // No such login (expired or replaced): a new one below.
        }
        let state = self.state.clone();
        let now = clock::now_unix();
        let res = tokio::task::spawn_blocking(move || state.register(machine, &req, now).map(|r| (r, req))).await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                log::error!("register task failed: {e}");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        match res {
            Ok((Registered::Authorized(n), _)) => {
                log::info!("node {} ({}) registered for {machine}", n.id, n.given_name);
                json(&authorized(&self.state.snapshot(), &n))
            }
            Ok((Registered::Expired, _)) => json(&RegisterResponse { node_key_expired: true, ..Default::default() }),
            Ok((Registered::NeedsLogin, req)) => match self.state.start_login(machine, &req, from, Instant::now()) {
                Ok(id) => {
                    let url = format!("{}/register/{id}", self.server_url);
                    // Debug: anyone can ask, and `auth pending` lists who waits.
                    log::debug!("{machine} needs a login: {url}");
                    json(&RegisterResponse { auth_url: url, ..Default::default() })
                }
                Err(LoginRefused::Busy) => plain(StatusCode::SERVICE_UNAVAILABLE, &LoginRefused::Busy.to_string()),
                Err(LoginRefused::State(e)) => {
                    log::error!("register from {machine} failed: {e}");
                    json(&RegisterResponse { error: e.to_string(), ..Default::default() })
                }
            },
            // Debug: anyone can have these refused, as often as it likes; the
            // device is told why.
            Err(RegisterError::Unauthorized(m)) => {
                log::debug!("register from {machine} at {from} refused: {}", clip(&m, 200));
                plain(StatusCode::UNAUTHORIZED, &m)
            }
            Err(RegisterError::BadRequest(m)) => plain(StatusCode::BAD_REQUEST, &m),
            Err(RegisterError::Refused(m)) => {
                log::debug!("register from {machine} at {from} refused: {}", clip(&m, 200));
                json(&RegisterResponse { error: m, ..Default::default() })
            }
            Err(RegisterError::State(e)) => {
                log::error!("register from {machine} failed: {e}");
                json(&RegisterResponse { error: e.to_string(), ..Default::default() })
            }
        }
    }

    /// A client waiting on its login URL: holds the request until the login
    /// completes, for [`FOLLOWUP_WAIT`], or until a newer request waits on
    /// the same login (one waiter per login).
    async fn follow_up(&self, wait: LoginWait, followup: String) -> Response<Body> {
        let LoginWait { outcome: mut rx, mut replaced } = wait;
        let wait = async {
            loop {
                if let Some(a) = rx.borrow_and_update().clone() {
                    return Some(a);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        let mut shutdown = self.shutdown.clone();
        let again = || json(&RegisterResponse { auth_url: followup.clone(), ..Default::default() });
        let outcome = tokio::select! {
            r = tokio::time::timeout(FOLLOWUP_WAIT, wait) => r,
            // Only word of a newer waiter: the login going (approved, say) drops the sender too.
            Ok(()) = &mut replaced => return again(),
            _ = shutdown.changed() => return plain(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"),
        };
        match outcome {
            Ok(Some(Approval::Approved(node_id))) => {
                let snap = self.state.snapshot();
                // Approved, then deleted at once: asking again starts afresh.
                snap.nodes.get(&node_id).map_or_else(again, |n| json(&authorized(&snap, n)))
            }
            Ok(Some(Approval::Rejected(msg))) => json(&RegisterResponse { error: msg, ..Default::default() }),
            // Still waiting, or the login expired or was replaced: the same
            // URL again makes the client ask later, and a login that is gone
            // is then started afresh.
            Ok(None) | Err(_) => again(),
        }
    }

    async fn map(self: &Arc<Self>, machine: MachinePublic, req: MapRequest, answer: Answer) -> Response<Body> {
        if req.version < MIN_CAPABILITY_VERSION as u32 {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "client capability version {} is too old; tinyscale needs {MIN_CAPABILITY_VERSION}+",
                    req.version
                ),
            );
        }
        let id = {
            let snap = self.state.snapshot();
            match snap.node_by_key(&req.node_key) {
                Some(n) if n.machine_key == Some(machine) => n.id,
                _ => {
                    log::debug!("{machine}: map for unknown node key {}", req.node_key);
                    return plain(StatusCode::NOT_FOUND, "node not found");
                }
            }
        };
        // A stream's session tells peers, once its first map is out; at
        // once when routes are to be stored first (hyper may drop this
        // handler at that await, and the report must not be lost).
        let mut update = self.state.record_report(
            id,
            Reported { disco: req.disco_key, endpoints: req.endpoints, hostinfo: req.hostinfo, cap: req.version },
        );
        if !req.stream || update.routes.is_some() {
            self.state.announce_report(id, &update, None);
            update.endpoints = false;
            update.hostinfo = false;
        }
        if let Some(routes) = update.routes.take() {
            // A store write: off the runtime, and done before the map is
            // built so it already shows what the node announces.
            let state = self.state.clone();
            let stored = tokio::task::spawn_blocking(move || state.set_announced_routes(id, routes)).await;
            match stored {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::warn!("node {id}: its announced routes could not be stored: {e}"),
                Err(e) => log::error!("node {id}: storing its announced routes failed: {e}"),
            }
        }
        let zstd = req.compress == "zstd";
        if req.stream {
            let body = session::start(self.clone(), id, zstd, answer, update);
            let mut r = Response::new(body.boxed());
            r.extensions_mut().insert(session::Streaming);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            return r;
        }
        if req.omit_peers {
            return respond(StatusCode::OK, "application/octet-stream", Bytes::new());
        }
        match session::full_frame(self, id, zstd).await {
            Some(f) => respond(StatusCode::OK, "application/octet-stream", f),
            None => plain(StatusCode::NOT_FOUND, "node not found"),
        }
    }
}
