//! The admin API: JSON over HTTP, Headscale's `/api/v1` routes and snake_case
//! shapes. Served on the local unix socket (the CLI's way in; file permissions
//! are the authentication). Later issues serve it over TCP behind API keys.
//!
//! [`handle`] is synchronous and does the state's blocking writes: the socket
//! server runs it in `spawn_blocking`.

mod json;
pub mod types;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock;
use crate::state::{NewPreAuthKey, NewUser, Snapshot, State, StateError};
use crate::url::{percent_decode, query_param};

pub use json::{node_json, preauth_key_json, user_json};

/// Largest request body accepted: a policy as large as one may be, as a
/// JSON string (escapes take room: twice its length).
pub const MAX_BODY: usize = 2 * crate::policy::hujson::MAX_LEN;

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> Response {
    Response { status: 200, body }
}

fn error(status: u16, message: impl Into<String>) -> Response {
    Response { status, body: json!({ "code": status, "message": message.into() }) }
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

fn to_value(v: impl serde::Serialize) -> Value {
    // Invariant: the API's types are plain structs of strings and lists, which always serialize.
    serde_json::to_value(v).expect("API types serialize")
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| error(400, format!("bad request body: {e}")))
}

fn id_of(seg: &str, what: &str) -> Result<u64, Response> {
    seg.parse().map_err(|_| error(400, format!("{seg:?} is not a {what} id")))
}

/// `user` as sent by a client: an id or a name.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserRef {
    Id(u64),
    Text(String),
}

fn resolve_user(snap: &Snapshot, r: &UserRef) -> Result<u64, Response> {
    let found = match r {
        UserRef::Id(id) => snap.users.get(id),
        UserRef::Text(t) => snap.find_user(t),
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

#[derive(Deserialize)]
struct CreateUser {
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    picture_url: String,
}

#[derive(Deserialize)]
struct CreateKey {
    user: Option<UserRef>,
    #[serde(default)]
    reusable: bool,
    #[serde(default)]
    ephemeral: bool,
    /// RFC 3339; Headscale's default is an hour from now.
    expiration: Option<String>,
    #[serde(default)]
    acl_tags: Vec<String>,
}

#[derive(Deserialize)]
struct ById {
    id: u64,
}

#[derive(Deserialize)]
struct AuthRegister {
    auth_id: String,
    user: UserRef,
}

/// A node with its live online state.
fn live_node(state: &State, snap: &Snapshot, n: &crate::state::Node, now: i64) -> Value {
    let (online, seen) = state.with_presence(|p| p.get(&n.id).map_or((false, None), |p| (p.online(), p.last_seen)));
    node_json(snap, n, online, seen, now)
}

#[derive(Deserialize)]
struct CreateNode {
    user: UserRef,
    name: String,
    key: String,
}

/// Answers one API request.
pub fn handle(state: &Arc<State>, req: &Request) -> Response {
    match route(state, req, clock::now_unix()) {
        Ok(r) | Err(r) => r,
    }
}

fn route(state: &Arc<State>, req: &Request, now: i64) -> Result<Response, Response> {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.strip_prefix("/api/v1/").unwrap_or("").split('/').collect();
    let snap = state.snapshot();
    Ok(match (req.method, segs.as_slice()) {
        ("GET", ["health"]) => ok(json!({ "database_connectivity": true })),

        ("GET", ["user"]) => {
            let (id, name, email) =
                (query_param(req.query, "id"), query_param(req.query, "name"), query_param(req.query, "email"));
            let users: Vec<Value> = snap
                .users
                .values()
                .filter(|u| id.as_ref().is_none_or(|i| *i == u.id.to_string()))
                .filter(|u| name.as_ref().is_none_or(|n| *n == u.name))
                .filter(|u| email.as_ref().is_none_or(|e| *e == u.email))
                .map(|u| user_json(u))
                .collect();
            ok(json!({ "users": users }))
        }
        ("POST", ["user"]) => {
            let b: CreateUser = parse_body(req.body)?;
            let u = state.create_user(
                NewUser { name: b.name, display_name: b.display_name, email: b.email, profile_pic_url: b.picture_url },
                now,
            )?;
            ok(json!({ "user": user_json(&u) }))
        }
        ("POST", ["user", id, "rename", new_name]) => {
            let u = state.rename_user(id_of(id, "user")?, &percent_decode(new_name))?;
            ok(json!({ "user": user_json(&u) }))
        }
        ("DELETE", ["user", id]) => {
            state.destroy_user(id_of(id, "user")?)?;
            ok(json!({}))
        }

        ("GET", ["preauthkey"]) => {
            let user = user_filter(&snap, req.query)?;
            let keys: Vec<Value> = snap
                .preauth_keys
                .values()
                .filter(|k| user.is_none() || k.user_id == user)
                .map(|k| preauth_key_json(&snap, k, None, now))
                .collect();
            ok(json!({ "pre_auth_keys": keys }))
        }
        ("POST", ["preauthkey"]) => {
            let b: CreateKey = parse_body(req.body)?;
            let user = b.user.as_ref().map(|u| resolve_user(&snap, u)).transpose()?;
            let expiration = match b.expiration {
                None => now + 3600,
                Some(t) => time_param(&t, "expiration")?,
            };
            let (k, full) = state.create_preauth_key(
                NewPreAuthKey { user, reusable: b.reusable, ephemeral: b.ephemeral, tags: b.acl_tags, expiration },
                now,
            )?;
            let snap = state.snapshot();
            ok(json!({ "pre_auth_key": preauth_key_json(&snap, &k, Some(&full), now) }))
        }
        ("POST", ["preauthkey", "expire"]) => {
            let b: ById = parse_body(req.body)?;
            let k = state.expire_preauth_key(b.id, now)?;
            ok(json!({ "pre_auth_key": preauth_key_json(&state.snapshot(), &k, None, now) }))
        }
        ("DELETE", ["preauthkey"]) => {
            let id = query_param(req.query, "id").ok_or_else(|| error(400, "missing ?id="))?;
            state.delete_preauth_key(id_of(&id, "pre-auth key")?)?;
            ok(json!({}))
        }

        ("GET", ["node"]) => {
            let user = user_filter(&snap, req.query)?;
            let nodes: Vec<Value> = snap
                .nodes
                .values()
                .filter(|n| user.is_none_or(|u| n.user_id == u))
                .map(|n| live_node(state, &snap, n, now))
                .collect();
            ok(json!({ "nodes": nodes }))
        }
        ("GET", ["node", id]) => {
            let id = id_of(id, "node")?;
            let n = snap.nodes.get(&id).ok_or_else(|| error(404, format!("no node with id {id}")))?;
            ok(json!({ "node": live_node(state, &snap, n, now) }))
        }
        ("POST", ["node", id, "rename", new_name]) => {
            let n = state.rename_node(id_of(id, "node")?, &percent_decode(new_name))?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("POST", ["node", id, "expire"]) => {
            let at = query_param(req.query, "expiry").map(|t| time_param(&t, "expiry")).transpose()?;
            let n = state.expire_node(id_of(id, "node")?, at, now)?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("DELETE", ["node", id]) => {
            state.delete_node(id_of(id, "node")?)?;
            ok(json!({}))
        }
        ("POST", ["node", id, "tags"]) => {
            let b: types::SetTags = parse_body(req.body)?;
            let n = state.set_tags(id_of(id, "node")?, b.tags)?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("POST", ["node", id, "approve_routes"]) => {
            let b: types::ApproveRoutes = parse_body(req.body)?;
            let routes = b
                .routes
                .iter()
                .map(|r| r.trim().parse::<crate::tailcfg::Prefix>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(400, format!("bad route: {e}")))?;
            let n = state.approve_routes(id_of(id, "node")?, &routes)?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("GET", ["policy"]) => {
            let text =
                state.policy_text().ok_or_else(|| error(404, "no policy is set: every node reaches every other"))?;
            ok(to_value(types::PolicyText { policy: text.to_string() }))
        }
        ("PUT", ["policy"]) => {
            let b: types::PolicyText = parse_body(req.body)?;
            let applied = state.set_policy(&b.policy)?;
            ok(to_value(types::PolicySet {
                policy: b.policy,
                not_applied: applied.not_applied.iter().map(|s| s.to_string()).collect(),
            }))
        }
        ("POST", ["debug", "node"]) => {
            let b: CreateNode = parse_body(req.body)?;
            let user = resolve_user(&snap, &b.user)?;
            let n = state.create_node(user, &b.name, &b.key, now)?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("POST", ["auth", "register"]) => {
            let b: AuthRegister = parse_body(req.body)?;
            let user = resolve_user(&snap, &b.user)?;
            let n = state.approve_login(&b.auth_id, user, "cli", None, now, std::time::Instant::now())?;
            ok(json!({ "node": live_node(state, &state.snapshot(), &n, now) }))
        }
        ("GET", ["auth", "pending"]) => {
            let list: Vec<Value> = state
                .pending_logins(std::time::Instant::now())
                .into_iter()
                .map(|p| {
                    json!({"auth_id": p.id, "hostname": p.hostname, "machine_key": p.machine_key,
                           "node_key": p.node_key, "age_seconds": p.age_secs})
                })
                .collect();
            ok(json!({ "pending": list }))
        }
        (_, _) => error(404, format!("no API route {} {}", req.method, req.path)),
    })
}

#[cfg(test)]
mod tests;
