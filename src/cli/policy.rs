//! `policy get` and `policy set` ask the running server; `policy check`
//! and `policy simulate` work offline, like `configtest`: they read files
//! and print, and never talk to a server.

use std::io::Read;
use std::path::Path;

use super::args::{value, Flag};
use super::output::{emit, table};
use super::{fail, no_extra_words, parse, sub, usage_err, Failure};
use crate::api::types::{PolicyRequest, PolicyResponse};
use crate::policy::simulate::{simulate, Topology};
use crate::policy::{hujson, Policy, PolicyError};

const FLAGS: &[Flag] = &[value("file", Some('f')), value("topology", Some('t'))];

pub(super) fn policy(args: &[String]) -> Result<(), Failure> {
    let (p, c) = parse(args, FLAGS, "policy")?;
    let verb = sub(&p, "policy", "get, set, check, simulate")?;
    let file = || p.get("file").ok_or_else(|| usage_err(format!("say which policy: tinyscale policy {verb} -f FILE")));
    match verb.as_str() {
        "get" | "show" => {
            no_extra_words(&p, 1, "policy get")?;
            let got: PolicyResponse = c.get("GET", "/api/v1/policy")?;
            emit(c.format, &got, || got.policy.trim_end().to_string());
            Ok(())
        }
        "set" | "put" => {
            no_extra_words(&p, 1, "policy set")?;
            let file = file()?;
            let body = PolicyRequest { policy: read(file)? };
            let set: PolicyResponse = c.call("PUT", "/api/v1/policy", Some(&body))?;
            if !set.not_applied.is_empty() {
                eprintln!("note: {} read and checked, not applied yet", set.not_applied.join(", "));
            }
            emit(c.format, &set, || "Policy updated.".to_string());
            Ok(())
        }
        "check" | "test" => {
            no_extra_words(&p, 1, "policy check")?;
            let file = file()?;
            match Policy::parse(&read(file)?) {
                Ok(policy) => {
                    let idle = policy.not_applied();
                    if !idle.is_empty() {
                        eprintln!("note: {file}: {} read and checked, not applied yet", idle.join(", "));
                    }
                    println!("{file}: OK ({} rule(s))", policy.rule_count());
                    Ok(())
                }
                Err(e) => Err(refused(file, &e)),
            }
        }
        "simulate" | "sim" => {
            no_extra_words(&p, 1, "policy simulate")?;
            let file = file()?;
            let topo_file = p.get("topology").ok_or_else(|| {
                usage_err("say which tailnet: tinyscale policy simulate --topology TOPO.json -f FILE")
            })?;
            let policy = Policy::parse(&read(file)?).map_err(|e| refused(file, &e))?;
            let topology: Topology = serde_json::from_str(&read(topo_file)?)
                .map_err(|e| fail(format!("{topo_file}: not a topology: {e}")))?;
            let views = simulate(&policy, &topology).map_err(|e| fail(format!("{topo_file}: {e}")))?;
            let json = serde_json::to_value(&views).map_err(|e| fail(e.to_string()))?;
            emit(c.format, &json, || {
                let rows: Vec<Vec<String>> = views
                    .iter()
                    .map(|(name, v)| {
                        let peers: Vec<&str> = v.peers.keys().map(String::as_str).collect();
                        vec![name.clone(), v.filter.len().to_string(), peers.join(", ")]
                    })
                    .collect();
                table(&["Node", "Filter rules", "Sees"], &rows)
            });
            Ok(())
        }
        other => Err(usage_err(format!("unknown verb `policy {other}` (get, set, check, simulate)"))),
    }
}

/// Every problem on its own line, as `file:line:column: what`.
fn refused(file: &str, e: &PolicyError) -> Failure {
    match e {
        PolicyError::Syntax(hujson::HujsonError::Syntax { pos, what }) => {
            eprintln!("error: {file}:{}:{}: {what}", pos.line, pos.col);
        }
        PolicyError::Syntax(other) => eprintln!("error: {file}: {other}"),
        PolicyError::Invalid { problems, more } => {
            for p in problems {
                eprintln!("error: {file}:{}:{}: {}", p.pos.line, p.pos.col, p.what);
            }
            if *more > 0 {
                eprintln!("error: {file}: ... and {more} more problem(s)");
            }
        }
    }
    fail(format!("{file}: the policy is refused"))
}

/// A file's text, read no further than a policy may be long (a bigger one
/// is refused as too large without being read whole).
fn read(file: &str) -> Result<String, Failure> {
    let f = std::fs::File::open(Path::new(file)).map_err(|e| fail(format!("{file}: {e}")))?;
    let mut bytes = Vec::new();
    f.take(hujson::MAX_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("{file}: {e}")))?;
    if bytes.len() > hujson::MAX_LEN {
        return Err(fail(format!("{file}: larger than the {} bytes a policy may have", hujson::MAX_LEN)));
    }
    String::from_utf8(bytes).map_err(|_| fail(format!("{file}: not UTF-8 text")))
}
