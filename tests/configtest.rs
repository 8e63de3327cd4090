//! `tinyscale configtest`: offline, every error at once with its line.

mod common;

use common::*;

#[test]
fn the_seed_oidc_block_passes() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("seed-oidc.yaml");
    let o = run(dir.path(), &["configtest", "-c", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"));
}

#[test]
fn a_full_headscale_config_passes_offline() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("headscale-full.yaml");
    // No network in the environment: a DERP URL or an issuer is never fetched.
    let o = run(dir.path(), &["configtest", "-c", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("/var/lib/headscale/noise_private.key is in RAM on OpenWrt"), "{err}");
    assert!(err.contains("tinyscale keeps its state in sled"), "{err}");
    assert!(!err.contains("unknown key"), "{err}");
}

#[test]
fn every_error_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("broken.yaml");
    let o = run(dir.path(), &["configtest", "-c", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let name = f.display().to_string();
    assert!(err.contains(&format!("error: {name}:5: log.format: expected a string")), "{err}");
    assert!(err.contains(&format!("error: {name}:7: prefixes.v4:")), "{err}");
    assert!(
        err.contains(&format!("warning: {name}:12: dns.nameservrs: unknown key (did you mean `dns.nameservers`?)")),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn env_overrides_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = cmd(d).args(["configtest"]).env("HEADSCALE_PREFIXES_V4", "10.0.0.0/8").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("environment HEADSCALE_PREFIXES_V4: prefixes.v4"), "{}", stderr(&o));
    let o = run(d, &["configtest", "-c", "/nonexistent/config.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = cmd(d).args(["configtest"]).env("TINYSCALE_CONFIG", "/nonexistent.yaml").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("TINYSCALE_CONFIG"), "{}", stderr(&o));
    // No file at all: the embedded defaults are valid.
    let o = run(d, &["configtest"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("embedded defaults: OK"));
    // serve refuses a broken file with every error listed.
    std::fs::write(d.join("config.yaml"), "log:\n  level: loud\nprefixes:\n  v4: banana\n").unwrap();
    let o = run(d, &["serve"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("log.level") && err.contains("prefixes.v4"), "{err}");
}
