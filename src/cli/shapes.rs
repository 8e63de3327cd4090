//! What the CLI prints with `-o json|yaml`: Headscale's CLI shapes
//! (snake_case, ids as numbers), made from the API's types. The REST API
//! speaks camelCase; scripts written against `headscale … -o json` keep
//! working against these.

use serde::Serialize;

use crate::api::types;
use crate::api::views::passed;

#[derive(Debug, Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub created_at: String,
    pub display_name: String,
    pub email: String,
    pub provider_id: String,
    pub provider: String,
    pub profile_pic_url: String,
}

impl From<&types::User> for User {
    fn from(u: &types::User) -> User {
        User {
            id: u.id,
            name: u.name.clone(),
            created_at: u.created_at.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider_id: u.provider_id.clone(),
            provider: u.provider.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PreAuthKey {
    pub id: u64,
    pub key: String,
    pub user: Option<User>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expiration: String,
    pub expired: bool,
    pub created_at: String,
    pub acl_tags: Vec<String>,
}

impl PreAuthKey {
    pub fn new(k: &types::PreAuthKey, now: i64) -> PreAuthKey {
        PreAuthKey {
            id: k.id,
            key: k.key.clone(),
            user: k.user.as_ref().map(User::from),
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: k.expiration.clone(),
            expired: passed(Some(&k.expiration), now),
            created_at: k.created_at.clone(),
            acl_tags: k.acl_tags.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    pub ip_addresses: Vec<String>,
    pub name: String,
    pub given_name: String,
    pub user: Option<User>,
    pub last_seen: Option<String>,
    pub expiry: Option<String>,
    pub expired: bool,
    pub created_at: String,
    pub register_method: String,
    pub online: bool,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
}

impl Node {
    pub fn new(n: &types::Node, now: i64) -> Node {
        Node {
            id: n.id,
            machine_key: n.machine_key.clone(),
            node_key: n.node_key.clone(),
            ip_addresses: n.ip_addresses.clone(),
            name: n.name.clone(),
            given_name: n.given_name.clone(),
            user: n.user.as_ref().map(User::from),
            last_seen: n.last_seen.clone(),
            expiry: n.expiry.clone(),
            expired: passed(n.expiry.as_deref(), now),
            created_at: n.created_at.clone(),
            register_method: n.register_method.clone(),
            online: n.online,
            tags: n.tags.clone(),
            ephemeral: n.ephemeral,
            approved_routes: n.approved_routes.clone(),
            available_routes: n.available_routes.clone(),
            subnet_routes: n.subnet_routes.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ApiKey {
    pub id: u64,
    pub prefix: String,
    pub expiration: Option<String>,
    pub expired: bool,
    pub created_at: Option<String>,
    pub last_seen: Option<String>,
}

impl ApiKey {
    pub fn new(k: &types::ApiKey, now: i64) -> ApiKey {
        ApiKey {
            id: k.id,
            prefix: k.prefix.clone(),
            expiration: k.expiration.clone(),
            expired: passed(k.expiration.as_deref(), now),
            created_at: k.created_at.clone(),
            last_seen: k.last_seen.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Pending {
    pub auth_id: String,
    pub hostname: String,
    pub machine_key: String,
    pub node_key: String,
    pub age_seconds: u64,
}

impl From<&types::PendingLogin> for Pending {
    fn from(p: &types::PendingLogin) -> Pending {
        Pending {
            auth_id: p.auth_id.clone(),
            hostname: p.hostname.clone(),
            machine_key: p.machine_key.clone(),
            node_key: p.node_key.clone(),
            age_seconds: p.age_seconds,
        }
    }
}

/// What a delete prints.
#[derive(Debug, Serialize)]
pub struct Deleted {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub deleted: bool,
}
