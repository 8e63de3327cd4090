//! The admin API: Headscale's `/api/v1` routes and JSON ([`types`]), served
//! on the local unix socket (the CLI's way in; the file's mode is the
//! guard) and on the main listener behind an API key ([`auth`]).
//!
//! [`handle`] is synchronous and does the state's blocking writes: the
//! servers run it in `spawn_blocking`.

pub mod auth;
pub mod types;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock;
use crate::state::{NewPreAuthKey, NewUser, Snapshot, State, StateError};
use crate::url::{percent_decode, query_param};
use types::*;

/// Largest request body accepted: a policy as large as one may be, as a
/// JSON string (escapes take room: twice its length).
pub const MAX_BODY: usize = 2 * crate::policy::hujson::MAX_LEN;

/// How long a new API key lasts without an `expiration` (Headscale's CLI default).
pub const API_KEY_DAYS: i64 = 90;

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

/// An answer: the status and its JSON text (written straight from the
/// typed answer, never through `serde_json::Value`, which costs flash per type).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn ok(body: impl Serialize) -> Response {
    // Invariant: the API's types are plain structs of strings, numbers and lists, which always serialize.
    Response { status: 200, body: serde_json::to_vec(&body).expect("API types serialize") }
}

pub fn error(status: u16, message: impl Into<String>) -> Response {
    ok(ErrorResponse { code: status, message: message.into() }).with_status(status)
}

impl Response {
    fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }
}

impl From<StateError> for Response {
    fn from(e: StateError) -> Self {
        let status = match &e {
            StateError::NotFound(_) => 404,
            StateError::Exists(_) | StateError::InUse(_) => 409,
            StateError::Invalid(_) => 400,
            StateError::PoolFull(_) => 507,
            StateError::Store(crate::store::StoreError::Full(_)) => 507,
            StateError::Store(_) | StateError::Random => 500,
        };
        if status == 500 {
            log::error!("api: {e}");
        }
        error(status, e.to_string())
    }
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| error(400, format!("bad request body: {e}")))
}

fn id_of(seg: &str, what: &str) -> Result<u64, Response> {
    seg.parse().map_err(|_| error(400, format!("{seg:?} is not a {what} id")))
}

/// A user named by id or name. Names start with a letter, so digits are an id.
fn resolve_user(snap: &Snapshot, r: &UserRef) -> Result<u64, Response> {
    let found = match r {
        UserRef::Id(id) => snap.users.get(id),
        UserRef::Text(t) => match t.parse::<u64>() {
            Ok(id) => snap.users.get(&id),
            Err(_) => snap.find_user(t),
        },
    };
    found.map(|u| u.id).ok_or_else(|| {
        let shown = match r {
            UserRef::Id(id) => id.to_string(),
            UserRef::Text(t) => t.clone(),
        };
        error(404, format!("no user {shown:?}"))
    })
}

/// The `?user=` of a list request (an id or a name), if any.
fn user_filter(snap: &Snapshot, query: &str) -> Result<Option<u64>, Response> {
    query_param(query, "user").map(|u| resolve_user(snap, &UserRef::Text(u))).transpose()
}

fn time_param(text: &str, what: &str) -> Result<i64, Response> {
    clock::parse_rfc3339(text).ok_or_else(|| error(400, format!("{what} {text:?} is not an RFC 3339 time")))
}

/// A node as the API shows it, with its live presence.
fn node_view(state: &State, snap: &Snapshot, id: u64) -> Result<Node, Response> {
    let n = snap.nodes.get(&id).ok_or_else(|| error(404, format!("no node with id {id}")))?;
    Ok(state.with_presence(|p| views::node(snap, n, p.get(&id))))
}

fn node_answer(state: &State, id: u64) -> Result<Response, Response> {
    Ok(ok(NodeResponse { node: node_view(state, &state.snapshot(), id)? }))
}

/// Answers one API request (already authorized).
pub fn handle(state: &Arc<State>, req: &Request) -> Response {
    match route(state, req, clock::now_unix()) {
        Ok(r) | Err(r) => r,
    }
}

fn route(state: &Arc<State>, req: &Request, now: i64) -> Result<Response, Response> {
    let path = req.path.trim_end_matches('/');
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Err(error(404, format!("no API route {} {}", req.method, req.path)));
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let snap = state.snapshot();
    Ok(match (req.method, segs.as_slice()) {
        ("GET", ["health"]) => ok(HealthResponse { database_connectivity: true }),

        ("GET", ["user"]) => {
            let (id, name, email) =
                (query_param(req.query, "id"), query_param(req.query, "name"), query_param(req.query, "email"));
            let id = id.filter(|i| i != "0" && !i.is_empty()).map(|i| id_of(&i, "user")).transpose()?;
            let users = snap
                .users
                .values()
                .filter(|u| id.is_none_or(|i| i == u.id))
                .filter(|u| name.as_ref().is_none_or(|n| *n == u.name))
                .filter(|u| email.as_ref().is_none_or(|e| *e == u.email))
                .map(|u| views::user(u))
                .collect();
            ok(UsersResponse { users })
        }
        ("POST", ["user"]) => {
            let b: CreateUserRequest = parse_body(req.body)?;
            let u = state.create_user(
                NewUser { name: b.name, display_name: b.display_name, email: b.email, profile_pic_url: b.picture_url },
                now,
            )?;
            ok(UserResponse { user: views::user(&u) })
        }
        ("POST", ["user", id, "rename", new_name]) => {
            let u = state.rename_user(id_of(id, "user")?, &percent_decode(new_name))?;
            ok(UserResponse { user: views::user(&u) })
        }
        ("DELETE", ["user", id]) => {
            state.destroy_user(id_of(id, "user")?)?;
            ok(Empty {})
        }

        ("GET", ["preauthkey"]) => {
            let user = user_filter(&snap, req.query)?;
            let pre_auth_keys = snap
                .preauth_keys
                .values()
                .filter(|k| user.is_none() || k.user_id == user)
                .map(|k| views::preauth_key(&snap, k, None))
                .collect();
            ok(PreAuthKeysResponse { pre_auth_keys })
        }
        ("POST", ["preauthkey"]) => {
            let b: CreatePreAuthKeyRequest = parse_body(req.body)?;
            let user = b.user.as_ref().map(|u| resolve_user(&snap, u)).transpose()?;
            let expiration = match b.expiration {
                None => now + 3600,
                Some(t) => time_param(&t, "expiration")?,
            };
            let (k, full) = state.create_preauth_key(
                NewPreAuthKey { user, reusable: b.reusable, ephemeral: b.ephemeral, tags: b.acl_tags, expiration },
                now,
            )?;
            ok(PreAuthKeyResponse { pre_auth_key: views::preauth_key(&state.snapshot(), &k, Some(&full)) })
        }
        ("POST", ["preauthkey", "expire"]) => {
            let b: ById = parse_body(req.body)?;
            state.expire_preauth_key(b.id, now)?;
            ok(Empty {})
        }
        ("DELETE", ["preauthkey"]) => {
            let id = query_param(req.query, "id").ok_or_else(|| error(400, "missing ?id="))?;
            state.delete_preauth_key(id_of(&id, "pre-auth key")?)?;
            ok(Empty {})
        }

        ("GET", ["apikey"]) => {
            ok(ApiKeysResponse { api_keys: snap.api_keys.values().map(|k| views::api_key(k)).collect() })
        }
        ("POST", ["apikey"]) => {
            let b: CreateApiKeyRequest = parse_body(req.body)?;
            let expiration = match b.expiration {
                None => now + API_KEY_DAYS * 86_400,
                Some(t) => time_param(&t, "expiration")?,
            };
            let (_, full) = state.create_api_key(expiration, now)?;
            ok(CreateApiKeyResponse { api_key: full })
        }
        ("POST", ["apikey", "expire"]) => {
            let b: ExpireApiKeyRequest = parse_body(req.body)?;
            let prefix = api_key_prefix(&snap, b.prefix, b.id)?;
            state.expire_api_key(&prefix, now)?;
            ok(Empty {})
        }
        ("DELETE", ["apikey", prefix]) => {
            let id = query_param(req.query, "id").map(|i| id_of(&i, "API key")).transpose()?;
            let prefix = api_key_prefix(&snap, Some(percent_decode(prefix)), id)?;
            state.delete_api_key(&prefix)?;
            ok(Empty {})
        }

        ("GET", ["node"]) => {
            let user = user_filter(&snap, req.query)?;
            let nodes = state.with_presence(|p| {
                snap.nodes
                    .values()
                    .filter(|n| user.is_none_or(|u| n.user_id == u))
                    .map(|n| views::node(&snap, n, p.get(&n.id)))
                    .collect()
            });
            ok(NodesResponse { nodes })
        }
        ("GET", ["node", id]) => ok(NodeResponse { node: node_view(state, &snap, id_of(id, "node")?)? }),
        ("POST", ["node", id, "rename", new_name]) => {
            let n = state.rename_node(id_of(id, "node")?, &percent_decode(new_name))?;
            node_answer(state, n.id)?
        }
        ("POST", ["node", id, "expire"]) => {
            let id = id_of(id, "node")?;
            // v0.29 sent these as query parameters, later versions as a body.
            let mut b: ExpireNodeRequest = parse_body(req.body)?;
            if let Some(t) = query_param(req.query, "expiry") {
                b.expiry = Some(t);
            }
            if query_param(req.query, "disableExpiry").is_some_and(|v| v == "true") {
                b.disable_expiry = true;
            }
            match (b.expiry, b.disable_expiry) {
                (Some(_), true) => return Err(error(400, "give either expiry or disableExpiry, not both")),
                (None, true) => state.never_expire_node(id)?,
                (at, false) => state.expire_node(id, at.map(|t| time_param(&t, "expiry")).transpose()?, now)?,
            };
            node_answer(state, id)?
        }
        ("DELETE", ["node", id]) => {
            state.delete_node(id_of(id, "node")?)?;
            ok(Empty {})
        }
        ("POST", ["node", id, "tags"]) => {
            let b: SetTagsRequest = parse_body(req.body)?;
            let n = state.set_tags(id_of(id, "node")?, b.tags)?;
            node_answer(state, n.id)?
        }
        ("POST", ["node", id, "approve_routes"]) => {
            let b: ApproveRoutesRequest = parse_body(req.body)?;
            let routes = b
                .routes
                .iter()
                .map(|r| {
                    r.trim().parse::<crate::tailcfg::Prefix>().map_err(|e| error(400, format!("bad route {r:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let n = state.approve_routes(id_of(id, "node")?, &routes)?;
            node_answer(state, n.id)?
        }
        ("POST", ["node", "register"]) => {
            let user = query_param(req.query, "user").ok_or_else(|| error(400, "missing ?user="))?;
            let key = query_param(req.query, "key").ok_or_else(|| error(400, "missing ?key= (the login's auth id)"))?;
            let user = resolve_user(&snap, &UserRef::Text(user))?;
            let n = state.approve_login(auth_id_of(&key), user, "cli", None, now, Instant::now())?;
            node_answer(state, n.id)?
        }
        ("POST", ["node", "backfillips"]) => {
            return Err(error(501, "tinyscale gives a node its addresses when it joins; there is nothing to backfill"))
        }

        ("GET", ["policy"]) => {
            let text =
                state.policy_text().ok_or_else(|| error(404, "no policy is set: every node reaches every other"))?;
            ok(PolicyResponse { policy: text.to_string(), updated_at: None, not_applied: Vec::new() })
        }
        ("PUT", ["policy"]) => {
            let b: PolicyRequest = parse_body(req.body)?;
            let applied = state.set_policy(&b.policy)?;
            ok(PolicyResponse {
                policy: b.policy,
                updated_at: Some(clock::rfc3339(now)),
                not_applied: applied.not_applied.iter().map(|s| s.to_string()).collect(),
            })
        }
        ("POST", ["policy", "check"]) => {
            let b: PolicyRequest = parse_body(req.body)?;
            state.check_policy(&b.policy)?;
            ok(Empty {})
        }

        ("POST", ["auth", "register"]) => {
            let b: AuthRegisterRequest = parse_body(req.body)?;
            let user = resolve_user(&snap, &b.user)?;
            let n = state.approve_login(auth_id_of(&b.auth_id), user, "cli", None, now, Instant::now())?;
            node_answer(state, n.id)?
        }
        ("POST", ["auth", "approve"]) => {
            let _: AuthIdRequest = parse_body(req.body)?;
            return Err(error(
                501,
                "a device's login is approved for a user: POST /api/v1/auth/register {authId, user}",
            ));
        }
        ("POST", ["auth", "reject"]) => {
            let b: AuthIdRequest = parse_body(req.body)?;
            state.reject_login(auth_id_of(&b.auth_id), Instant::now())?;
            ok(Empty {})
        }
        ("GET", ["auth", "pending"]) => {
            let pending = state.pending_logins(Instant::now()).into_iter().map(views::pending).collect();
            ok(PendingResponse { pending })
        }
        ("POST", ["debug", "node"]) => {
            let b: CreateNodeRequest = parse_body(req.body)?;
            let user = resolve_user(&snap, &b.user)?;
            let n = state.create_node(user, &b.name, &b.key, now)?;
            node_answer(state, n.id)?
        }
        (_, _) => error(404, format!("no API route {} {}", req.method, req.path)),
    })
}

/// The auth id in a login URL, or the id itself.
fn auth_id_of(text: &str) -> &str {
    crate::state::register::auth_id_of(text).unwrap_or(text)
}

/// The prefix of the API key named by `prefix` (any form) or `id`: exactly one.
fn api_key_prefix(snap: &Snapshot, prefix: Option<String>, id: Option<u64>) -> Result<String, Response> {
    match (prefix.filter(|p| !p.is_empty()), id.filter(|i| *i != 0)) {
        (Some(_), Some(_)) => Err(error(400, "give either the API key's id or its prefix, not both")),
        (Some(p), None) => Ok(p),
        (None, Some(id)) => snap
            .api_keys
            .get(&id)
            .map(|k| k.prefix.clone())
            .ok_or_else(|| error(404, format!("no API key with id {id}"))),
        (None, None) => Err(error(400, "give the API key's prefix or id")),
    }
}

#[cfg(test)]
mod tests;
