//! The policy engine against what Tailscale's own control plane computed:
//! every case of ../shared/fixtures/policy (acl/, grant/, routes/; the
//! README there gives the format and how to compare), through the library,
//! and a handful through the real binary's `policy simulate`.
//!
//! A case deliberately not followed is listed in [`EXCLUDED`] with its
//! reason; nothing else may differ.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tinyscale::policy::simulate::{simulate, Topology};
use tinyscale::policy::Policy;

/// Cases not followed, and why.
const EXCLUDED: &[(&str, &str)] = &[];

#[derive(Deserialize)]
struct Case {
    id: String,
    /// HuJSON text, or the policy as an object.
    policy: Value,
    api_response_code: u16,
    error: Option<String>,
    topology: Topology,
    expect: Option<BTreeMap<String, Expect>>,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
struct Expect {
    filter: Option<Vec<Rule>>,
    peers: BTreeMap<String, Peer>,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(rename = "SrcIPs", default)]
    src_ips: Option<Vec<String>>,
    #[serde(rename = "DstPorts", default)]
    dst_ports: Option<Vec<NetPort>>,
    #[serde(rename = "IPProto", default)]
    ip_proto: Option<Vec<u8>>,
    #[serde(rename = "CapGrant", default)]
    cap_grant: Option<Vec<CapGrant>>,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
struct NetPort {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "Ports")]
    ports: Ports,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
struct Ports {
    #[serde(rename = "First")]
    first: u16,
    #[serde(rename = "Last")]
    last: u16,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
struct CapGrant {
    #[serde(rename = "Dsts")]
    dsts: Vec<String>,
    #[serde(rename = "CapMap")]
    cap_map: BTreeMap<String, Value>,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
struct Peer {
    #[serde(rename = "AllowedIPs", default)]
    allowed_ips: Option<Vec<String>>,
    #[serde(rename = "PrimaryRoutes", default)]
    primary_routes: Option<Vec<String>>,
}

/// A rule in the README's terms: sets where order does not matter.
type Canon = (
    BTreeSet<String>,
    BTreeSet<(String, u16, u16)>,
    BTreeSet<u8>,
    BTreeSet<(BTreeSet<String>, BTreeMap<String, BTreeSet<String>>)>,
);

fn canon(r: &Rule) -> Canon {
    let set = |v: &Option<Vec<String>>| v.iter().flatten().cloned().collect::<BTreeSet<_>>();
    (
        set(&r.src_ips),
        r.dst_ports.iter().flatten().map(|d| (d.ip.clone(), d.ports.first, d.ports.last)).collect(),
        r.ip_proto.iter().flatten().copied().collect(),
        r.cap_grant
            .iter()
            .flatten()
            .map(|g| {
                let caps = g
                    .cap_map
                    .iter()
                    .map(|(k, v)| {
                        let values = match v {
                            Value::Array(items) => items.iter().map(|x| x.to_string()).collect(),
                            Value::Null => BTreeSet::new(),
                            other => BTreeSet::from([other.to_string()]),
                        };
                        (k.clone(), values)
                    })
                    .collect();
                (g.dsts.iter().cloned().collect(), caps)
            })
            .collect(),
    )
}

fn rules_canon(rules: &Option<Vec<Rule>>) -> Vec<Canon> {
    let mut v: Vec<Canon> = rules.iter().flatten().map(canon).collect();
    v.sort();
    v
}

fn peers_canon(p: &BTreeMap<String, Peer>) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    p.iter()
        .map(|(k, v)| {
            let set = |x: &Option<Vec<String>>| x.iter().flatten().cloned().collect::<BTreeSet<_>>();
            (k.clone(), (set(&v.allowed_ips), set(&v.primary_routes)))
        })
        .collect()
}

fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/policy");
    assert!(
        dir.join("acl").is_dir() && dir.join("grant").is_dir() && dir.join("routes").is_dir(),
        "the policy fixtures are missing: expected {} with acl/, grant/ and routes/ (see its README.md)",
        dir.display()
    );
    dir
}

fn load(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn policy_text(c: &Case) -> String {
    match &c.policy {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one case through the library; `Err` says how it differs.
fn check(c: &Case) -> Result<(), String> {
    let parsed = Policy::parse(&policy_text(c));
    if c.api_response_code != 200 {
        let want = c.error.clone().unwrap_or_default();
        return match parsed {
            Ok(_) => Err(format!("accepted, but Tailscale refused it: {want}")),
            Err(e) if e.to_string().contains(&want) => Ok(()),
            Err(e) => Err(format!("refused, but not saying {want:?}: {e}")),
        };
    }
    let policy = parsed.map_err(|e| format!("refused: {e}"))?;
    let got = simulate(&policy, &c.topology).map_err(|e| format!("topology: {e}"))?;
    let got: BTreeMap<String, Expect> =
        serde_json::from_value(serde_json::to_value(&got).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    for (name, want) in c.expect.iter().flatten() {
        let Some(have) = got.get(name) else {
            diffs.push(format!("{name}: missing from the answer"));
            continue;
        };
        if rules_canon(&want.filter) != rules_canon(&have.filter) {
            diffs.push(format!(
                "{name}: filter\n    want {}\n    got  {}",
                serde_json::to_string(&want.filter).unwrap_or_default(),
                serde_json::to_string(&have.filter).unwrap_or_default()
            ));
        }
        let (w, h) = (peers_canon(&want.peers), peers_canon(&have.peers));
        if w != h {
            let names: BTreeSet<&String> = w.keys().chain(h.keys()).collect();
            for p in names {
                if w.get(p) != h.get(p) {
                    diffs.push(format!("{name}: peer {p}: want {:?}, got {:?}", w.get(p), h.get(p)));
                }
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n  "))
    }
}

/// A few cases through the real binary's `policy simulate`, as an admin
/// would run it: the same answers, and a refused policy's message on stderr
/// with exit status 1.
#[test]
fn the_binary_simulates_the_same() {
    let dir = fixtures_dir();
    let tmp = tempfile::tempdir().expect("a temp dir");
    for case in [
        "acl/acl-a04.json",
        "acl/acl-ar02.json",
        "grant/grant-a4.json",
        "grant/via-grant-v36.json",
        "routes/routes-d1-basic-route-auto-approval.json",
        "routes/routes-ea1-exitnode-field-basic.json",
        "acl/acl-err07.json",
        "grant/grant-v04.json",
    ] {
        let path = dir.join(case);
        let c = load(&path);
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read the case")).expect("JSON");
        std::fs::write(tmp.path().join("topology.json"), raw["topology"].to_string()).expect("write the topology");
        std::fs::write(tmp.path().join("policy.hujson"), policy_text(&c)).expect("write the policy");
        let out = common::run(
            tmp.path(),
            &["policy", "simulate", "--topology", "topology.json", "-f", "policy.hujson", "-o", "json"],
        );
        if c.api_response_code != 200 {
            let want = c.error.clone().unwrap_or_default();
            assert_eq!(out.status.code(), Some(1), "{case}: a refused policy exits 1");
            assert!(
                common::stderr(&out).contains(&want),
                "{case}: stderr does not say {want:?}:\n{}",
                common::stderr(&out)
            );
            continue;
        }
        assert!(out.status.success(), "{case}: {}", common::stderr(&out));
        let got: BTreeMap<String, Expect> =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{case}: not the expected shape: {e}"));
        for (name, want) in c.expect.iter().flatten() {
            let have = got.get(name).unwrap_or_else(|| panic!("{case}: {name} missing"));
            assert_eq!(rules_canon(&want.filter), rules_canon(&have.filter), "{case}: {name}'s filter");
            assert_eq!(peers_canon(&want.peers), peers_canon(&have.peers), "{case}: {name}'s peers");
        }
    }
}

#[test]
fn tailscale_results_per_folder() {
    let dir = fixtures_dir();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for folder in ["acl", "grant", "routes"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
            .unwrap_or_else(|e| panic!("{folder}: {e}"))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{folder}/ holds no cases");
        let (mut passed, mut excluded, mut failed) = (0, 0, 0);
        for f in &files {
            let c = load(f);
            if EXCLUDED.iter().any(|(id, _)| *id == c.id) {
                excluded += 1;
                continue;
            }
            match check(&c) {
                Ok(()) => passed += 1,
                Err(e) => {
                    failed += 1;
                    failures.push(format!("{folder}/{}: {e}", c.id));
                }
            }
        }
        summary.push(format!("{folder}: {passed} passed, {excluded} excluded, {failed} failed"));
    }
    for s in &summary {
        println!("{s}");
    }
    for (id, why) in EXCLUDED {
        println!("excluded {id}: {why}");
    }
    let shown: Vec<&String> = failures.iter().take(40).collect();
    assert!(
        failures.is_empty(),
        "{}\n{} case(s) differ from Tailscale:\n{}",
        summary.join("\n"),
        failures.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
}
