//! The sections with rules of their own: prefixes, the relay and the DERP
//! map, the store, DNS and OpenID Connect.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{
    env_suffix, parse_listen_addr, read::addr_or, resolve, Allocation, Database, Derp, DerpServer, Dns, ExtraRecord,
    Oidc, PkceMethod, Prefixes, Reader, Secret, DEFAULT_BASE_DOMAIN, DEFAULT_SLED_CACHE,
};
use crate::clock::Span;
use crate::dns::{self, valid_domain};
use crate::tailcfg::Prefix;

pub fn read_prefixes(r: &mut Reader) -> Prefixes {
    const CGNAT: &str = "100.64.0.0/10";
    const ULA: &str = "fd7a:115c:a1e0::/48";
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

/// The relay's ports when the embedded defaults turn it on.
const EMBEDDED_TLS_PORT: u16 = 8443;
const EMBEDDED_STUN_PORT: u16 = 3478;

/// The relay beside `listen`: on its address, at the relay's own ports, or
/// at free ones when `listen` asks for a free port (port 0).
fn beside(listen: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(listen.ip(), if listen.port() == 0 { 0 } else { port })
}

/// `embedded`: the control listener's address when there is no config file;
/// then the relay is on by default, beside it (Headscale's default, off,
/// holds for every config file).
pub fn read_derp(r: &mut Reader, base: &Path, data: &dyn Fn(&str) -> PathBuf, embedded: Option<SocketAddr>) -> Derp {
    let enabled = r.boolean("derp.server.enabled", embedded.is_some());
    let region_id = r.int("derp.server.region_id", 999);
    let region_code = r.string("derp.server.region_code", "tinyscale");
    let region_name = r.string("derp.server.region_name", "tinyscale embedded DERP");
    let verify_clients = r.boolean("derp.server.verify_clients", true);
    let stun_listen_addr = match r.opt_string("derp.server.stun_listen_addr").filter(|s| !s.is_empty()) {
        Some(s) => parse_listen_addr(&s).map_err(|e| r.error("derp.server.stun_listen_addr", e)).ok(),
        None => embedded.map(|l| beside(l, EMBEDDED_STUN_PORT)),
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
    let tls_default =
        embedded.map_or(SocketAddr::from(([0, 0, 0, 0], EMBEDDED_TLS_PORT)), |l| beside(l, EMBEDDED_TLS_PORT));
    let tls_listen_addr = addr_or(r, "derp.server.tls_listen_addr", &tls_default.to_string());
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
            Ok(text) => match crate::tailcfg::DerpMap::from_yaml(&text) {
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

pub fn read_database(r: &mut Reader, base: &Path, data: &dyn Fn(&str) -> PathBuf) -> Database {
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

pub fn read_dns(r: &mut Reader, base: &Path, server_host: &str) -> Dns {
    let magic_dns = r.boolean("dns.magic_dns", true);
    let base_domain = r.string("dns.base_domain", DEFAULT_BASE_DOMAIN).trim().to_ascii_lowercase();
    if !base_domain.is_empty() {
        if !valid_domain(&base_domain) {
            r.error(
                "dns.base_domain",
                format!("{base_domain:?} is not a domain name (no trailing dot, letters, digits and '-')"),
            );
        } else {
            let host = server_host.to_ascii_lowercase();
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
        if let Err(e) = dns::check_nameserver(ns) {
            r.error(&format!("dns.nameservers.global[{i}]"), e);
        }
    }
    let nameservers_split = r.list_map("dns.nameservers.split");
    for (domain, servers) in &nameservers_split {
        let key = format!("dns.nameservers.split.{domain}");
        if !valid_domain(domain.strip_suffix('.').unwrap_or(domain)) {
            r.error(&key, format!("{domain:?} is not a domain name"));
        }
        if servers.is_empty() {
            r.error(&key, "lists no nameserver for the domain");
        }
        for (i, ns) in servers.iter().enumerate() {
            if let Err(e) = dns::check_nameserver(ns) {
                r.error(&format!("{key}[{i}]"), e);
            }
        }
    }
    let override_local_dns = r.boolean("dns.override_local_dns", !nameservers_global.is_empty());
    if override_local_dns && nameservers_global.is_empty() {
        r.error("dns.override_local_dns", "is true, so dns.nameservers.global must list at least one nameserver");
    }
    let search_domains = r.string_list("dns.search_domains");
    for (i, d) in search_domains.iter().enumerate() {
        if !valid_domain(d.strip_suffix('.').unwrap_or(d)) {
            r.error(&format!("dns.search_domains[{i}]"), format!("{d:?} is not a domain name"));
        }
    }
    let extra_records = match r.value("dns.extra_records") {
        None => Vec::new(),
        Some(v) => match serde_json::from_value::<Vec<ExtraRecord>>(v) {
            Ok(list) => match dns::records::checked(list.into_iter().map(|x| (x.name, x.kind, x.value))) {
                Ok(records) => records,
                Err(e) => {
                    let key = e.index.map_or("dns.extra_records".to_string(), |i| format!("dns.extra_records[{i}]"));
                    r.error(&key, e.message);
                    Vec::new()
                }
            },
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

pub fn read_oidc(r: &mut Reader, base: &Path) -> Option<Oidc> {
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
    if crate::url::parse_http(&issuer).is_none() {
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
