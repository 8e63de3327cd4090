use log::LevelFilter;

use super::*;
use crate::clock::Span;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// `text` as the file `./config.yaml` (`None` would mean the embedded defaults).
fn ok(text: &str, env: &[(&str, &str)]) -> Loaded {
    let e = env_of(env);
    match parse(text, Some(Path::new("config.yaml")), &e) {
        Ok(l) => l,
        Err(errs) => panic!("unexpected errors: {errs}"),
    }
}

fn errs(text: &str, env: &[(&str, &str)]) -> Errors {
    let e = env_of(env);
    parse(text, Some(Path::new("config.yaml")), &e).expect_err("expected the config to be refused")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn embedded_defaults_serve_locally() {
    let c = parse("", None, &env_of(&[])).unwrap().config;
    assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server_url, "http://127.0.0.1:8080");
    assert_eq!(c.unix_socket, PathBuf::from("tinyscale-data/tinyscale.sock"));
    assert_eq!(c.database.path, PathBuf::from("tinyscale-data/db"));
    assert_eq!(c.noise_private_key_path, PathBuf::from("tinyscale-data/noise_private.key"));
    assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/10");
    assert_eq!(c.prefixes.v6.unwrap().to_string(), "fd7a:115c:a1e0::/48");
    assert_eq!(c.dns.base_domain, DEFAULT_BASE_DOMAIN);
    assert!(!c.dns.override_local_dns);
    assert!(c.oidc.is_none());
    assert_eq!(c.database.cache_capacity, 1 << 20);
    assert_eq!(c.unix_socket_permission, 0o770);
}

#[test]
fn without_a_file_the_relay_and_stun_run_beside_the_listener() {
    let none = |env: &[(&str, &str)]| parse("", None, &env_of(env)).unwrap().config.derp.server;
    // A config file keeps Headscale's default: no relay unless it says so.
    let d = ok("server_url: http://127.0.0.1:8080\n", &[]).config.derp.server;
    assert!(!d.enabled && d.stun_listen_addr.is_none());
    assert_eq!(d.tls_listen_addr.to_string(), "0.0.0.0:8443");
    if !cfg!(feature = "derp") {
        // A build without the relay cannot turn it on.
        assert!(!none(&[]).enabled);
        return;
    }
    let d = none(&[]);
    assert!(d.enabled);
    assert_eq!(d.tls_listen_addr.to_string(), "127.0.0.1:8443");
    assert_eq!(d.stun_listen_addr.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:3478"));
    let d = none(&[("TINYSCALE_LISTEN_ADDR", "0.0.0.0:8080")]);
    assert_eq!(
        (d.tls_listen_addr.to_string(), d.stun_listen_addr.unwrap().to_string()),
        ("0.0.0.0:8443".into(), "0.0.0.0:3478".into())
    );
    // A free port asked for the listener means free ports for the relay too.
    let d = none(&[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    assert_eq!(
        (d.tls_listen_addr.to_string(), d.stun_listen_addr.unwrap().to_string()),
        ("127.0.0.1:0".into(), "127.0.0.1:0".into())
    );
    // The environment still decides.
    let d = none(&[("TINYSCALE_DERP_SERVER_ENABLED", "false"), ("TINYSCALE_DERP_SERVER_TLS_LISTEN_ADDR", ":9443")]);
    assert!(!d.enabled);
    assert_eq!(d.tls_listen_addr.to_string(), "0.0.0.0:9443");
}

#[test]
fn relative_paths_follow_the_config_file() {
    let e = env_of(&[]);
    let l = parse("noise:\n  private_key_path: keys/noise.key\n", Some(Path::new("/etc/tinyscale/config.yaml")), &e)
        .unwrap();
    assert_eq!(l.config.noise_private_key_path, PathBuf::from("/etc/tinyscale/keys/noise.key"));
    assert_eq!(l.config.database.path, PathBuf::from("/etc/tinyscale/tinyscale-data/db"));
}

#[test]
fn the_seed_oidc_block_loads_verbatim() {
    let l = ok(&fixture("seed-oidc.yaml"), &[]);
    let o = l.config.oidc.expect("oidc is configured");
    assert_eq!(o.issuer, "https://authentik.company/application/o/<headscale-slug>/");
    assert_eq!(o.client_secret.as_ref().map(Secret::expose), Some("<Client secret from authentik>"));
    assert_eq!(o.scope, ["openid", "profile", "email", "custom"]);
    assert_eq!(o.extra_params.get("domain_hint").map(String::as_str), Some("acmecorp.net"));
    assert_eq!(o.allowed_domains, ["acmecorp.net"]);
    assert_eq!(o.allowed_groups, ["/headscale"]);
    assert_eq!(o.allowed_users, ["dominic@acmecorp.net"]);
    assert!(o.pkce_enabled);
    assert_eq!(o.pkce_method, PkceMethod::S256);
    assert_eq!(o.strip_email_domain, Some(true));
    assert!(o.only_start_if_oidc_is_available && o.email_verified_required && !o.use_expiry_from_token);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn a_full_headscale_file_loads_with_only_the_expected_remarks() {
    let l = ok(&fixture("headscale-full.yaml"), &[]);
    let c = &l.config;
    assert_eq!(c.server_url, "https://hs.example.net:443");
    assert_eq!(c.ephemeral_inactivity_timeout, Span(1800));
    assert_eq!(c.dns.nameservers_global.len(), 4);
    assert!(c.dns.override_local_dns);
    assert_eq!(c.derp.urls, ["https://controlplane.tailscale.com/derpmap/default"]);
    assert_eq!(c.unix_socket, PathBuf::from("/var/run/headscale/headscale.sock"));
    // No unknown keys; only the RAM warnings for /var/lib paths.
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(w.iter().all(|w| w.contains("will NOT survive a reboot")), "{w:#?}");
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(l.notes.iter().any(|n| n.path == "database.type" && n.message.contains("sled")), "{:?}", l.notes);
}

#[test]
fn every_error_is_reported_with_its_line() {
    let e = errs(&fixture("broken.yaml"), &[]);
    let got: Vec<(String, Option<usize>)> = e.errors.iter().map(|d| (d.path.clone(), d.line())).collect();
    assert!(got.contains(&("log.format".into(), Some(5))), "{got:?}");
    assert!(got.contains(&("prefixes.v4".into(), Some(7))), "{got:?}");
    assert_eq!(e.errors.len(), 2, "{e}");
    let w: Vec<String> = e.warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter().any(|w| w.starts_with("line 12: dns.nameservrs: unknown key (did you mean `dns.nameservers`?)")),
        "{w:?}"
    );
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let e = errs("server_url: http://x\nlog:\n  level: [info\n", &[]);
    assert_eq!(e.errors.len(), 1);
    assert!(e.errors[0].line().is_some(), "{e}");
}

#[test]
fn env_overrides_win_over_the_file() {
    let text = "listen_addr: 127.0.0.1:9999\nlog:\n  level: info\n";
    let c = ok(text, &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:7000"), ("HEADSCALE_LOG_LEVEL", "debug")]).config;
    assert_eq!(c.listen_addr.to_string(), "127.0.0.1:7000");
    assert_eq!(c.log_level, LevelFilter::Debug);
    // A bad env value is an error naming the variable.
    let e = errs(text, &[("HEADSCALE_LISTEN_ADDR", "nowhere")]);
    assert_eq!(e.errors[0].origin, Origin::Env("HEADSCALE_LISTEN_ADDR".into()));
    // The config file's own path is not a key.
    let l = parse("", None, &env_of(&[("TINYSCALE_CONFIG", "/nonexistent")])).unwrap();
    assert!(l.config.file.is_none() && l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn oidc_secret_sources() {
    let base = "oidc:\n  issuer: https://auth.example/application/o/ts/\n  client_id: ts\n";
    // Env wins over file and path, without a mutual-exclusion error.
    let both = format!("{base}  client_secret: a\n  client_secret_path: /nonexistent\n");
    let l = ok(&both, &[("HEADSCALE_OIDC_CLIENT_SECRET", "from-env")]);
    assert_eq!(l.config.oidc.unwrap().client_secret.unwrap().expose(), "from-env");
    assert!(l
        .notes
        .iter()
        .any(|n| n.message.contains("HEADSCALE_OIDC_CLIENT_SECRET") && !n.message.contains("from-env")));
    // Both in the file is an error.
    let e = errs(&both, &[]);
    assert!(e.errors.iter().any(|d| d.message.contains("both set")), "{e}");
    // A path with ${VAR} expansion, whitespace trimmed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oidc_client_secret"), "  s3cret\n").unwrap();
    let cfg = format!("{base}  client_secret_path: \"${{CREDENTIALS_DIRECTORY}}/oidc_client_secret\"\n");
    let creds = dir.path().to_str().unwrap();
    let o = ok(&cfg, &[("CREDENTIALS_DIRECTORY", creds)]).config.oidc.unwrap();
    assert_eq!(o.client_secret.unwrap().expose(), "s3cret");
    // No secret at all.
    let e = errs(base, &[]);
    assert!(e.errors.iter().any(|d| d.path == "oidc.client_secret"), "{e}");
    // The secret never shows in Debug output.
    let o = ok(&format!("{base}  client_secret: hunter2\n"), &[]).config.oidc.unwrap();
    assert!(!format!("{o:?}").contains("hunter2"));
}

#[test]
fn deprecated_keys_still_load() {
    let text = "dns_config:\n  base_domain: old.example\n  nameservers: [9.9.9.9]\nacl_policy_path: /etc/acl.hujson\nephemeral_node_inactivity_timeout: 5m\n";
    let l = ok(text, &[]);
    assert_eq!(l.config.dns.base_domain, "old.example");
    assert_eq!(l.config.dns.nameservers_global, ["9.9.9.9"]);
    assert_eq!(l.config.policy_path, Some(PathBuf::from("/etc/acl.hujson")));
    assert_eq!(l.config.ephemeral_inactivity_timeout, Span(300));
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("dns_config.base_domain") && w.contains("use `dns.base_domain`")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("acl_policy_path") && w.contains("policy.path")), "{w:?}");
    assert_eq!(w.len(), 4, "{w:?}");
}

#[test]
fn legacy_ip_prefixes_list() {
    let c = ok("ip_prefixes:\n  - fd7a:115c:a1e0::/48\n  - 100.64.0.0/16\n", &[]).config;
    assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/16");
    assert_eq!(c.prefixes.v6.unwrap().to_string(), "fd7a:115c:a1e0::/48");
}

#[test]
fn prefix_rules() {
    let c = ok("prefixes:\n  v4: 100.64.0.0/24\n", &[]).config;
    assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/24");
    assert!(c.prefixes.v6.is_none(), "an explicit prefixes section without v6 disables v6");
    let e = errs("prefixes:\n  v4: 10.0.0.0/8\n  v6: 2001:db8::/32\n", &[]);
    assert_eq!(e.errors.len(), 2, "{e}");
    let e = errs("prefixes:\n  v4: \"\"\n  v6: \"\"\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "prefixes"), "{e}");
    let e = errs("prefixes:\n  allocation: shuffled\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "prefixes.allocation"), "{e}");
}

#[test]
fn ram_paths_are_warned_about() {
    let l = ok("database:\n  sled:\n    path: /tmp/ts/db\n", &[]);
    assert!(l.warnings.iter().any(|w| w.path == "database.sled.path" && w.message.contains("NOT survive a reboot")));
}

#[test]
fn semantic_checks() {
    let e = errs("server_url: https://ts.example.com\ndns:\n  base_domain: example.com\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "dns.base_domain"), "{e}");
    let e = errs("dns:\n  override_local_dns: true\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "dns.override_local_dns"), "{e}");
    let e = errs("node:\n  ephemeral:\n    inactivity_timeout: 30s\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "node.ephemeral.inactivity_timeout"), "{e}");
    let e = errs("tls_cert_path: /etc/cert.pem\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "tls_cert_path"), "{e}");
    let e = errs("derp:\n  server:\n    enabled: true\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "derp.server.stun_listen_addr"), "{e}");
    let e = errs("database:\n  type: mysql\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "database.type"), "{e}");
    let e = errs("unix_socket_permission: \"0999\"\n", &[]);
    assert!(e.errors.iter().any(|d| d.path == "unix_socket_permission"), "{e}");
    let e = errs("- just\n- a list\n", &[]);
    assert_eq!(e.errors.len(), 1);
}

#[test]
fn listen_addr_forms() {
    assert_eq!(parse_listen_addr(":8080").unwrap().to_string(), "0.0.0.0:8080");
    assert_eq!(parse_listen_addr("localhost:1").unwrap().to_string(), "127.0.0.1:1");
    assert_eq!(parse_listen_addr("[::]:443").unwrap().to_string(), "[::]:443");
    assert!(parse_listen_addr("router:80").is_err());
}

#[test]
fn env_expansion() {
    let e = env_of(&[("A", "x"), ("B_2", "y")]);
    assert_eq!(expand_env("${A}/$B_2/$NOPE/${A", &e), "x/y//${A");
    assert_eq!(expand_env("cost $5", &e), "cost ");
}

#[test]
fn derp_paths_are_read_and_checked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("derp.yaml");
    std::fs::write(&good, "regions:\n  900:\n    regionid: 900\n    regioncode: home\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: router.lan\n").unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "regions: [1, 2\n").unwrap();
    let text = format!("derp:\n  paths:\n    - {}\n", good.display());
    let c = ok(&text, &[]).config;
    assert_eq!(c.derp.from_paths.regions[&900].nodes[0].host_name, "router.lan");
    let text = format!("derp:\n  paths:\n    - {}\n    - {}/missing.yaml\n", broken.display(), dir.path().display());
    let e = errs(&text, &[]);
    let got: Vec<(String, Option<usize>)> = e.errors.iter().map(|d| (d.path.clone(), d.line())).collect();
    assert_eq!(got, [("derp.paths[0]".to_string(), Some(3)), ("derp.paths[1]".to_string(), Some(4))], "{e}");
}

#[test]
fn map_compression_is_on_unless_the_config_or_the_environment_says_off() {
    assert!(parse("", None, &env_of(&[])).unwrap().config.compress_maps);
    assert!(!ok("tuning:\n  compress_maps: false\n", &[]).config.compress_maps);
    assert!(!ok("", &[("TINYSCALE_TUNING_COMPRESS_MAPS", "false")]).config.compress_maps);
    assert!(
        ok("tuning:\n  compress_maps: false\n", &[("TINYSCALE_TUNING_COMPRESS_MAPS", "true")]).config.compress_maps
    );
    let e = errs("tuning:\n  compress_maps: maybe\n", &[]);
    assert!(e.to_string().contains("tuning.compress_maps"), "{e}");
}
