//! The JSON shapes of users, keys and nodes: Headscale's CLI/API fields in
//! snake_case, ids as numbers, times as RFC 3339 strings (null when unset).

use serde_json::{json, Value};

use crate::clock;
use crate::secrets::{masked, AUTH_KEY_PREFIX};
use crate::state::register::TAGGED_DEVICES;
use crate::state::routes::is_exit;
use crate::state::{has_passed, Node, PreAuthKey, Snapshot, User};

fn time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(clock::rfc3339(t)))
}

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "created_at": clock::rfc3339(u.created_at),
        "display_name": u.display_name,
        "email": u.email,
        "provider_id": u.provider_id,
        "provider": u.provider,
        "profile_pic_url": u.profile_pic_url,
    })
}

/// A pre-auth key; `full` is the whole key, given only when it was just made.
pub fn preauth_key_json(snap: &Snapshot, k: &PreAuthKey, full: Option<&str>, now: i64) -> Value {
    let user = k.user_id.and_then(|id| snap.users.get(&id)).map_or(Value::Null, |u| user_json(u));
    json!({
        "id": k.id,
        "key": full.map_or_else(|| masked(AUTH_KEY_PREFIX, &k.prefix), str::to_string),
        "user": user,
        "reusable": k.reusable,
        "ephemeral": k.ephemeral,
        "used": k.used,
        "expiration": clock::rfc3339(k.expiration),
        "expired": has_passed(k.expiration, now),
        "created_at": clock::rfc3339(k.created_at),
        "acl_tags": k.tags,
    })
}

fn register_method(m: &str) -> &'static str {
    match m {
        "authkey" => "REGISTER_METHOD_AUTH_KEY",
        "cli" => "REGISTER_METHOD_CLI",
        "oidc" => "REGISTER_METHOD_OIDC",
        _ => "REGISTER_METHOD_UNSPECIFIED",
    }
}

/// What the node serves now, as Headscale's `subnet_routes` says it: the
/// subnets it is primary for and its approved exit routes.
fn serving(snap: &Snapshot, n: &Node) -> Vec<String> {
    let primary = snap.primaries.iter().filter(|(_, id)| **id == n.id).map(|(p, _)| *p);
    let exit = n.announced_routes.iter().filter(|r| is_exit(r) && n.approved_routes.contains(r)).copied();
    primary.chain(exit).map(|p| p.to_string()).collect()
}

/// A node; `online` and `last_seen` come from the live presence when known.
pub fn node_json(snap: &Snapshot, n: &Node, online: bool, last_seen: Option<i64>, now: i64) -> Value {
    let user = match snap.users.get(&n.user_id) {
        Some(u) => user_json(u),
        None if n.user_id == TAGGED_DEVICES => json!({"id": n.user_id, "name": "tagged-devices"}),
        None => Value::Null,
    };
    let ips: Vec<String> = n.ipv4.map(|a| a.to_string()).into_iter().chain(n.ipv6.map(|a| a.to_string())).collect();
    json!({
        "id": n.id,
        // The all-zero key for a node made without a device, as always.
        "machine_key": n.machine_key.unwrap_or_default(),
        "node_key": n.node_key,
        "ip_addresses": ips,
        "name": n.hostname,
        "given_name": n.given_name,
        "user": user,
        "last_seen": time(last_seen.or(n.last_seen)),
        "expiry": time(n.expiry),
        "expired": n.expiry.is_some_and(|e| has_passed(e, now)),
        "created_at": clock::rfc3339(n.created_at),
        "register_method": register_method(&n.register_method),
        "online": online,
        "tags": n.tags,
        "ephemeral": n.ephemeral,
        "approved_routes": n.approved_routes,
        "available_routes": n.announced_routes,
        "subnet_routes": serving(snap, n),
    })
}
