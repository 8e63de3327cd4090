//! Sections read and checked but not applied yet: `ssh`, `nodeAttrs`,
//! `tests`, `sshTests`. A policy using them is accepted (so a Tailscale or
//! Headscale policy loads as it is) and the server says in its log that
//! they have no effect yet.

use super::alias::{self, Token};
use super::hujson::Node;
use super::model::{Alias, NodeAttr, SshRule};
use super::syntax::{Reader, Side};

impl Reader {
    pub(super) fn ssh_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "ssh") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("ssh[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [action, src, dst, users, period, env] =
                self.fields(members, &["action", "src", "dst", "users", "checkPeriod", "acceptEnv"], &what);
            let check = match action.map(|a| (a, self.string(a, "action").map(str::trim))) {
                Some((_, Some("accept"))) => false,
                Some((_, Some("check"))) => true,
                Some((a, Some(other))) => {
                    self.problem(a.pos, format!("{other:?} is not a valid action (accept or check)"));
                    false
                }
                Some((_, None)) => false,
                None => {
                    self.problem(item.pos, format!("{what}: action must be specified"));
                    false
                }
            };
            let src = src.and_then(|s| self.aliases(s, &format!("{what}.src"), Side::SshSrc)).unwrap_or_default();
            let dst = dst.and_then(|d| self.aliases(d, &format!("{what}.dst"), Side::SshDst)).unwrap_or_default();
            let mut logins = Vec::new();
            match users {
                None => self.problem(item.pos, format!("{what}: users must be specified")),
                Some(u) => {
                    for (name, pos) in self.strings(u, &format!("{what}.users")) {
                        let name = name.trim();
                        if name.is_empty() || name == "*" {
                            self.problem(pos, format!("user {name:?} is not valid"));
                        } else {
                            logins.push(name.to_string());
                        }
                    }
                }
            }
            if let Some(p) = period {
                match self.string(p, "checkPeriod") {
                    _ if !check => self.problem(p.pos, "checkPeriod is only valid with action \"check\""),
                    Some(t) if t == "always" || crate::clock::parse_span(t).is_ok() => {}
                    Some(t) => {
                        self.problem(p.pos, format!("checkPeriod {t:?} is not a duration (e.g. 12h) or \"always\""))
                    }
                    None => {}
                }
            }
            if let Some(e) = env {
                for (v, pos) in self.strings(e, &format!("{what}.acceptEnv")) {
                    if v.is_empty() {
                        self.problem(pos, "acceptEnv values cannot be empty");
                    }
                }
            }
            let tagged_src = src.iter().any(|a| matches!(a, Alias::Tag(_) | Alias::Tagged));
            if tagged_src && dst.iter().any(|a| matches!(a, Alias::User(_) | Alias::Member | Alias::SelfDevices)) {
                self.problem(item.pos, format!("{what}: tags in an SSH source cannot reach user-owned devices"));
            }
            self.policy.ssh.push(SshRule { check, src, dst, users: logins });
        }
    }

    pub(super) fn node_attrs_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "nodeAttrs") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("nodeAttrs[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [target, attr, pool] = self.fields(members, &["target", "attr", "ipPool"], &what);
            let Some(target) = target else {
                self.problem(item.pos, format!("{what}: target must be given"));
                continue;
            };
            let target = self.aliases(target, &format!("{what}.target"), Side::NodeAttr).unwrap_or_default();
            let attr = attr.map(|a| self.strings(a, &format!("{what}.attr"))).unwrap_or_default();
            let mut ip_pool = Vec::new();
            for (p, pos) in pool.map(|p| self.strings(p, &format!("{what}.ipPool"))).unwrap_or_default() {
                match alias::ip_or_prefix(p.trim()).map(|x| alias::no_host_bits(p.trim(), x)) {
                    Some(Ok(prefix)) => ip_pool.push(prefix),
                    Some(Err(e)) => self.problem(pos, format!("{what}.ipPool: {e}")),
                    None => self.problem(pos, format!("{what}.ipPool: {p:?} is not a valid CIDR")),
                }
            }
            let attr = attr.into_iter().map(|(s, _)| s.to_string()).collect();
            self.policy.node_attrs.push(NodeAttr { target, attr, ip_pool });
        }
    }

    pub(super) fn tests_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "tests") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("tests[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [src, proto, accept, deny] = self.fields(members, &["src", "proto", "accept", "deny"], &what);
            match src {
                Some(s) => {
                    if let Some(text) = self.string(s, &format!("{what}.src")) {
                        self.alias(text, s.pos, Side::Src);
                    }
                }
                None => self.problem(item.pos, format!("{what}: src must be given")),
            }
            if let Some(p) = proto.and_then(|p| self.string(p, &format!("{what}.proto")).map(|t| (t, p.pos))) {
                if !matches!(p.0.to_ascii_lowercase().as_str(), "" | "tcp" | "udp" | "sctp") {
                    self.problem(p.1, format!("test protocol must be tcp, udp, sctp, or empty: {:?}", p.0));
                }
            }
            if accept.is_none() && deny.is_none() {
                self.problem(item.pos, format!("{what}: test entry must have at least one of \"accept\" or \"deny\""));
            }
            for list in [accept, deny].into_iter().flatten() {
                for (d, pos) in self.strings(list, &format!("{what} destinations")) {
                    self.test_destination(d.trim(), pos);
                }
            }
            self.policy.tests += 1;
        }
    }

    /// One connection to one host and port.
    fn test_destination(&mut self, d: &str, pos: super::hujson::Pos) {
        let (host, port) = match alias::split_host_port(d) {
            Ok(x) => x,
            Err(e) => return self.problem(pos, format!("test destination {d:?}: {e}")),
        };
        match alias::ports(&port) {
            Ok(p) if p.len() == 1 && p[0].first == p[0].last => {}
            _ => return self.problem(pos, format!("test destination {d:?}: the port must be a single port")),
        }
        if matches!(alias::token(&host), Ok(Token::Prefix(p)) if host.contains('/') && p.first() != p.last()) {
            return self.problem(pos, format!("test destination {d:?} must be a single host, not a CIDR range"));
        }
        if let Some(Alias::Internet) = self.alias(&host, pos, Side::Dst(d)) {
            self.problem(pos, "autogroup:internet not valid as a test destination");
        }
    }

    pub(super) fn ssh_tests_section(&mut self, n: &Node) {
        let Some(items) = self.array(n, "sshTests") else { return };
        for (i, item) in items.iter().enumerate() {
            let what = format!("sshTests[{i}]");
            let Some(members) = self.object(item, &what) else { continue };
            let [src, dst, accept, check, deny] =
                self.fields(members, &["src", "dst", "accept", "check", "deny"], &what);
            match src.and_then(|s| self.string(s, &format!("{what}.src")).map(|t| (t, s.pos))) {
                Some((t, pos)) if !t.trim().is_empty() => {
                    self.alias(t, pos, Side::SshSrc);
                }
                _ => self.problem(item.pos, format!("{what}: SSH tests entry must have a non-empty src")),
            }
            let dsts = dst.map(|d| self.strings(d, &format!("{what}.dst"))).unwrap_or_default();
            if dsts.is_empty() {
                self.problem(item.pos, format!("{what}: SSH tests entry must have at least one dst"));
            }
            for (d, pos) in dsts {
                self.alias(d, pos, Side::SshDst);
            }
            for list in [accept, check, deny].into_iter().flatten() {
                self.strings(list, &format!("{what} users"));
            }
            self.policy.ssh_tests += 1;
        }
    }
}
