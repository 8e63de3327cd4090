//! DNS on the live server, through the Rust test client: the map carries
//! the `dns:` section as configured, and an edit of `extra_records_path`
//! reaches an open stream as a delta, while a broken edit keeps the last
//! good records and reaches no one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::client::{join, MapStream};
use common::*;

const CONFIG: &str = r#"
server_url: http://127.0.0.1:8080
dns:
  magic_dns: true
  base_domain: tailnet.internal
  override_local_dns: true
  nameservers:
    global:
      - 1.1.1.1
      - https://dns.nextdns.io/abc123
    split:
      lan:
        - 192.168.1.1
  search_domains:
    - lan
  extra_records_path: records.json
"#;

fn write_records(dir: &Path, text: &str) {
    // Written whole and renamed into place, as editors and scripts do.
    let tmp = dir.join("records.json.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("records.json")).unwrap();
}

/// The next `DNSConfig` sent on `stream` within `secs`, skipping other news.
async fn next_dns(stream: &mut MapStream, secs: u64) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        let up = stream.next_update(left).await?;
        assert!(up.get("Peers").is_none(), "a full map, not a delta: {up}");
        if let Some(d) = up.get("DNSConfig") {
            return Some(d.clone());
        }
    }
    None
}

#[tokio::test]
async fn the_map_carries_dns_and_a_records_file_edit_arrives_as_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.yaml"), CONFIG).unwrap();
    write_records(d, r#"[{"name": "nas.lan", "type": "A", "value": "192.168.1.5"}]"#);
    let s = Server::start(d, &[], &[("TINYSCALE_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = s.host_port();
    ok(d, &["users", "create", "alice"]);
    let key = json(d, &["preauthkeys", "create", "--user", "alice", "--reusable", "-o", "json"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut a = join(&addr, &key, "laptop").await;

    let dns = &a.first["DNSConfig"];
    assert_eq!(dns["Resolvers"], json!([{"Addr": "1.1.1.1"}, {"Addr": "https://dns.nextdns.io/abc123"}]), "{dns}");
    assert_eq!(dns["Routes"], json!({"lan.": [{"Addr": "192.168.1.1"}]}), "{dns}");
    assert_eq!(dns["Domains"], json!(["tailnet.internal", "lan"]), "{dns}");
    assert_eq!(dns["Proxied"], true, "{dns}");
    assert_eq!(dns["ExtraRecords"], json!([{"Name": "nas.lan", "Type": "A", "Value": "192.168.1.5"}]), "{dns}");
    assert_eq!(a.first["Node"]["Name"], "laptop.tailnet.internal.");

    // An edit reaches the open stream as a delta, the rest of DNS unchanged.
    write_records(
        d,
        r#"[{"name": "nas.lan", "type": "A", "value": "192.168.1.6"},
            {"Name": "printer.lan", "Type": "AAAA", "Value": "fd00::7"}]"#,
    );
    let got = next_dns(&mut a.stream, 15).await.unwrap_or_else(|| panic!("no DNS delta:\n{}", s.log()));
    assert_eq!(
        got["ExtraRecords"],
        json!([{"Name": "nas.lan", "Type": "A", "Value": "192.168.1.6"}, {"Name": "printer.lan", "Type": "AAAA", "Value": "fd00::7"}])
    );
    assert_eq!(got["Routes"], dns["Routes"]);
    assert_eq!(got["Resolvers"], dns["Resolvers"]);

    // Broken, emptied and removed files are logged; the last good records stay.
    write_records(d, r#"[{"name": "nas.lan", "type": "A", "value": "192.168.1."#);
    assert!(s.wait_log("keeping the last good records"), "{}", s.log());
    assert!(s.log().contains("not a JSON list"), "{}", s.log());
    write_records(d, r#"[{"name": "nas.lan", "type": "CNAME", "value": "192.168.1.9"}]"#);
    assert!(s.wait_log("only A and AAAA"), "{}", s.log());
    write_records(d, "");
    assert!(s.wait_log("is empty"), "{}", s.log());
    std::fs::remove_file(d.join("records.json")).unwrap();
    assert!(s.wait_log("No such file"), "{}", s.log());
    assert!(next_dns(&mut a.stream, 1).await.is_none(), "a broken file reached the client");
    // A device joining now gets the last good records.
    let b = join(&addr, &key, "phone").await;
    assert_eq!(b.first["DNSConfig"]["ExtraRecords"], got["ExtraRecords"]);

    // A good file again: both streams get it; `[]` clears the records.
    write_records(d, "[]");
    let got = next_dns(&mut a.stream, 15).await.unwrap_or_else(|| panic!("no DNS delta:\n{}", s.log()));
    assert!(got.get("ExtraRecords").is_none(), "{got}");
    assert_eq!(got["Domains"], dns["Domains"]);
}

#[test]
fn a_records_file_that_does_not_check_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.yaml"), CONFIG).unwrap();
    // Missing.
    let o = run(d, &["serve"]);
    assert!(!o.status.success() && stderr(&o).contains("records.json"), "{}", stderr(&o));
    assert!(!crashed(o.status, &stderr(&o)));
    write_records(d, r#"[{"name": "nas.lan", "type": "A", "value": "fd00::1"}]"#);
    let o = run(d, &["serve"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot hold"), "{}", stderr(&o));
}

#[test]
fn bad_dns_settings_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = r#"
server_url: http://127.0.0.1:8080
dns:
  base_domain: tailnet.internal
  nameservers:
    global:
      - dns.google
    split:
      "bad domain":
        - 192.168.1.1
      lan:
        - tls://192.168.1.1
  search_domains:
    - "-lan"
  extra_records:
    - name: nas.lan
      type: A
      value: fd00::1
"#;
    std::fs::write(d.join("config.yaml"), bad).unwrap();
    let o = run(d, &["configtest"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    for want in [
        "dns.nameservers.global[0]",
        "\"bad domain\" is not a domain name",
        "dns.nameservers.split.lan[0]",
        "dns.search_domains[0]",
        "dns.extra_records[0]",
        "cannot hold",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    assert!(!crashed(o.status, &err));
}
