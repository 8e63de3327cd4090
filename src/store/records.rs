//! What the store keeps, as serde records.
//!
//! Fields added later carry `#[serde(default)]`, so older records still decode;
//! a change that needs more than that gets a migration in `migrations.rs`.
//! Keys are typed (`NodePublic`, `MachinePublic`) but keep the text they
//! always had on flash (`nodekey:<hex>`, `mkey:<hex>`).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::tailcfg::{MachinePublic, NodePublic, Prefix};

/// A node's machine key, `None` for a node made with `debug create-node`.
/// On flash that is the all-zero key, as it always was.
mod machine_key_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::tailcfg::MachinePublic;

    pub fn serialize<S: Serializer>(k: &Option<MachinePublic>, s: S) -> Result<S::Ok, S::Error> {
        k.unwrap_or_default().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MachinePublic>, D::Error> {
        let k = MachinePublic::deserialize(d)?;
        Ok((!k.is_zero()).then_some(k))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub profile_pic_url: String,
    /// "" for users made by the CLI, "oidc" for users from the identity provider.
    #[serde(default)]
    pub provider: String,
    /// Issuer + subject for OIDC users: the identity, never the name.
    #[serde(default)]
    pub provider_id: String,
    pub created_at: i64,
}

#[cfg(test)]
impl User {
    /// A user made by the CLI, with only an id and a name: for tests.
    pub fn named(id: u64, name: &str) -> User {
        User {
            id,
            name: name.into(),
            display_name: String::new(),
            email: String::new(),
            profile_pic_url: String::new(),
            provider: String::new(),
            provider_id: String::new(),
            created_at: 1,
        }
    }
}

#[cfg(test)]
impl Node {
    /// A node registered with a key, hostname `n<id>`, keys made of the id's
    /// byte and no expiry: for tests.
    pub fn example(id: u64, user_id: u64, ipv4: Ipv4Addr) -> Node {
        Node {
            id,
            machine_key: Some(MachinePublic([id as u8; 32])),
            node_key: NodePublic([id as u8; 32]),
            user_id,
            hostname: format!("n{id}"),
            given_name: format!("n{id}"),
            ipv4: Some(ipv4),
            ipv6: None,
            created_at: 1,
            expiry: None,
            expiry_deferred: None,
            last_seen: None,
            register_method: "authkey".into(),
            auth_key_id: None,
            tags: vec![],
            ephemeral: false,
            announced_routes: vec![],
            approved_routes: vec![],
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: u64,
    /// The device's Noise key; `None` for a node made without a device
    /// (`debug create-node`).
    #[serde(with = "machine_key_text")]
    pub machine_key: Option<MachinePublic>,
    /// Its WireGuard key, rotated on re-authentication.
    pub node_key: NodePublic,
    pub user_id: u64,
    /// As the client reported it.
    pub hostname: String,
    /// The DNS-safe, unique name the tailnet knows it by.
    pub given_name: String,
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    pub created_at: i64,
    /// Unix seconds; `None` never expires (unless `expiry_deferred`).
    #[serde(default)]
    pub expiry: Option<i64>,
    /// `node.expiry` in seconds, still to be turned into a wall time: the
    /// node registered while the clock read before the build time (a router
    /// before NTP), so `now + node.expiry` was unknown. See `state::expiry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deferred: Option<u64>,
    /// Written at most every few minutes, never per keep-alive.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// "authkey", "cli" or "oidc".
    #[serde(default)]
    pub register_method: String,
    #[serde(default)]
    pub auth_key_id: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ephemeral: bool,
    /// The routes the node announces (Hostinfo.RoutableIPs), checked, sorted
    /// and deduplicated (`state::routes`). Written only when they change:
    /// a client repeats its Hostinfo at every map request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced_routes: Vec<Prefix>,
    /// The routes approved for it, by the admin or by `autoApprovers`
    /// (sorted; an exit route always with its pair). Kept when the node
    /// stops announcing them, as Headscale does: announcing again serves again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_routes: Vec<Prefix>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PreAuthKey {
    pub id: u64,
    /// The public part of the key, shown in lists and used to find it.
    pub prefix: String,
    /// SHA-256 of the secret part, hex.
    pub hash: String,
    /// `None` for a key that only tags (tagged keys belong to no user).
    pub user_id: Option<u64>,
    pub reusable: bool,
    pub ephemeral: bool,
    #[serde(default)]
    pub used: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: i64,
    pub expiration: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u64,
    pub prefix: String,
    pub hash: String,
    pub created_at: i64,
    pub expiration: i64,
    #[serde(default)]
    pub last_seen: Option<i64>,
}

/// A machine waiting for an admin (or the identity provider) to approve it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    pub hostname: String,
    pub created_at: i64,
}

/// The next free id of each kind. Ids are never reused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextIds {
    pub user: u64,
    pub node: u64,
    pub preauth_key: u64,
    pub api_key: u64,
}
