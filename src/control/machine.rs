//! The HTTP/2 requests inside Noise: `/machine/register` and `/machine/map`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use super::{session, Body, Control};
use crate::clock;
use crate::mapper;
use crate::state::register::{auth_id_of, Approval, RegisterError, Registered};
use crate::state::{Node, Snapshot};
use crate::tailcfg::{
    Login, MachinePublic, MapRequest, RegisterRequest, RegisterResponse, User, MIN_CAPABILITY_VERSION,
};

/// Largest request body a client may send (Headscale's limit too).
const MAX_REQUEST: usize = 1024 * 1024;
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
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        if req.method() != hyper::Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                log::debug!("{machine}: {path}: body refused: {e}");
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
        };
        match path.as_str() {
            "/machine/register" => self.register(machine, &body).await,
            "/machine/map" => self.map(machine, &body).await,
            _ => plain(StatusCode::NOT_IMPLEMENTED, "not implemented by tinyscale"),
        }
    }

    async fn register(self: &Arc<Self>, machine: MachinePublic, body: &[u8]) -> Response<Body> {
        let req: RegisterRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("{machine}: bad RegisterRequest: {e}");
                return plain(StatusCode::BAD_REQUEST, &format!("bad RegisterRequest: {e}"));
            }
        };
        let has_auth_key = req.auth.as_ref().is_some_and(|a| !a.auth_key.is_empty());
        if !req.followup.is_empty() && !has_auth_key {
            if let Some(r) = self.follow_up(machine, &req.followup).await {
                return r;
            }
        }
        let state = self.state.clone();
        let now = clock::now_unix();
        let res = tokio::task::spawn_blocking(move || state.register(machine, &req, now)).await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                log::error!("register task failed: {e}");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        match res {
            Ok(Registered::Authorized(n)) => {
                log::info!("node {} ({}) registered for {machine}", n.id, n.given_name);
                json(&authorized(&self.state.snapshot(), &n))
            }
            Ok(Registered::Expired) => json(&RegisterResponse { node_key_expired: true, ..Default::default() }),
            Ok(Registered::NeedsLogin(id)) => {
                let url = format!("{}/register/{id}", self.server_url);
                log::info!("{machine} needs a login: {url}");
                json(&RegisterResponse { auth_url: url, ..Default::default() })
            }
            Err(RegisterError::Unauthorized(m)) => {
                log::warn!("register from {machine} refused: {m}");
                plain(StatusCode::UNAUTHORIZED, &m)
            }
            Err(RegisterError::BadRequest(m)) => plain(StatusCode::BAD_REQUEST, &m),
            Err(RegisterError::Refused(m)) => {
                log::info!("register from {machine} refused: {m}");
                json(&RegisterResponse { error: m, ..Default::default() })
            }
            Err(RegisterError::State(e)) => {
                log::error!("register from {machine} failed: {e}");
                json(&RegisterResponse { error: e.to_string(), ..Default::default() })
            }
        }
    }

    /// A client waiting on its login URL: holds the request until the login
    /// completes. `None` means there is no such login: register afresh.
    async fn follow_up(&self, machine: MachinePublic, followup: &str) -> Option<Response<Body>> {
        let id = auth_id_of(followup)?;
        let mut rx = self.state.login_waiter(id, machine)?;
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
        let outcome = tokio::select! {
            r = tokio::time::timeout(FOLLOWUP_WAIT, wait) => r,
            _ = shutdown.changed() => return Some(plain(StatusCode::SERVICE_UNAVAILABLE, "server shutting down")),
        };
        match outcome {
            Ok(Some(Approval::Approved(node_id))) => {
                let snap = self.state.snapshot();
                let n = snap.nodes.get(&node_id)?;
                Some(json(&authorized(&snap, n)))
            }
            Ok(Some(Approval::Rejected(msg))) => Some(json(&RegisterResponse { error: msg, ..Default::default() })),
            // The login was evicted: start a new one.
            Ok(None) => None,
            // Still waiting: the same URL again makes the client back off and ask later.
            Err(_) => Some(json(&RegisterResponse { auth_url: followup.to_string(), ..Default::default() })),
        }
    }

    async fn map(self: &Arc<Self>, machine: MachinePublic, body: &[u8]) -> Response<Body> {
        let req: MapRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("{machine}: bad MapRequest: {e}");
                return plain(StatusCode::BAD_REQUEST, &format!("bad MapRequest: {e}"));
            }
        };
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
        self.state.report(id, req.disco_key, req.endpoints, req.hostinfo, req.version);
        let zstd = req.compress == "zstd";
        if req.stream {
            let body = session::start(self.clone(), id, zstd);
            let mut r = Response::new(body.boxed());
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
