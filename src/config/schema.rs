//! The configuration as the rest of tinyscale sees it: typed, validated,
//! with every default filled in (Headscale's key names, tinyscale's types).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use log::LevelFilter;
use serde::Deserialize;

use crate::clock::Span;
use crate::logger;
use crate::tailcfg::Prefix;
use crate::url::HttpUrl;

/// A secret (the OIDC client secret): never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    Sequential,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    File,
    Database,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkceMethod {
    S256,
    Plain,
}

#[derive(Debug, Clone)]
pub struct Prefixes {
    pub v4: Option<Prefix>,
    pub v6: Option<Prefix>,
    pub allocation: Allocation,
}

#[derive(Debug, Clone)]
pub struct DerpServer {
    pub enabled: bool,
    pub region_id: i64,
    pub region_code: String,
    pub region_name: String,
    pub verify_clients: bool,
    pub stun_listen_addr: Option<SocketAddr>,
    pub private_key_path: PathBuf,
    pub automatically_add_embedded_derp_region: bool,
    /// Passed through to the DERP map as given (`none` included).
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// tinyscale's own: the relay's TLS listener when `server_url` is plain http.
    pub tls_listen_addr: SocketAddr,
    /// tinyscale's own: relay clients served at once.
    pub max_clients: usize,
}

#[derive(Debug, Clone)]
pub struct Derp {
    pub server: DerpServer,
    pub urls: Vec<String>,
    pub paths: Vec<PathBuf>,
    /// The regions of the `paths` files (Headscale's YAML form), merged in order.
    pub from_paths: crate::tailcfg::DerpMap,
    pub auto_update_enabled: bool,
    pub update_frequency: Span,
}

#[derive(Debug, Clone)]
pub struct Database {
    pub path: PathBuf,
    pub cache_capacity: u64,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// One of `dns.extra_records` as written in the YAML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExtraRecord {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct Dns {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers_global: Vec<String>,
    pub nameservers_split: BTreeMap<String, Vec<String>>,
    pub search_domains: Vec<String>,
    /// Checked by `dns::records`, as the file's are.
    pub extra_records: Vec<crate::tailcfg::DnsRecord>,
    pub extra_records_path: Option<PathBuf>,
}

/// Who may sign in to the admin web UI through the `oidc:` provider: a
/// member of one of `allowed_groups`, or one of `allowed_users` (emails,
/// verified as `oidc.email_verified_required` says). Neither set: nobody
/// (an API key still signs in where OIDC is not configured).
#[derive(Debug, Clone, Default)]
pub struct Admin {
    pub allowed_groups: Vec<String>,
    pub allowed_users: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Oidc {
    pub only_start_if_oidc_is_available: bool,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub scope: Vec<String>,
    pub extra_params: BTreeMap<String, String>,
    pub allowed_domains: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub allowed_users: Vec<String>,
    pub pkce_enabled: bool,
    pub pkce_method: PkceMethod,
    /// `Some(true)`: `user@x.net` → `user`; `Some(false)`: → `user.x.net`;
    /// `None`: the username comes from `preferred_username`.
    pub strip_email_domain: Option<bool>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for embedded defaults.
    pub file: Option<PathBuf>,
    pub server_url: String,
    /// `server_url`'s scheme, host and port.
    pub server: HttpUrl,
    pub listen_addr: SocketAddr,
    pub metrics_listen_addr: Option<SocketAddr>,
    pub noise_private_key_path: PathBuf,
    pub prefixes: Prefixes,
    pub derp: Derp,
    /// Zero: nodes never expire unless expired by hand.
    pub node_expiry: Span,
    pub ephemeral_inactivity_timeout: Span,
    pub database: Database,
    pub tls: Option<Tls>,
    pub log_level: LevelFilter,
    pub log_format: logger::Format,
    pub policy_mode: PolicyMode,
    pub policy_path: Option<PathBuf>,
    pub dns: Dns,
    pub unix_socket: PathBuf,
    pub unix_socket_permission: u32,
    pub taildrop_enabled: bool,
    pub preauth_keys_revoked_retention: Span,
    pub oidc: Option<Oidc>,
    /// tinyscale's own `admin:`: who may use the admin web UI.
    pub admin: Admin,
    /// tinyscale's own `tuning.max_connections`: TCP connections served at once.
    pub max_connections: usize,
    /// tinyscale's own `tuning.max_nodes`: nodes the tailnet may hold.
    pub max_nodes: usize,
    /// tinyscale's own `tuning.compress_maps`: whether map frames to clients
    /// that ask for zstd are compressed (else stored raw).
    pub compress_maps: bool,
}
