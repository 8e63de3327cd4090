//! Headscale's old spellings and retired keys, and the Headscale keys that
//! mean nothing on a router: a Headscale user's file loads unchanged, with a
//! warning that names what to write instead.

use super::Reader;

/// Deprecated spelling → the key that replaced it; the old value still works, with a warning.
const ALIASES: &[(&str, &str)] = &[
    ("acl_policy_path", "policy.path"),
    ("dns_config.magic_dns", "dns.magic_dns"),
    ("dns_config.base_domain", "dns.base_domain"),
    ("dns_config.override_local_dns", "dns.override_local_dns"),
    ("dns_config.nameservers", "dns.nameservers.global"),
    ("dns_config.restricted_nameservers", "dns.nameservers.split"),
    ("dns_config.domains", "dns.search_domains"),
    ("dns_config.extra_records", "dns.extra_records"),
    ("ephemeral_node_inactivity_timeout", "node.ephemeral.inactivity_timeout"),
    ("oidc.expiry", "node.expiry"),
    ("db_type", "database.type"),
    ("db_path", "database.sqlite.path"),
    ("ip_prefixes", "prefixes"),
];

/// Keys that no longer do anything, with what to do instead; setting one warns.
const OBSOLETE: &[(&str, &str)] = &[
    ("randomize_client_port", "set \"randomizeClientPort\": true at the top of the policy file instead"),
    ("oidc.map_legacy_users", "users are matched by issuer and subject"),
    ("dns.use_username_in_magic_dns", "MagicDNS names are <host>.<base_domain>"),
    ("dns_config.use_username_in_magic_dns", "MagicDNS names are <host>.<base_domain>"),
    ("private_key_path", "the pre-Noise protocol is gone; only noise.private_key_path is used"),
    ("grpc_listen_addr", "tinyscale has no gRPC API; the CLI talks over unix_socket"),
    ("grpc_allow_insecure", "tinyscale has no gRPC API; the CLI talks over unix_socket"),
    ("derp.server.stun", "the STUN listener follows derp.server.stun_listen_addr"),
];

/// Headscale keys with nothing to do on a router: accepted silently.
const ACCEPTED: &[&str] = &[
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
];

/// Tells the reader about every old, retired and accepted key (before any key is read).
pub fn declare(r: &mut Reader) {
    for (old, new) in ALIASES {
        r.alias(old, new);
    }
    for (key, hint) in OBSOLETE {
        r.obsolete(key, hint);
    }
    for key in ACCEPTED {
        r.accept(key);
    }
}
