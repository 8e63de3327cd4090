//! `acls` and `grants`: read, checked, and kept as grants (an ACL becomes
//! one grant per destination, since each destination has its own ports).

use std::collections::BTreeMap;

use super::alias::{self, Token, ALL_PORTS};
use super::hujson::{Node, Value};
use super::model::{Alias, Grant, IpRule};
use super::syntax::{Reader, Side};

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
            // `users` and `ports` are the old names of `src` and `dst`.
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
            // The order of rules in a filter means nothing to the client
            // (they are a union), so the grants keep the policy's order.
            for (a, ports, _) in dsts {
                self.policy.grants.push(Grant {
                    src: srcs.clone(),
                    dst: vec![a],
                    ip: vec![IpRule { proto: proto.clone(), ports }],
                    app: BTreeMap::new(),
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
            self.policy.grants.push(Grant { src: srcs, dst: dsts, ip: ips, app: caps, via: vias });
        }
    }

    /// A grant's `ip`: `*`, ports (`22`, `80-443`), or `proto:ports`.
    fn ip_rules(&mut self, n: &Node, what: &str) -> Option<Vec<IpRule>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (s, pos) in self.strings(n, &format!("{what}.ip")) {
            let s = s.trim();
            if s == "*" {
                out.push(IpRule { proto: Vec::new(), ports: vec![ALL_PORTS] });
                continue;
            }
            let parts: Vec<&str> = s.split(':').collect();
            let rule = match parts.as_slice() {
                [ports] => alias::ports(ports)
                    .map(|ports| IpRule { proto: Vec::new(), ports })
                    .map_err(|e| format!("port range {ports:?}: {e}")),
                [proto, ports] => alias::protocol(proto).and_then(|proto| {
                    let ports = alias::ports(ports).map_err(|e| format!("port range {ports:?}: {e}"))?;
                    if !alias::has_ports(&proto) && ports != [ALL_PORTS] {
                        return Err(format!("protocol does not support specific ports: {s:?}, only \"*\" is allowed"));
                    }
                    Ok(IpRule { proto, ports })
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

    fn caps(&mut self, n: &Node, what: &str) -> Option<BTreeMap<String, Vec<serde_json::Value>>> {
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
                    out.insert(name.to_string(), values.iter().map(Node::to_json).collect());
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

/// `proto` as text: a string, or a number written bare.
fn proto_text(n: &Node) -> Option<&str> {
    match &n.value {
        Value::String(s) => Some(s),
        Value::Number(s) => Some(s),
        _ => None,
    }
}
