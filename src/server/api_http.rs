//! The admin API over HTTP: on the unix socket as it is (the socket file's
//! mode is the guard), and on the main listener behind an API key, checked
//! from the headers before a byte of the body is read.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};

use crate::api::{self, auth};
use crate::state::State;

/// A request body must arrive within this (the connection's own lifetime
/// bounds it too).
const BODY_DEADLINE: Duration = Duration::from_secs(30);

fn json(r: &api::Response) -> Response<Full<Bytes>> {
    let mut out = Response::new(Full::new(Bytes::from(r.body.clone())));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Answers hold keys (once) and the tailnet's devices: never cached.
    out.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

/// Request bodies the network listener buffers at once: each may be 2 MiB,
/// and key holders on many connections must not fill a small router's RAM.
static BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Answers an admin API request that is already allowed.
pub async fn answer(req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, api::MAX_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return json(&api::error(413, format!("request body over {} bytes", api::MAX_BODY))),
        Err(_) => return json(&api::error(408, "the request body did not arrive in time")),
    };
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    // State writes flush to flash: keep them off the async runtime.
    let res = tokio::task::spawn_blocking(move || {
        api::handle(&state, &api::Request { method: &method, path: &path, query: &query, body: &body })
    })
    .await;
    match res {
        Ok(r) => json(&r),
        Err(e) => {
            log::error!("api handler failed: {e}");
            json(&api::error(500, "internal error"))
        }
    }
}

/// Answers an API request from the network: only with a valid API key.
pub async fn answer_keyed(
    req: Request<Incoming>,
    state: Arc<State>,
    failures: &auth::Failures,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth::check(&state, failures, header, peer, crate::clock::now_unix(), Instant::now()) {
        auth::Verdict::Allowed => {
            // Invariant: the semaphore is static and never closed.
            let _place = BODIES.acquire().await.expect("the body semaphore is never closed");
            answer(req, state).await
        }
        auth::Verdict::Unauthorized => {
            let mut r = json(&api::error(401, "Unauthorized"));
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        auth::Verdict::TooManyFailures => {
            log::debug!("api: {peer} is past its failed attempts");
            let mut r = json(&api::error(429, "too many failed attempts from this address; wait a minute"));
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("60"));
            r
        }
    }
}
