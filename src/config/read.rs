//! Reads the whole configuration: the top-level keys here, each section with
//! rules of its own in `sections`.

use std::net::SocketAddr;
use std::path::Path;

use log::LevelFilter;

use super::{
    deprecations, parse_listen_addr, resolve, sections, Config, PolicyMode, Reader, Tls, DATA_DIR, DEFAULT_LISTEN,
};
use crate::clock::Span;
use crate::logger;
use crate::url::HttpUrl;

pub fn read(r: &mut Reader, file: Option<&Path>, base: &Path) -> Config {
    let data = |name: &str| resolve(base, &format!("{DATA_DIR}/{name}"));

    deprecations::declare(r);

    let (server_url, server) = read_server_url(r);
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
    let prefixes = sections::read_prefixes(r);
    // Without a config file a first start must work out of the box: the
    // relay and STUN come on, beside the control listener.
    let embedded_relay = (file.is_none() && cfg!(feature = "derp")).then_some(listen_addr);
    let derp = sections::read_derp(r, base, &data, embedded_relay);

    let node_expiry = r.span("node.expiry", Span(0));
    let ephemeral_inactivity_timeout = r.span("node.ephemeral.inactivity_timeout", Span(120));
    if ephemeral_inactivity_timeout.secs() <= 65 {
        r.error(
            "node.ephemeral.inactivity_timeout",
            format!("{ephemeral_inactivity_timeout} is too short: clients send keep-alives every 60s, so it must be more than 65s"),
        );
    }

    let database = sections::read_database(r, base, &data);

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

    let dns = sections::read_dns(r, base, &server.host);

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
    let oidc = sections::read_oidc(r, base);
    let admin = super::Admin {
        allowed_groups: r.string_list("admin.allowed_groups"),
        allowed_users: r.string_list("admin.allowed_users"),
    };
    if oidc.is_some() && admin.allowed_groups.is_empty() && admin.allowed_users.is_empty() {
        r.note(
            "admin",
            "no admin.allowed_groups or admin.allowed_users: nobody can sign in to the admin web UI at /admin",
        );
    }
    let max_nodes = r.int("tuning.max_nodes", 10_000);
    if !(1..=1_000_000).contains(&max_nodes) {
        r.error("tuning.max_nodes", format!("{max_nodes} is not between 1 and 1000000"));
    }
    let compress_maps = r.boolean("tuning.compress_maps", true);
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
        server,
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
        admin,
        max_connections: max_connections.clamp(1, 1_000_000) as usize,
        max_nodes: max_nodes.clamp(1, 1_000_000) as usize,
        compress_maps,
    }
}

pub(super) fn addr_or(r: &mut Reader, key: &str, default: &str) -> SocketAddr {
    let text = r.string(key, default);
    parse_listen_addr(&text).unwrap_or_else(|e| {
        r.error(key, e);
        // The default is a literal that parses.
        parse_listen_addr(default).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
    })
}

/// `server_url` and its parts; an unusable URL is an error, and the parts of
/// the default stand in so the rest of the file is still checked.
fn read_server_url(r: &mut Reader) -> (String, HttpUrl) {
    let default = format!("http://{DEFAULT_LISTEN}");
    let url = r.string("server_url", &default);
    let parts = crate::url::parse_http(&url).or_else(|| {
        r.error("server_url", format!("{url:?} must be an http:// or https:// URL with a host"));
        crate::url::parse_http(&default)
    });
    // The default is a literal URL that parses.
    let parts = parts.unwrap_or(HttpUrl { https: false, host: "127.0.0.1".into(), port: 8080 });
    (url.trim_end_matches('/').to_string(), parts)
}

/// Paths that live in RAM on OpenWrt (`/var` → `/tmp`, a tmpfs).
fn in_ram_on_openwrt(p: &Path) -> bool {
    p.starts_with("/tmp") || p.starts_with("/var")
}
