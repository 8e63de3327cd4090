//! The admin API's contract as types: Headscale's `/api/v1` JSON (v0.29's
//! fields, camelCase, ids as strings, RFC 3339 times, each answer wrapped
//! as Headscale wraps it). The server answers with them, the CLI reads
//! them (and prints its own snake_case shapes from them), the web UI
//! renders them; nobody walks the JSON by hand.
//!
//! Requests are read as leniently as Headscale v0.29 read them (protojson):
//! ids as strings or numbers, Headscale's snake_case spellings too, unknown
//! fields ignored.

use serde::{Deserialize, Serialize};

/// A uint64 id on the wire: a decimal string, read from a string or a number.
pub mod id {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id (a decimal string or number)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                v.parse().map_err(|_| E::custom(format!("{v:?} is not an id")))
            }
        }
        d.deserialize_any(V)
    }

    /// An optional id (absent, null, or an id).
    pub mod opt {
        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] u64);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(with = "id")]
    pub id: u64,
    pub name: String,
    pub created_at: String,
    pub display_name: String,
    pub email: String,
    pub provider_id: String,
    pub provider: String,
    pub profile_pic_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKey {
    #[serde(with = "id")]
    pub id: u64,
    /// The whole key in the answer that made it; masked everywhere else.
    pub key: String,
    pub user: Option<User>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expiration: String,
    pub created_at: String,
    pub acl_tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(with = "id")]
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub ip_addresses: Vec<String>,
    /// The hostname the device reported.
    pub name: String,
    /// Its MagicDNS name, which the admin may change.
    pub given_name: String,
    /// The owner; tagged nodes show Headscale's `tagged-devices` user.
    pub user: Option<User>,
    pub last_seen: Option<String>,
    pub expiry: Option<String>,
    pub pre_auth_key: Option<PreAuthKey>,
    pub created_at: String,
    pub register_method: String,
    pub online: bool,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
    pub tags: Vec<String>,
    /// tinyscale's: the node goes when it has been offline a while.
    #[serde(default)]
    pub ephemeral: bool,
    /// tinyscale's: the OS and client version from its Hostinfo.
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub client_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[serde(with = "id")]
    pub id: u64,
    /// `hskey-api-<prefix>-***`.
    pub prefix: String,
    pub expiration: Option<String>,
    pub created_at: Option<String>,
    pub last_seen: Option<String>,
}

/// A device waiting at its login URL (tinyscale's `GET /api/v1/auth/pending`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingLogin {
    pub auth_id: String,
    pub hostname: String,
    pub machine_key: String,
    pub node_key: String,
    pub age_seconds: u64,
}

// Answers, wrapped as Headscale wraps them.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserResponse {
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsersResponse {
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResponse {
    pub node: Node,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyResponse {
    pub pre_auth_key: PreAuthKey,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeysResponse {
    pub pre_auth_keys: Vec<PreAuthKey>,
}

/// `POST /api/v1/apikey`: the whole key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyResponse {
    pub api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysResponse {
    pub api_keys: Vec<ApiKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingResponse {
    pub pending: Vec<PendingLogin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub database_connectivity: bool,
}

/// `GET|PUT /api/v1/policy`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResponse {
    pub policy: String,
    /// When it was put in force; null for a policy file.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// tinyscale's: sections read and checked but not acted on yet.
    #[serde(default)]
    pub not_applied: Vec<String>,
}

/// An empty answer (`{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

/// Every error: the status and a message saying what is wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub code: u16,
    pub message: String,
}

// Requests.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserRequest {
    pub name: String,
    #[serde(default, alias = "display_name")]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default, alias = "picture_url")]
    pub picture_url: String,
}

/// A user as a request names one: an id (string or number) or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(u64),
    Text(String),
}

// By hand rather than `#[serde(untagged)]`, whose buffering costs flash.
impl Serialize for UserRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UserRef::Id(id) => s.serialize_u64(*id),
            UserRef::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for UserRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UserRef, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UserRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a user id or name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UserRef, E> {
                Ok(UserRef::Id(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UserRef, E> {
                Ok(UserRef::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePreAuthKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    #[serde(default)]
    pub reusable: bool,
    #[serde(default)]
    pub ephemeral: bool,
    /// RFC 3339; without one, an hour from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, alias = "acl_tags")]
    pub acl_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ById {
    #[serde(with = "id")]
    pub id: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateApiKeyRequest {
    /// RFC 3339; without one, 90 days from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

/// `POST /api/v1/apikey/expire`: by prefix (any form) or by id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpireApiKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, with = "id::opt", skip_serializing)]
    pub id: Option<u64>,
}

/// `POST /api/v1/node/{id}/expire`: now, at `expiry`, or never.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpireNodeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    #[serde(default, alias = "disable_expiry")]
    pub disable_expiry: bool,
}

/// `POST /api/v1/node/{id}/tags`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetTagsRequest {
    pub tags: Vec<String>,
}

/// `POST /api/v1/node/{id}/approve_routes`: the routes approved from now on
/// (empty: none). An exit route approves its pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApproveRoutesRequest {
    #[serde(default)]
    pub routes: Vec<String>,
}

/// `PUT /api/v1/policy` and `POST /api/v1/policy/check`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRequest {
    pub policy: String,
}

/// `POST /api/v1/auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRegisterRequest {
    #[serde(alias = "auth_id")]
    pub auth_id: String,
    pub user: UserRef,
}

/// `POST /api/v1/auth/approve|reject`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthIdRequest {
    #[serde(alias = "auth_id")]
    pub auth_id: String,
}

/// tinyscale's `POST /api/v1/debug/node`: a node without a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateNodeRequest {
    pub user: UserRef,
    pub name: String,
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_out_as_strings_and_come_in_either_way() {
        let k: ById = serde_json::from_str(r#"{"id": "7"}"#).unwrap();
        assert_eq!(k.id, 7);
        let k: ById = serde_json::from_str(r#"{"id": 7}"#).unwrap();
        assert_eq!(k.id, 7);
        assert!(serde_json::from_str::<ById>(r#"{"id": "x"}"#).is_err());
        assert!(serde_json::from_str::<ById>(r#"{"id": -1}"#).is_err());
        assert_eq!(serde_json::to_string(&ById { id: 7 }).unwrap(), r#"{"id":"7"}"#);
        let e: ExpireApiKeyRequest = serde_json::from_str(r#"{"id": "3"}"#).unwrap();
        assert_eq!(e.id, Some(3));
        let e: ExpireApiKeyRequest = serde_json::from_str(r#"{"prefix": "abc"}"#).unwrap();
        assert_eq!(e.id, None);
        let r: CreatePreAuthKeyRequest = serde_json::from_str(r#"{"user": "2", "acl_tags": ["tag:a"]}"#).unwrap();
        assert_eq!(r.user, Some(UserRef::Text("2".into())));
        assert_eq!(r.acl_tags, ["tag:a"]);
    }
}
