//! The configuration: Headscale's `config.yaml` schema, tinyscale's defaults,
//! environment overrides and validation that reports every problem at once.
//!
//! A Headscale user's file loads unchanged: keys tinyscale does not use are
//! accepted (some with a note), deprecated keys still work with a warning that
//! names the replacement, and unknown keys are reported with their line.

mod lines;
mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use log::LevelFilter;
use serde::Deserialize;
use serde_yaml::Value;

use crate::clock::Span;
use crate::logger;
use crate::tailcfg::Prefix;

pub use lines::LineIndex;
pub use reader::{env_suffix, Diag, EnvLookup, Origin, Reader};

/// Folder for state when the config does not name paths, relative to the
/// config file's folder (or the working directory when there is no file).
pub const DATA_DIR: &str = "tinyscale-data";
/// The folder searched before `./config.yaml`.
pub const SYSTEM_CONFIG: &str = "/etc/tinyscale/config.yaml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_BASE_DOMAIN: &str = "tailnet.internal";
const DEFAULT_SLED_CACHE: i64 = 1 << 20;

/// A secret (the OIDC client secret): never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

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

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExtraRecord {
    pub name: String,
    #[serde(rename = "type")]
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
    pub extra_records: Vec<ExtraRecord>,
    pub extra_records_path: Option<PathBuf>,
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
    /// tinyscale's own `tuning.max_connections`: TCP connections served at once.
    pub max_connections: usize,
    /// tinyscale's own `tuning.max_nodes`: nodes the tailnet may hold.
    pub max_nodes: usize,
}

/// A configuration that loaded, with what is worth telling the admin.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diag>,
    pub notes: Vec<Diag>,
}

/// A configuration that did not load: every error found, and the warnings.
#[derive(Debug)]
pub struct Errors {
    pub file: Option<PathBuf>,
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into());
        writeln!(f, "{name}: {} error(s)", self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// The process environment as the reader wants it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Finds the config file: `-c`, then `TINYSCALE_CONFIG`, then
/// `/etc/tinyscale/config.yaml`, then `./config.yaml`; `None` means embedded defaults.
pub fn locate(explicit: Option<&Path>, env: EnvLookup) -> Result<Option<PathBuf>, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Some(p.to_path_buf()))
        } else {
            Err(format!("config file {} does not exist", p.display()))
        };
    }
    if let Some(p) = env("TINYSCALE_CONFIG").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(Some(p))
        } else {
            Err(format!("TINYSCALE_CONFIG names {}, which does not exist", p.display()))
        };
    }
    Ok([Path::new(SYSTEM_CONFIG), Path::new("config.yaml")].into_iter().find(|p| p.is_file()).map(Path::to_path_buf))
}

/// Reads and validates the config at `file` (or the embedded defaults).
pub fn load(file: Option<&Path>, env: EnvLookup) -> Result<Loaded, Errors> {
    let text = match file {
        None => String::new(),
        Some(p) => std::fs::read_to_string(p).map_err(|e| Errors {
            file: Some(p.to_path_buf()),
            errors: vec![Diag {
                path: String::new(),
                origin: Origin::File(None),
                message: format!("cannot read: {e}"),
            }],
            warnings: Vec::new(),
        })?,
    };
    parse(&text, file, env)
}

/// Validates config text; relative paths resolve against `file`'s folder.
pub fn parse(text: &str, file: Option<&Path>, env: EnvLookup) -> Result<Loaded, Errors> {
    let fail = |errors| Errors { file: file.map(Path::to_path_buf), errors, warnings: Vec::new() };
    let root: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v @ Value::Mapping(_)) => v,
        Ok(_) => {
            return Err(fail(vec![Diag {
                path: String::new(),
                origin: Origin::File(Some(1)),
                message: "the file must be a mapping of keys (like `server_url: ...`)".into(),
            }]))
        }
        Err(e) => {
            let line = e.location().map(|l| l.line());
            return Err(fail(vec![Diag {
                path: String::new(),
                origin: Origin::File(line),
                message: format!("not valid YAML: {e}"),
            }]));
        }
    };
    let lines = LineIndex::build(text);
    let base = file.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let mut r = Reader::new(&root, &lines, env);
    let config = read(&mut r, file, &base);
    r.report_unknown_keys();
    if r.errors.is_empty() {
        Ok(Loaded { config, warnings: r.warnings, notes: r.notes })
    } else {
        Err(Errors { file: file.map(Path::to_path_buf), errors: r.errors, warnings: r.warnings })
    }
}

/// A path from the config, relative ones taken from the config file's folder (as Headscale does).
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `0.0.0.0:8080`, `[::]:8080`, `:8080` (all IPv4 interfaces) or `localhost:8080`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| format!("{s:?}: bad port"));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| format!("{s:?}: bad port"));
    }
    s.parse().map_err(|_| format!("{s:?} is not an address:port (e.g. 0.0.0.0:8080)"))
}

/// `$VAR` and `${VAR}` replaced from the environment (unset → empty), as Go's os.ExpandEnv.
pub fn expand_env(s: &str, env: EnvLookup) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, skip) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let n = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            (&after[..n], n)
        };
        if skip == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&env(name).unwrap_or_default());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

fn server_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    (!host.is_empty()).then_some(host)
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Paths that live in RAM on OpenWrt (`/var` → `/tmp`, a tmpfs).
fn in_ram_on_openwrt(p: &Path) -> bool {
    p.starts_with("/tmp") || p.starts_with("/var")
}

fn read(r: &mut Reader, file: Option<&Path>, base: &Path) -> Config {
    let data = |name: &str| resolve(base, &format!("{DATA_DIR}/{name}"));

    // Deprecated spellings Headscale once used; each still works, with a warning.
    r.alias("acl_policy_path", "policy.path");
    r.alias("dns_config.magic_dns", "dns.magic_dns");
    r.alias("dns_config.base_domain", "dns.base_domain");
    r.alias("dns_config.override_local_dns", "dns.override_local_dns");
    r.alias("dns_config.nameservers", "dns.nameservers.global");
    r.alias("dns_config.restricted_nameservers", "dns.nameservers.split");
    r.alias("dns_config.domains", "dns.search_domains");
    r.alias("dns_config.extra_records", "dns.extra_records");
    r.alias("ephemeral_node_inactivity_timeout", "node.ephemeral.inactivity_timeout");
    r.alias("oidc.expiry", "node.expiry");
    r.alias("db_type", "database.type");
    r.alias("db_path", "database.sqlite.path");
    r.obsolete("randomize_client_port", "set \"randomizeClientPort\": true at the top of the policy file instead");
    r.obsolete("oidc.map_legacy_users", "users are matched by issuer and subject");
    r.obsolete("dns.use_username_in_magic_dns", "MagicDNS names are <host>.<base_domain>");
    r.obsolete("dns_config.use_username_in_magic_dns", "MagicDNS names are <host>.<base_domain>");
    r.obsolete("private_key_path", "the pre-Noise protocol is gone; only noise.private_key_path is used");
    r.obsolete("grpc_listen_addr", "tinyscale has no gRPC API; the CLI talks over unix_socket");
    r.obsolete("grpc_allow_insecure", "tinyscale has no gRPC API; the CLI talks over unix_socket");
    r.obsolete("derp.server.stun", "the STUN listener follows derp.server.stun_listen_addr");
    // Headscale keys with nothing to do on a router; accepted silently.
    for accepted in [
        "disable_check_updates",
        "trusted_proxies",
        "database.debug",
        "database.gorm",
        "database.sqlite.write_ahead_log",
        "database.sqlite.wal_autocheckpoint",
        "database.postgres",
        "acme_url",
        "acme_email",
        "tls_letsencrypt_cache_dir",
        "tls_letsencrypt_challenge_type",
        "tls_letsencrypt_listen",
        "auto_update",
        "tuning",
        "cli",
        "node.routes",
    ] {
        r.accept(accepted);
    }

    let server_url = read_server_url(r);
    let listen_addr = addr_or(r, "listen_addr", DEFAULT_LISTEN);
    let metrics_listen_addr = match r.opt_string("metrics_listen_addr").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => parse_listen_addr(&s).map_err(|e| r.error("metrics_listen_addr", e)).ok(),
    };
    let noise_private_key_path = r
        .opt_string("noise.private_key_path")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base, &s))
        .unwrap_or_else(|| data("noise_private.key"));
    let prefixes = read_prefixes(r);
    let derp = read_derp(r, base, &data);

    let node_expiry = r.span("node.expiry", Span(0));
    let ephemeral_inactivity_timeout = r.span("node.ephemeral.inactivity_timeout", Span(120));
    if ephemeral_inactivity_timeout.secs() <= 65 {
        r.error(
            "node.ephemeral.inactivity_timeout",
            format!("{ephemeral_inactivity_timeout} is too short: clients send keep-alives every 60s, so it must be more than 65s"),
        );
    }

    let database = read_database(r, base, &data);

    let cert = r.opt_string("tls_cert_path").filter(|s| !s.is_empty());
    let key = r.opt_string("tls_key_path").filter(|s| !s.is_empty());
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some(Tls { cert_path: resolve(base, &c), key_path: resolve(base, &k) }),
        (None, None) => None,
        (Some(_), None) => {
            r.error("tls_cert_path", "tls_key_path must be set too");
            None
        }
        (None, Some(_)) => {
            r.error("tls_key_path", "tls_cert_path must be set too");
            None
        }
    };
    if r.opt_string("tls_letsencrypt_hostname").is_some_and(|h| !h.is_empty()) {
        r.warn(
            "tls_letsencrypt_hostname",
            "tinyscale does not run ACME itself and serves without it; get the certificate with acme.sh (or uacme) on the router and set tls_cert_path/tls_key_path",
        );
    }

    let log_level = match r.string("log.level", "info").to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warn" | "warning" => LevelFilter::Warn,
        "error" | "fatal" | "panic" => LevelFilter::Error,
        "disabled" | "off" => LevelFilter::Off,
        other => {
            r.error("log.level", format!("{other:?} is not a level (trace, debug, info, warn, error)"));
            LevelFilter::Info
        }
    };
    let log_format = match r.string("log.format", "text").as_str() {
        "text" => logger::Format::Text,
        "json" => logger::Format::Json,
        other => {
            r.error("log.format", format!("{other:?} is not a format (text or json)"));
            logger::Format::Text
        }
    };

    let policy_mode = match r.string("policy.mode", "file").as_str() {
        "file" => PolicyMode::File,
        "database" => PolicyMode::Database,
        other => {
            r.error("policy.mode", format!("{other:?} is not a mode (file or database)"));
            PolicyMode::File
        }
    };
    let policy_path = r.opt_string("policy.path").filter(|s| !s.is_empty()).map(|s| resolve(base, &s));

    let dns = read_dns(r, base, &server_url);

    let unix_socket = r
        .opt_string("unix_socket")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base, &s))
        .unwrap_or_else(|| data("tinyscale.sock"));
    let perm_text = r.string("unix_socket_permission", "0770");
    let digits = perm_text.trim().trim_start_matches("0o");
    let unix_socket_permission = match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => m,
        _ => {
            r.error("unix_socket_permission", format!("{perm_text:?} is not an octal file mode such as \"0770\""));
            0o770
        }
    };

    let taildrop_enabled = r.boolean("taildrop.enabled", true);
    if r.boolean("logtail.enabled", false) {
        r.warn("logtail.enabled", "tinyscale never asks clients to send logs anywhere; ignored");
    }
    let preauth_keys_revoked_retention = r.span("preauth_keys.revoked_retention", Span(168 * 3600));
    let oidc = read_oidc(r, base);
    let max_nodes = r.int("tuning.max_nodes", 10_000);
    if !(1..=1_000_000).contains(&max_nodes) {
        r.error("tuning.max_nodes", format!("{max_nodes} is not between 1 and 1000000"));
    }
    let max_connections = r.int("tuning.max_connections", 2048);
    if !(1..=1_000_000).contains(&max_connections) {
        r.error("tuning.max_connections", format!("{max_connections} is not between 1 and 1000000"));
    }

    // State that must survive a reboot must not sit in RAM.
    for (key, p) in [
        ("noise.private_key_path", &noise_private_key_path),
        ("database.sled.path", &database.path),
        ("derp.server.private_key_path", &derp.server.private_key_path),
    ] {
        if in_ram_on_openwrt(p) {
            r.warn(
                key,
                format!(
                    "WARNING: {} is in RAM on OpenWrt (/var and /tmp are tmpfs) and will NOT survive a reboot; \
                     keep state on flash, e.g. under /etc/tinyscale/",
                    p.display()
                ),
            );
        }
    }

    Config {
        file: file.map(Path::to_path_buf),
        server_url,
        listen_addr,
        metrics_listen_addr,
        noise_private_key_path,
        prefixes,
        derp,
        node_expiry,
        ephemeral_inactivity_timeout,
        database,
        tls,
        log_level,
        log_format,
        policy_mode,
        policy_path,
        dns,
        unix_socket,
        unix_socket_permission,
        taildrop_enabled,
        preauth_keys_revoked_retention,
        oidc,
        max_connections: max_connections.clamp(1, 1_000_000) as usize,
        max_nodes: max_nodes.clamp(1, 1_000_000) as usize,
    }
}

fn addr_or(r: &mut Reader, key: &str, default: &str) -> SocketAddr {
    let text = r.string(key, default);
    parse_listen_addr(&text).unwrap_or_else(|e| {
        r.error(key, e);
        // The default is a literal that parses.
        parse_listen_addr(default).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
    })
}

fn read_server_url(r: &mut Reader) -> String {
    let url = r.string("server_url", &format!("http://{DEFAULT_LISTEN}"));
    if !(url.starts_with("http://") || url.starts_with("https://")) || server_host(&url).is_none() {
        r.error("server_url", format!("{url:?} must be an http:// or https:// URL with a host"));
    }
    url.trim_end_matches('/').to_string()
}

fn read_prefixes(r: &mut Reader) -> Prefixes {
    const CGNAT: &str = "100.64.0.0/10";
    const ULA: &str = "fd7a:115c:a1e0::/48";
    r.alias("ip_prefixes", "prefixes");
    // Pre-0.23 Headscale listed both families in one list.
    let legacy =
        if r.in_file("ip_prefixes") && !r.in_file("prefixes") { r.string_list("ip_prefixes") } else { Vec::new() };
    let (mut v4_text, mut v6_text) = (Some(CGNAT.to_string()), Some(ULA.to_string()));
    if !legacy.is_empty() {
        v4_text = legacy.iter().find(|p| !p.contains(':')).cloned();
        v6_text = legacy.iter().find(|p| p.contains(':')).cloned();
    }
    let explicit = r.in_file("prefixes");
    let v4_text = match r.opt_string("prefixes.v4") {
        Some(s) => Some(s),
        None if explicit => None,
        None => v4_text,
    };
    let v6_text = match r.opt_string("prefixes.v6") {
        Some(s) => Some(s),
        None if explicit => None,
        None => v6_text,
    };
    let mut one = |key: &str, text: Option<String>, range: &str, v4: bool| -> Option<Prefix> {
        let text = text.filter(|t| !t.trim().is_empty())?;
        let p: Prefix = match text.trim().parse() {
            Ok(p) => p,
            Err(e) => {
                r.error(key, format!("{text:?} is not a prefix: {e}"));
                return None;
            }
        };
        // `range` is one of the two constants above, which parse.
        let allowed: Prefix = range.parse().unwrap_or(p);
        if p.is_ipv4() != v4 {
            r.error(key, format!("{p} is not an IPv{} prefix", if v4 { 4 } else { 6 }));
            return None;
        }
        if !allowed.covers(&p) {
            r.error(key, format!("{p} is outside {range}: Tailscale clients only work with addresses inside it (a smaller part of it is fine)"));
            return None;
        }
        if p.masked() != p {
            r.warn(key, format!("{p} has host bits set; using {}", p.masked()));
        }
        Some(p.masked())
    };
    let v4 = one("prefixes.v4", v4_text, CGNAT, true);
    let v6 = one("prefixes.v6", v6_text, ULA, false);
    let allocation = match r.string("prefixes.allocation", "sequential").as_str() {
        "sequential" => Allocation::Sequential,
        "random" => Allocation::Random,
        other => {
            r.error("prefixes.allocation", format!("{other:?} is not a strategy (sequential or random)"));
            Allocation::Sequential
        }
    };
    if v4.is_none() && v6.is_none() && r.errors.iter().all(|e| !e.path.starts_with("prefixes")) {
        r.error("prefixes", "at least one of prefixes.v4 and prefixes.v6 must be set");
    }
    Prefixes { v4, v6, allocation }
}

fn read_derp(r: &mut Reader, base: &Path, data: &dyn Fn(&str) -> PathBuf) -> Derp {
    let enabled = r.boolean("derp.server.enabled", false);
    let region_id = r.int("derp.server.region_id", 999);
    let region_code = r.string("derp.server.region_code", "tinyscale");
    let region_name = r.string("derp.server.region_name", "tinyscale embedded DERP");
    let verify_clients = r.boolean("derp.server.verify_clients", true);
    let stun_listen_addr = match r.opt_string("derp.server.stun_listen_addr").filter(|s| !s.is_empty()) {
        Some(s) => parse_listen_addr(&s).map_err(|e| r.error("derp.server.stun_listen_addr", e)).ok(),
        None => None,
    };
    if enabled && stun_listen_addr.is_none() && !r.errors.iter().any(|e| e.path == "derp.server.stun_listen_addr") {
        r.error("derp.server.stun_listen_addr", "must be set when derp.server.enabled is true (e.g. 0.0.0.0:3478)");
    }
    let private_key_path = r
        .opt_string("derp.server.private_key_path")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base, &s))
        .unwrap_or_else(|| data("derp_server_private.key"));
    let automatically_add_embedded_derp_region = r.boolean("derp.server.automatically_add_embedded_derp_region", true);
    let ipv4 = r.opt_string("derp.server.ipv4").filter(|s| !s.is_empty());
    let ipv6 = r.opt_string("derp.server.ipv6").filter(|s| !s.is_empty());
    for (key, v, want_v4) in [("derp.server.ipv4", &ipv4, true), ("derp.server.ipv6", &ipv6, false)] {
        if let Some(v) = v {
            let ok = v == "none" || v.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4() == want_v4);
            if !ok {
                r.error(key, format!("{v:?} is not an IPv{} address (or \"none\")", if want_v4 { 4 } else { 6 }));
            }
        }
    }
    let tls_listen_addr = addr_or(r, "derp.server.tls_listen_addr", "0.0.0.0:8443");
    let max_clients = r.int("derp.server.max_clients", 1024);
    if !(1..=100_000).contains(&max_clients) {
        r.error("derp.server.max_clients", format!("{max_clients} is not between 1 and 100000"));
    }
    let urls = r.string_list("derp.urls");
    for (i, u) in urls.iter().enumerate() {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            r.error(&format!("derp.urls[{i}]"), format!("{u:?} is not an http(s) URL"));
        }
    }
    let paths: Vec<PathBuf> = r.string_list("derp.paths").iter().map(|p| resolve(base, p)).collect();
    // Local files, read here so configtest reports a broken one (still offline).
    let mut from_paths = crate::tailcfg::DerpMap::default();
    for (i, p) in paths.iter().enumerate() {
        let key = format!("derp.paths[{i}]");
        match std::fs::read_to_string(p) {
            Err(e) => r.error(&key, format!("cannot read {}: {e}", p.display())),
            Ok(text) => match serde_yaml::from_str::<crate::tailcfg::DerpMap>(&text) {
                Ok(m) => from_paths.merge(m),
                Err(e) => r.error(&key, format!("{} is not a DERP map: {e}", p.display())),
            },
        }
    }
    let auto_update_enabled = r.boolean("derp.auto_update_enabled", true);
    let update_frequency = r.span("derp.update_frequency", Span(3 * 3600));
    if auto_update_enabled && update_frequency.is_zero() {
        r.error("derp.update_frequency", "must be more than 0 when derp.auto_update_enabled is true");
    }
    Derp {
        server: DerpServer {
            enabled,
            region_id,
            region_code,
            region_name,
            verify_clients,
            stun_listen_addr,
            private_key_path,
            automatically_add_embedded_derp_region,
            ipv4,
            ipv6,
            tls_listen_addr,
            max_clients: max_clients.clamp(1, 100_000) as usize,
        },
        urls,
        paths,
        from_paths,
        auto_update_enabled,
        update_frequency,
    }
}

fn read_database(r: &mut Reader, base: &Path, data: &dyn Fn(&str) -> PathBuf) -> Database {
    let kind = r.string("database.type", "sled");
    let path = r
        .opt_string("database.sled.path")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base, &s))
        .unwrap_or_else(|| data("db"));
    let sqlite = r.opt_string("database.sqlite.path");
    match kind.as_str() {
        "sled" => {}
        "sqlite" | "sqlite3" | "postgres" => {
            let old = sqlite.map(|p| format!(" (Headscale's {p} is not read)")).unwrap_or_default();
            r.note(
                "database.type",
                format!(
                    "tinyscale keeps its state in sled, at {} (database.sled.path){old}; \
                     database.type: {kind} is accepted so a Headscale config loads unchanged",
                    path.display()
                ),
            );
        }
        other => r.error(
            "database.type",
            format!("{other:?} is not a database type; tinyscale stores in sled (database.sled.path)"),
        ),
    }
    let cache = r.int("database.sled.cache_capacity", DEFAULT_SLED_CACHE);
    if !(64 * 1024..=1 << 30).contains(&cache) {
        r.error("database.sled.cache_capacity", format!("{cache} bytes is outside 65536..=1073741824"));
    }
    Database { path, cache_capacity: cache.clamp(64 * 1024, 1 << 30) as u64 }
}

fn read_dns(r: &mut Reader, base: &Path, server_url: &str) -> Dns {
    let magic_dns = r.boolean("dns.magic_dns", true);
    let base_domain = r.string("dns.base_domain", DEFAULT_BASE_DOMAIN).trim().to_ascii_lowercase();
    if !base_domain.is_empty() {
        if !valid_domain(&base_domain) {
            r.error(
                "dns.base_domain",
                format!("{base_domain:?} is not a domain name (no trailing dot, letters, digits and '-')"),
            );
        } else if let Some(host) = server_host(server_url) {
            let host = host.to_ascii_lowercase();
            if host == base_domain || host.ends_with(&format!(".{base_domain}")) {
                r.error(
                    "dns.base_domain",
                    format!("{base_domain:?} contains the server's own host {host:?}: clients would resolve the server inside the tailnet and lose it; pick another domain"),
                );
            }
        }
    } else if magic_dns {
        r.error("dns.base_domain", "must be set when dns.magic_dns is true");
    }
    let nameservers_global = r.string_list("dns.nameservers.global");
    for (i, ns) in nameservers_global.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() && !ns.starts_with("https://") {
            r.error(
                &format!("dns.nameservers.global[{i}]"),
                format!("{ns:?} is not an IP address or a DNS-over-HTTPS URL"),
            );
        }
    }
    let nameservers_split = r.list_map("dns.nameservers.split");
    let override_local_dns = r.boolean("dns.override_local_dns", !nameservers_global.is_empty());
    if override_local_dns && nameservers_global.is_empty() {
        r.error("dns.override_local_dns", "is true, so dns.nameservers.global must list at least one nameserver");
    }
    let search_domains = r.string_list("dns.search_domains");
    let extra_records = match r.value("dns.extra_records") {
        None => Vec::new(),
        Some(v) => match serde_yaml::from_value::<Vec<ExtraRecord>>(v) {
            Ok(list) => list,
            Err(e) => {
                r.error("dns.extra_records", format!("expected a list of {{name, type, value}}: {e}"));
                Vec::new()
            }
        },
    };
    let extra_records_path =
        r.opt_string("dns.extra_records_path").filter(|s| !s.is_empty()).map(|s| resolve(base, &s));
    if !extra_records.is_empty() && extra_records_path.is_some() {
        r.error("dns.extra_records_path", "dns.extra_records and dns.extra_records_path cannot both be set; keep one");
    }
    Dns {
        magic_dns,
        base_domain,
        override_local_dns,
        nameservers_global,
        nameservers_split,
        search_domains,
        extra_records,
        extra_records_path,
    }
}

fn read_oidc(r: &mut Reader, base: &Path) -> Option<Oidc> {
    let issuer = r.string("oidc.issuer", "");
    let only_start_if_oidc_is_available = r.boolean("oidc.only_start_if_oidc_is_available", true);
    let client_id = r.string("oidc.client_id", "");
    let secret_env = ["TINYSCALE_", "HEADSCALE_"]
        .iter()
        .map(|p| format!("{p}{}", env_suffix("oidc.client_secret")))
        .find(|n| r.env_has(n));
    let secret_in_file = r.in_file("oidc.client_secret");
    let secret_value = r.opt_string("oidc.client_secret");
    let secret_path = r.opt_string("oidc.client_secret_path").filter(|s| !s.is_empty());
    let client_secret = if let Some(name) = secret_env {
        r.note("oidc.client_secret", format!("taken from the environment ({name})"));
        secret_value.map(Secret)
    } else if secret_in_file && secret_path.is_some() {
        r.error("oidc.client_secret_path", "oidc.client_secret and oidc.client_secret_path are both set; keep one");
        None
    } else if let Some(p) = secret_path {
        let expanded = r.expand(&p);
        let path = resolve(base, &expanded);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Some(Secret(s.trim().to_string())),
            Ok(_) => {
                r.error("oidc.client_secret_path", format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                r.error("oidc.client_secret_path", format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    } else {
        secret_value.filter(|s| !s.is_empty()).map(Secret)
    };
    let mut scope = r.string_list("oidc.scope");
    if !r.in_file("oidc.scope") && scope.is_empty() {
        scope = vec!["openid".into(), "profile".into(), "email".into()];
    }
    let extra_params = r.string_map("oidc.extra_params");
    let allowed_domains = r.string_list("oidc.allowed_domains");
    let allowed_groups = r.string_list("oidc.allowed_groups");
    let allowed_users = r.string_list("oidc.allowed_users");
    let pkce_enabled = r.boolean("oidc.pkce.enabled", false);
    let pkce_method = match r.string("oidc.pkce.method", "S256").as_str() {
        "S256" => PkceMethod::S256,
        "plain" => PkceMethod::Plain,
        other => {
            r.error("oidc.pkce.method", format!("{other:?} is not a PKCE method (S256 or plain)"));
            PkceMethod::S256
        }
    };
    let strip_email_domain = r.opt_bool("oidc.strip_email_domain");
    let email_verified_required = r.boolean("oidc.email_verified_required", true);
    let use_expiry_from_token = r.boolean("oidc.use_expiry_from_token", false);

    if issuer.is_empty() {
        return None;
    }
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) || server_host(&issuer).is_none() {
        r.error("oidc.issuer", format!("{issuer:?} must be an http:// or https:// URL"));
    }
    if client_id.is_empty() {
        r.error("oidc.client_id", "must be set when oidc.issuer is set");
    }
    if client_secret.is_none() && !r.errors.iter().any(|e| e.path.starts_with("oidc.client_secret")) {
        r.error(
            "oidc.client_secret",
            "must be set when oidc.issuer is set (or oidc.client_secret_path, or HEADSCALE_OIDC_CLIENT_SECRET in the environment)",
        );
    }
    if !scope.iter().any(|s| s == "openid") {
        r.error("oidc.scope", "must include \"openid\"");
    }
    Some(Oidc {
        only_start_if_oidc_is_available,
        issuer,
        client_id,
        client_secret,
        scope,
        extra_params,
        allowed_domains,
        allowed_groups,
        allowed_users,
        pkce_enabled,
        pkce_method,
        strip_email_domain,
        email_verified_required,
        use_expiry_from_token,
    })
}

#[cfg(test)]
mod tests;
