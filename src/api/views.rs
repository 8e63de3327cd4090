//! State's records as the API's types ([`super::types`]).

use serde::Deserialize;

use super::types;
use crate::clock;
use crate::secrets::{masked, API_KEY_PREFIX, AUTH_KEY_PREFIX};
use crate::state::presence::Presence;
use crate::state::register::TAGGED_DEVICES;
use crate::state::routes::is_exit;
use crate::state::{ApiKey, Node, PreAuthKey, Snapshot, User};

fn time(t: i64) -> String {
    clock::rfc3339(t)
}

pub fn user(u: &User) -> types::User {
    types::User {
        id: u.id,
        name: u.name.clone(),
        created_at: time(u.created_at),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        provider_id: u.provider_id.clone(),
        provider: u.provider.clone(),
        profile_pic_url: u.profile_pic_url.clone(),
    }
}

/// Headscale's stand-in owner of tagged nodes.
fn tagged_devices() -> types::User {
    types::User {
        id: TAGGED_DEVICES,
        name: "tagged-devices".into(),
        created_at: time(0),
        display_name: "Tagged Devices".into(),
        email: String::new(),
        provider_id: String::new(),
        provider: String::new(),
        profile_pic_url: String::new(),
    }
}

/// A pre-auth key; `full` is the whole key, given only when it was just made.
pub fn preauth_key(snap: &Snapshot, k: &PreAuthKey, full: Option<&str>) -> types::PreAuthKey {
    types::PreAuthKey {
        id: k.id,
        key: full.map_or_else(|| masked(AUTH_KEY_PREFIX, &k.prefix), str::to_string),
        user: k.user_id.and_then(|id| snap.users.get(&id)).map(|u| user(u)),
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        used: k.used,
        expiration: time(k.expiration),
        created_at: time(k.created_at),
        acl_tags: k.tags.clone(),
    }
}

/// A device waiting at its login URL.
pub fn pending(p: crate::state::pending::PendingInfo) -> types::PendingLogin {
    types::PendingLogin {
        auth_id: p.id,
        hostname: p.hostname,
        machine_key: p.machine_key.to_string(),
        node_key: p.node_key.to_string(),
        age_seconds: p.age_secs,
    }
}

/// Whether an RFC 3339 time of an answer has passed (an unreadable one has not).
pub fn passed(t: Option<&str>, now: i64) -> bool {
    t.and_then(clock::parse_rfc3339).is_some_and(|t| crate::state::has_passed(t, now))
}

pub fn api_key(k: &ApiKey) -> types::ApiKey {
    types::ApiKey {
        id: k.id,
        prefix: masked(API_KEY_PREFIX, &k.prefix),
        expiration: Some(time(k.expiration)),
        created_at: Some(time(k.created_at)),
        last_seen: k.last_seen.map(time),
    }
}

fn register_method(m: &str) -> &'static str {
    match m {
        "authkey" => "REGISTER_METHOD_AUTH_KEY",
        "cli" => "REGISTER_METHOD_CLI",
        "oidc" => "REGISTER_METHOD_OIDC",
        _ => "REGISTER_METHOD_UNSPECIFIED",
    }
}

/// What the node serves now, as Headscale's `subnetRoutes` says it: the
/// subnets it is primary for and its approved exit routes.
fn serving(snap: &Snapshot, n: &Node) -> Vec<String> {
    let primary = snap.primaries.iter().filter(|(_, id)| **id == n.id).map(|(p, _)| *p);
    let exit = n.announced_routes.iter().filter(|r| is_exit(r) && n.approved_routes.contains(r)).copied();
    primary.chain(exit).map(|p| p.to_string()).collect()
}

/// The parts of a Hostinfo the admin sees.
#[derive(Deserialize, Default)]
struct Client {
    #[serde(rename = "OS", default)]
    os: String,
    #[serde(rename = "IPNVersion", default)]
    version: String,
}

/// A node with its live presence, if it has one.
pub fn node(snap: &Snapshot, n: &Node, presence: Option<&Presence>) -> types::Node {
    let owner = match snap.users.get(&n.user_id) {
        Some(u) => Some(user(u)),
        None if n.user_id == TAGGED_DEVICES => Some(tagged_devices()),
        None => None,
    };
    let client: Client =
        presence.and_then(|p| p.hostinfo.as_ref()).and_then(|h| serde_json::from_str(h.get()).ok()).unwrap_or_default();
    let disco = presence.map(|p| p.disco_key).filter(|d| !d.is_zero());
    types::Node {
        id: n.id,
        // The all-zero key for a node made without a device, as always.
        machine_key: n.machine_key.unwrap_or_default().to_string(),
        node_key: n.node_key.to_string(),
        disco_key: disco.map(|d| d.to_string()).unwrap_or_default(),
        ip_addresses: n.ipv4.map(|a| a.to_string()).into_iter().chain(n.ipv6.map(|a| a.to_string())).collect(),
        name: n.hostname.clone(),
        given_name: n.given_name.clone(),
        user: owner,
        last_seen: presence.and_then(|p| p.last_seen).or(n.last_seen).map(time),
        expiry: n.expiry.map(time),
        pre_auth_key: n.auth_key_id.and_then(|id| snap.preauth_keys.get(&id)).map(|k| preauth_key(snap, k, None)),
        created_at: time(n.created_at),
        register_method: register_method(&n.register_method).to_string(),
        online: presence.is_some_and(Presence::online),
        approved_routes: n.approved_routes.iter().map(|p| p.to_string()).collect(),
        available_routes: n.announced_routes.iter().map(|p| p.to_string()).collect(),
        subnet_routes: serving(snap, n),
        tags: n.tags.clone(),
        ephemeral: n.ephemeral,
        os: client.os,
        client_version: client.version,
    }
}
