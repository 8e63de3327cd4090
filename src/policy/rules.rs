//! `acls` and `grants`: read, checked, and kept as grants (an ACL becomes
//! one grant per destination, since each destination has its own ports).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use super::alias::{self, Token, ALL_PORTS};
use super::hujson::{Node, Pos, Value};
use super::model::{Alias, CapMap, Grant, IpRule};
use super::resolve;
use super::syntax::{Reader, Side, MAX_ENTRIES, MAX_RULES};
use crate::tailcfg::PortRange;

const ACL_KEYS: [&str; 6] = ["action", "src", "dst", "proto", "users", "ports"];
const GRANT_KEYS: [&str; 5] = ["src", "dst", "ip", "app", "via"];

/// `tailscale.com/cap/…` names a policy may grant; the rest of that domain
/// belongs to the control plane.
const TAILSCALE_CAPS: &[&str] = &[
    "tailscale.com/cap/drive",
    "tailscale.com/cap/relay",
    "tailscale.com/cap/webui",
    "tailscale.com/cap/kubernetes",
    "tailscale.com/cap/tsidp",
    "tailscale.com/cap/secrets",
];

const SELF_SOURCES: &str = "autogroup:self can only be used with users, groups, or supported autogroups";

impl Reader {
    pub(super) fn acls_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "acls") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("acls[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [action, src, dst, proto, users, ports] = self.fields(members, &ACL_KEYS, &what);
            match action {
                None => self.problem(item.pos, format!("{what}: the action must be given (\"accept\")")),
                Some(a) => {
                    if let Some(s) = self.string(a, "action") {
                        if s != "accept" {
                            self.problem(a.pos, format!("action={s:?} is not supported: invalid ACL action"));
                        }
                    }
                }
            }
            // `users` and `ports` are the old names of `src` and `dst`: with
            // both, one would be silently ignored.
            for (new, old, name) in [(src, users, "src\" and \"users"), (dst, ports, "dst\" and \"ports")] {
                if let (Some(_), Some(o)) = (new, old) {
                    self.problem(
                        o.pos,
                        format!("{what}: \"{name}\" are the same field (the second is its old name); give one"),
                    );
                }
            }
            let (Some(src), Some(dst)) = (src.or(users), dst.or(ports)) else {
                self.problem(item.pos, format!("{what}: both src and dst must be given"));
                continue;
            };
            let proto_node = proto;
            let proto = match proto.map(|p| (p, proto_text(p))) {
                None => Some(Vec::new()),
                Some((p, Some(t))) => alias::protocol(t.trim()).map_err(|e| self.problem(p.pos, e)).ok(),
                Some((p, None)) => {
                    self.problem(p.pos, format!("proto must be a string or a number, found {}", p.kind()));
                    None
                }
            };
            let srcs = self.aliases(src, &format!("{what}.src"), Side::Src);
            let mut dsts = Vec::new();
            let mut dsts_ok = true;
            for (d, pos) in self.strings(dst, &format!("{what}.dst")) {
                let (host, port_text) = match alias::split_host_port(d.trim()) {
                    Ok(x) => x,
                    Err(e) => {
                        self.problem(pos, format!("dst={d:?}: {e}"));
                        dsts_ok = false;
                        continue;
                    }
                };
                let ports = match alias::ports(&port_text) {
                    Ok(p) => p,
                    Err(e) => {
                        self.problem(pos, format!("dst={d:?}: port range {port_text:?}: {e}"));
                        dsts_ok = false;
                        continue;
                    }
                };
                match self.alias(&host, pos, Side::Dst(&host)) {
                    Some(a) => dsts.push((a, ports, pos)),
                    None => dsts_ok = false,
                }
            }
            let (Some(srcs), Some(proto), true) = (srcs, proto, dsts_ok) else { continue };
            if !alias::has_ports(&proto) {
                if let Some((_, _, pos)) = dsts.iter().find(|(_, ports, _)| ports.as_slice() != [ALL_PORTS]) {
                    self.problem(
                        *pos,
                        format!(
                            "protocol does not support specific ports: {:?}, only \"*\" is allowed",
                            proto_node.and_then(proto_text).unwrap_or_default()
                        ),
                    );
                    continue;
                }
            }
            if dsts.iter().any(|(a, _, _)| *a == Alias::SelfDevices)
                && !srcs.iter().all(|s| matches!(s, Alias::User(_) | Alias::Group(_) | Alias::Any | Alias::Member))
            {
                self.problem(src.pos, SELF_SOURCES);
                continue;
            }
            let dsts: Vec<(Alias, Vec<PortRange>)> =
                dsts.into_iter().map(|(a, ports, _)| (a, alias::normalize_ports(ports))).collect();
            let entries = dsts.iter().map(|(a, ports)| weight(a) * ports.len()).sum();
            if !self.within_limits(item.pos, dsts.len(), entries) {
                continue;
            }
            // The order of rules in a filter means nothing to the client
            // (they are a union), so the grants keep the policy's order.
            let srcs: Arc<[Alias]> = Arc::from(srcs);
            for (a, ports) in dsts {
                self.policy.grants.push(Grant {
                    src: srcs.clone(),
                    dst: vec![a],
                    ip: vec![IpRule { proto: proto.clone(), ports: Arc::from(ports) }],
                    app: None,
                    via: Vec::new(),
                });
            }
        }
    }

    pub(super) fn grants_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "grants") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("grants[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [src, dst, ip, app, via] = self.fields(members, &GRANT_KEYS, &what);
            let (Some(src), Some(dst)) = (src, dst) else {
                self.problem(item.pos, format!("{what}: both src and dst must be given"));
                continue;
            };
            let srcs = self.aliases(src, &format!("{what}.src"), Side::Src);
            let mut dsts = Some(Vec::new());
            for (d, pos) in self.strings(dst, &format!("{what}.dst")) {
                match (self.alias(d, pos, Side::Dst(d.trim())), dsts.as_mut()) {
                    (Some(Alias::Prefix(p)), _) if p.prefix_len() == 0 => {
                        self.problem(
                            pos,
                            format!(
                                "dst {:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"",
                                p.to_string()
                            ),
                        );
                        dsts = None;
                    }
                    (Some(a), Some(v)) => v.push(a),
                    (Some(_), None) => {}
                    (None, _) => dsts = None,
                }
            }
            let ips = ip.map(|n| self.ip_rules(n, &what)).unwrap_or(Some(Vec::new()));
            let caps = app.map(|n| self.caps(n, &what)).unwrap_or(Some(BTreeMap::new()));
            // The same destination twice adds nothing but work.
            let mut seen = HashSet::new();
            let dsts = dsts.map(|d: Vec<Alias>| d.into_iter().filter(|a| seen.insert(a.clone())).collect::<Vec<_>>());
            let vias = via.map(|n| self.vias(n, &what)).unwrap_or(Some(Vec::new()));
            let (Some(srcs), Some(dsts), Some(ips), Some(caps), Some(vias)) = (srcs, dsts, ips, caps, vias) else {
                continue;
            };
            if ips.is_empty() && caps.is_empty() {
                self.problem(item.pos, "ip and app can not both be empty");
                continue;
            }
            if !caps.is_empty() && dsts.contains(&Alias::Internet) {
                self.problem(dst.pos, "cannot use app grants with autogroup:internet");
                continue;
            }
            if dsts.contains(&Alias::SelfDevices)
                && !srcs.iter().all(|s| matches!(s, Alias::User(_) | Alias::Group(_) | Alias::Member))
            {
                self.problem(src.pos, SELF_SOURCES);
                continue;
            }
            let ips = merge_by_proto(ips);
            let ports: usize = ips.iter().map(|r| r.ports.len()).sum();
            let entries = dsts.iter().map(weight).sum::<usize>() * ports.max(1);
            if !self.within_limits(item.pos, 1, entries) {
                continue;
            }
            let app = (!caps.is_empty()).then(|| CapMap::new(caps));
            self.policy.grants.push(Grant { src: Arc::from(srcs), dst: dsts, ip: ips, app, via: vias });
        }
    }

    /// Counts a rule's `rules` and destination `entries` against the
    /// policy's limits before anything is built from it: `false` once a
    /// limit is passed (the rule is not kept; the count goes on, for the
    /// message, which names where the limit was passed).
    fn within_limits(&mut self, pos: Pos, rules: usize, entries: usize) -> bool {
        self.rules = self.rules.saturating_add(rules);
        self.entries = self.entries.saturating_add(entries);
        if self.rules > MAX_RULES && self.rules_passed_at.is_none() {
            self.rules_passed_at = Some(pos);
        }
        if self.entries > MAX_ENTRIES && self.entries_passed_at.is_none() {
            self.entries_passed_at = Some(pos);
        }
        self.rules_passed_at.is_none() && self.entries_passed_at.is_none()
    }

    /// The problems of the limits passed, once the rules are all counted.
    pub(super) fn limit_problems(&mut self) {
        if let Some(pos) = self.rules_passed_at {
            let what = format!(
                "the policy has {} rules (ACL destinations and grants), more than the {MAX_RULES} accepted (passed at this rule)",
                self.rules
            );
            self.problem(pos, what);
        }
        if let Some(pos) = self.entries_passed_at {
            let what = format!(
                "the rules expand to {} destination entries (each destination once per port range; \
                 autogroup:internet once per range it covers), more than the {MAX_ENTRIES} accepted (passed at this rule)",
                self.entries
            );
            self.problem(pos, what);
        }
    }

    /// A grant's `ip`: `*`, ports (`22`, `80-443`), or `proto:ports`.
    fn ip_rules(&mut self, n: &Node, what: &str) -> Option<Vec<IpRule>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (s, pos) in self.strings(n, &format!("{what}.ip")) {
            let s = s.trim();
            if s == "*" {
                out.push(IpRule { proto: Vec::new(), ports: Arc::from([ALL_PORTS]) });
                continue;
            }
            let parts: Vec<&str> = s.split(':').collect();
            let rule = match parts.as_slice() {
                [ports] => alias::ports(ports)
                    .map(|ports| IpRule { proto: Vec::new(), ports: Arc::from(ports) })
                    .map_err(|e| format!("port range {ports:?}: {e}")),
                [proto, ports] => alias::protocol(proto).and_then(|proto| {
                    let ports = alias::ports(ports).map_err(|e| format!("port range {ports:?}: {e}"))?;
                    if !alias::has_ports(&proto) && ports != [ALL_PORTS] {
                        return Err(format!("protocol does not support specific ports: {s:?}, only \"*\" is allowed"));
                    }
                    Ok(IpRule { proto, ports: Arc::from(ports) })
                }),
                _ => Err(format!("expected only one colon in Internet protocol and port type, got: {s:?}")),
            };
            match rule {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.problem(pos, e);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn caps(&mut self, n: &Node, what: &str) -> Option<BTreeMap<String, serde_json::Value>> {
        let members = self.object(n, &format!("{what}.app"))?;
        let mut ok = true;
        let mut out = BTreeMap::new();
        for m in members {
            let name = m.key.as_str();
            let refusal = if name.contains("://") || !name.contains('/') || name.starts_with('/') {
                Some("capability name must have the form {domain}/{path}")
            } else if name.starts_with("tailscale.com/") && !TAILSCALE_CAPS.contains(&name) {
                Some("capability name must not be in the tailscale.com domain")
            } else {
                None
            };
            if let Some(r) = refusal {
                self.problem(m.pos, format!("{r}: {name:?}"));
                ok = false;
                continue;
            }
            match &m.value.value {
                Value::Array(values) => {
                    out.insert(name.to_string(), serde_json::Value::Array(values.iter().map(Node::to_json).collect()));
                }
                _ => {
                    self.problem(
                        m.value.pos,
                        format!("{what}.app[{name:?}] must be an array of values, found {}", m.value.kind()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn vias(&mut self, n: &Node, what: &str) -> Option<Vec<usize>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (s, pos) in self.strings(n, &format!("{what}.via")) {
            match alias::token(s.trim()) {
                Ok(Token::Tag(t)) => match self.tags.get(&t) {
                    Some(&id) => out.push(id),
                    None => {
                        self.problem(pos, format!("tag {t:?} not found"));
                        ok = false;
                    }
                },
                _ => {
                    self.problem(pos, format!("via can only be a tag, got: {s:?}"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// What one destination counts toward [`MAX_ENTRIES`] per port range: its
/// entries in the filter of a node it concerns. A name stands for a node's
/// own addresses there; `autogroup:internet` for every range of it.
fn weight(a: &Alias) -> usize {
    static INTERNET: OnceLock<usize> = OnceLock::new();
    match a {
        Alias::Internet => *INTERNET.get_or_init(|| resolve::internet().prefixes().len()),
        _ => 1,
    }
}

/// One rule per protocol set, its ports joined: `ip` written
/// `["tcp:22", "tcp:22", ...]` holds one entry, not thousands.
fn merge_by_proto(rules: Vec<IpRule>) -> Vec<IpRule> {
    let mut out: Vec<(Vec<u8>, Vec<PortRange>)> = Vec::new();
    for r in rules {
        match out.iter_mut().find(|(proto, _)| *proto == r.proto) {
            Some((_, ports)) => ports.extend_from_slice(&r.ports),
            None => out.push((r.proto, r.ports.to_vec())),
        }
    }
    out.into_iter().map(|(proto, ports)| IpRule { proto, ports: Arc::from(alias::normalize_ports(ports)) }).collect()
}

/// `proto` as text: a string, or a number written bare.
fn proto_text(n: &Node) -> Option<&str> {
    match &n.value {
        Value::String(s) => Some(s),
        Value::Number(s) => Some(s),
        _ => None,
    }
}
