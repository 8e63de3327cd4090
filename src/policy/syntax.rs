//! From the HuJSON tree to the checked [`Policy`]: the top level, `groups`,
//! `hosts`, `tagOwners` and `autoApprovers` here; rules in `rules.rs`; the
//! sections read but not applied yet in `extras.rs`.
//!
//! Every problem is collected with the place of the value it is about, so
//! one run shows them all (up to [`MAX_PROBLEMS`]).

use std::collections::HashMap;
use std::fmt;

use super::alias::{self, Token};
use super::hujson::{Member, Node, Pos, Value};
use super::model::{Alias, AutoApprovers, Group, Owner, Policy};
use crate::tailcfg::Prefix;

/// How many problems are listed; a hostile file with thousands of errors
/// gets a bounded message.
pub const MAX_PROBLEMS: usize = 20;

/// How many rules (ACL destinations and grants) a policy may hold. A
/// household needs dozens; a node's filter can hold every rule, so the cap
/// bounds what one policy can make each node's map carry.
pub const MAX_RULES: usize = 10_000;

/// How many entries one list may hold (a rule's sources, destinations,
/// `ip`, an owner list...). Counted before anything is built from the list.
/// A household writes a handful; a thousand leaves room for generated
/// policies, and bounds what one rule costs before the totals below apply.
pub const MAX_LIST: usize = 1_000;

/// How many destination entries the rules may expand to in all: each
/// destination counts once per port range (after duplicates and overlaps
/// are joined), `autogroup:internet` once per range of the internet it
/// stands for. One node's filter cannot hold more entries than this per
/// address or route it has, so the bound holds the largest map a policy
/// can make (an exit node's) to a few megabytes.
pub const MAX_ENTRIES: usize = 50_000;

/// One thing wrong with a policy, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.what)
    }
}

/// Where an alias stands: each side allows different autogroups and words
/// a missing tag as Tailscale does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Side<'a> {
    Src,
    /// A destination, with the text as written for messages.
    Dst(&'a str),
    SshSrc,
    SshDst,
    NodeAttr,
}

pub(super) struct Reader {
    pub problems: Vec<Problem>,
    /// Problems beyond [`MAX_PROBLEMS`], counted only.
    pub more: usize,
    pub groups: HashMap<String, usize>,
    pub tags: HashMap<String, usize>,
    pub hosts: HashMap<String, Prefix>,
    pub policy: Policy,
    /// Rules and destination entries counted so far (also past the limits,
    /// for the message), and where each limit was first passed.
    pub rules: usize,
    pub entries: usize,
    pub rules_passed_at: Option<Pos>,
    pub entries_passed_at: Option<Pos>,
}

const TOP_KEYS: &[&str; 11] = &[
    "groups",
    "hosts",
    "tagOwners",
    "acls",
    "grants",
    "ssh",
    "nodeAttrs",
    "autoApprovers",
    "tests",
    "sshTests",
    "randomizeClientPort",
];

/// Checks a whole policy document.
pub(super) fn read(root: &Node) -> Result<Policy, (Vec<Problem>, usize)> {
    let mut r = Reader {
        problems: Vec::new(),
        more: 0,
        groups: HashMap::new(),
        tags: HashMap::new(),
        hosts: HashMap::new(),
        policy: Policy::empty(),
        rules: 0,
        entries: 0,
        rules_passed_at: None,
        entries_passed_at: None,
    };
    if let Some(members) = r.object(root, "the policy") {
        let f = r.fields(members, TOP_KEYS, "the policy");
        // Names first: rules may use groups, hosts and tags declared after them.
        if let Some(n) = f[0] {
            r.groups_section(n);
        }
        if let Some(n) = f[1] {
            r.hosts_section(n);
        }
        if let Some(n) = f[2] {
            r.tag_owners_section(n);
        }
        if let Some(n) = f[3] {
            r.acls_section(n);
        }
        if let Some(n) = f[4] {
            r.grants_section(n);
        }
        r.limit_problems();
        if let Some(n) = f[5] {
            r.ssh_section(n);
        }
        if let Some(n) = f[6] {
            r.node_attrs_section(n);
        }
        if let Some(n) = f[7] {
            r.auto_approvers_section(n);
        }
        if let Some(n) = f[8] {
            r.tests_section(n);
        }
        if let Some(n) = f[9] {
            r.ssh_tests_section(n);
        }
        if let Some(n) = f[10] {
            match n.value {
                Value::Bool(b) => r.policy.randomize_client_port = b,
                _ => r.problem(n.pos, format!("randomizeClientPort must be true or false, found {}", n.kind())),
            }
        }
    }
    if r.problems.is_empty() {
        Ok(r.policy)
    } else {
        // In the order of the text, whichever section found them.
        r.problems.sort_unstable_by(|a, b| a.pos.cmp(&b.pos).then_with(|| a.what.cmp(&b.what)));
        Err((r.problems, r.more))
    }
}

impl Reader {
    pub fn problem(&mut self, pos: Pos, what: impl Into<String>) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { pos, what: what.into() });
        } else {
            self.more += 1;
        }
    }

    pub fn object<'a>(&mut self, n: &'a Node, what: &str) -> Option<&'a [Member]> {
        match &n.value {
            Value::Object(m) => Some(m),
            _ => {
                self.problem(n.pos, format!("{what} must be an object, found {}", n.kind()));
                None
            }
        }
    }

    pub fn array<'a>(&mut self, n: &'a Node, what: &str) -> Option<&'a [Node]> {
        match &n.value {
            Value::Array(items) => Some(items),
            _ => {
                self.problem(n.pos, format!("{what} must be an array, found {}", n.kind()));
                None
            }
        }
    }

    pub fn string<'a>(&mut self, n: &'a Node, what: &str) -> Option<&'a str> {
        match &n.value {
            Value::String(s) => Some(s),
            _ => {
                self.problem(n.pos, format!("{what} must be a string, found {}", n.kind()));
                None
            }
        }
    }

    /// An array of strings, each with its place; at most [`MAX_LIST`].
    pub fn strings<'a>(&mut self, n: &'a Node, what: &str) -> Vec<(&'a str, Pos)> {
        let mut out = Vec::new();
        let items = self.array(n, what).unwrap_or_default();
        if items.len() > MAX_LIST {
            self.problem(n.pos, format!("{what} has {} entries, more than the {MAX_LIST} accepted", items.len()));
            return out;
        }
        for item in items {
            if let Some(s) = self.string(item, &format!("each entry of {what}")) {
                out.push((s, item.pos));
            }
        }
        out
    }

    /// Picks `known` keys out of an object (case-insensitively, as Go's
    /// decoder matches them); any other key is a problem, except `#…` keys,
    /// which editors such as headscale-admin use for notes.
    pub fn fields<'a, const N: usize>(
        &mut self,
        members: &'a [Member],
        known: &[&str; N],
        what: &str,
    ) -> [Option<&'a Node>; N] {
        let mut out = [None; N];
        for m in members {
            if m.key.starts_with('#') {
                continue;
            }
            match known.iter().position(|k| k.eq_ignore_ascii_case(&m.key)) {
                Some(i) if out[i].is_none() => out[i] = Some(&m.value),
                Some(i) => self.problem(m.pos, format!("{:?} is given twice in {what}", known[i])),
                None => self.problem(m.pos, format!("unknown key {:?} in {what} (known: {})", m.key, known.join(", "))),
            }
        }
        out
    }

    fn groups_section(&mut self, n: &Node) {
        let Some(members) = self.object(n, "groups") else { return };
        for m in members {
            if !m.key.starts_with("group:") || m.key.len() == "group:".len() {
                self.problem(m.pos, format!("group must start with 'group:', got: {:?}", m.key));
                continue;
            }
            let Value::Array(items) = &m.value.value else {
                self.problem(m.value.pos, format!("group value must be an array of users: group {:?}", m.key));
                continue;
            };
            let mut users = Vec::new();
            for item in items {
                let Value::String(u) = &item.value else {
                    self.problem(item.pos, format!("invalid group member type: group {:?} expected a string", m.key));
                    continue;
                };
                let u = u.trim();
                if u.starts_with("group:") {
                    self.problem(item.pos, format!("groups[{:?}]: {u:?}: group members cannot be recursive", m.key));
                } else if !u.contains('@') {
                    self.problem(
                        item.pos,
                        format!(
                            "username must contain @, got: {u:?} (write a user without an email as {:?})",
                            format!("{u}@")
                        ),
                    );
                } else {
                    users.push(u.to_string());
                }
            }
            self.groups.insert(m.key.clone(), self.policy.groups.len());
            self.policy.groups.push(Group { name: m.key.clone(), members: users });
        }
    }

    fn hosts_section(&mut self, n: &Node) {
        let Some(members) = self.object(n, "hosts") else { return };
        for m in members {
            if m.key.is_empty() || m.key.contains('@') || m.key.contains(':') || m.key == "*" {
                self.problem(m.pos, format!("invalid hostname: {:?}", m.key));
                continue;
            }
            let Some(v) = self.string(&m.value, &format!("hosts[{:?}]", m.key)) else { continue };
            match alias::ip_or_prefix(v.trim()).map(|p| alias::no_host_bits(v.trim(), p)) {
                Some(Ok(p)) => {
                    self.hosts.insert(m.key.clone(), p);
                }
                Some(Err(e)) => self.problem(m.value.pos, format!("hosts[{:?}]: {e}", m.key)),
                None => self.problem(
                    m.value.pos,
                    format!("hostname contains invalid IP address: hostname {:?} address {v:?}", m.key),
                ),
            }
        }
    }

    fn tag_owners_section(&mut self, n: &Node) {
        let Some(members) = self.object(n, "tagOwners") else { return };
        // Every tag's name first: owners may be tags declared later.
        for m in members {
            match m.key.strip_prefix("tag:") {
                None => self.problem(m.pos, format!("tag must start with 'tag:', got: {:?}", m.key)),
                Some(rest) if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) => self.problem(
                    m.pos,
                    format!("tagOwners[{:?}]: tag names must start with a letter, after 'tag:'", m.key),
                ),
                Some(rest) if !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') => {
                    self.problem(
                        m.pos,
                        format!("tagOwners[{:?}]: tag names may hold only letters, digits, '-', '_' and '.'", m.key),
                    )
                }
                Some(_) => {
                    self.tags.insert(m.key.clone(), self.policy.tags.len());
                    self.policy.tags.push(m.key.clone());
                    self.policy.tag_owners.push(Vec::new());
                }
            }
        }
        for m in members {
            let Some(&id) = self.tags.get(&m.key) else { continue };
            let owners = self.owners(&m.value, &format!("tagOwners[{:?}]", m.key));
            self.policy.tag_owners[id] = owners;
        }
    }

    /// A list of users, groups and tags (tag owners, route approvers).
    fn owners(&mut self, n: &Node, what: &str) -> Vec<Owner> {
        let mut out = Vec::new();
        for (s, pos) in self.strings(n, what) {
            let s = s.trim();
            match alias::token(s) {
                Ok(Token::User(u)) => out.push(Owner::User(u)),
                Ok(Token::Group(g)) => match self.groups.get(&g) {
                    Some(&i) => out.push(Owner::Group(i)),
                    None => self.problem(pos, format!("group not defined in policy: {g:?}")),
                },
                Ok(Token::Tag(t)) => match self.tags.get(&t) {
                    Some(&i) => out.push(Owner::Tag(i)),
                    None => self.problem(pos, format!("tag not found: {t:?}")),
                },
                _ => self.problem(pos, format!("invalid owner format: {s:?} (a user, group: or tag:)")),
            }
        }
        out
    }

    fn auto_approvers_section(&mut self, n: &Node) {
        let Some(members) = self.object(n, "autoApprovers") else { return };
        let [routes, exit] = self.fields(members, &["routes", "exitNode"], "autoApprovers");
        let mut aa = AutoApprovers::default();
        if let Some(routes) = routes.and_then(|r| self.object(r, "autoApprovers.routes")) {
            for m in routes {
                let Some(p) = alias::ip_or_prefix(m.key.trim()) else {
                    self.problem(m.pos, format!("autoApprovers.routes: {:?} is not a valid CIDR", m.key));
                    continue;
                };
                if let Err(e) = alias::no_host_bits(m.key.trim(), p) {
                    self.problem(m.pos, format!("autoApprovers.routes: {e}"));
                    continue;
                }
                let owners = self.owners(&m.value, &format!("autoApprovers.routes[{:?}]", m.key));
                aa.routes.push((p, owners));
            }
        }
        if let Some(exit) = exit {
            aa.exit_node = self.owners(exit, "autoApprovers.exitNode");
        }
        self.policy.auto_approvers = aa;
    }

    /// Resolves one alias for `side`, or records why it cannot be.
    pub fn alias(&mut self, text: &str, pos: Pos, side: Side) -> Option<Alias> {
        let text = text.trim();
        let tok = match alias::token(text) {
            Ok(t) => t,
            Err(e) => {
                self.problem(pos, e);
                return None;
            }
        };
        match tok {
            Token::Any if side == Side::SshDst => {
                self.problem(pos, "wildcard (*) is not supported as SSH destination; use 'autogroup:member' for user-owned devices, 'autogroup:tagged' for tagged devices, or specific tags/users");
                None
            }
            Token::Any => Some(Alias::Any),
            Token::User(u) => Some(Alias::User(u)),
            Token::Prefix(p) => Some(Alias::Prefix(p)),
            Token::Group(g) => match self.groups.get(&g) {
                Some(&i) if side != Side::SshDst => Some(Alias::Group(i)),
                Some(_) => {
                    self.problem(pos, format!("alias not supported for SSH destination: {g:?}"));
                    None
                }
                None => {
                    self.problem(pos, format!("group not defined in policy: {g:?}"));
                    None
                }
            },
            Token::Tag(t) => match self.tags.get(&t) {
                Some(&i) => Some(Alias::Tag(i)),
                None => {
                    let what = match side {
                        Side::Src => format!("src=tag not found: {t:?}"),
                        Side::Dst(d) => format!("dst={d:?}: tag not found: {t:?}"),
                        _ => format!("tag not found: {t:?}"),
                    };
                    self.problem(pos, what);
                    None
                }
            },
            Token::Host(h) => match self.hosts.get(&h) {
                Some(p) if side != Side::SshDst => Some(Alias::Prefix(*p)),
                Some(_) => {
                    self.problem(pos, format!("invalid dst {h:?}: a hosts entry cannot be an SSH destination"));
                    None
                }
                None => {
                    self.problem(pos, format!("host not defined in policy: {h:?}"));
                    None
                }
            },
            Token::AutoGroup(a) => self.autogroup(&a, pos, side),
        }
    }

    fn autogroup(&mut self, a: &str, pos: Pos, side: Side) -> Option<Alias> {
        let ag = match a {
            "autogroup:member" => Alias::Member,
            "autogroup:tagged" => Alias::Tagged,
            "autogroup:self" => Alias::SelfDevices,
            "autogroup:internet" => Alias::Internet,
            "autogroup:danger-all" => Alias::DangerAll,
            _ => {
                self.problem(
                    pos,
                    format!(
                        "unknown autogroup {a:?} (known: autogroup:member, autogroup:tagged, autogroup:self, \
                         autogroup:internet, autogroup:danger-all)"
                    ),
                );
                return None;
            }
        };
        let refusal = match (side, &ag) {
            (Side::Src | Side::SshSrc | Side::NodeAttr, Alias::Internet) => {
                Some("autogroup:internet can only be used in ACL destinations".to_string())
            }
            (Side::Src, Alias::SelfDevices) => Some("\"autogroup:self\" not valid on the src side of a rule".into()),
            (Side::Dst(_), Alias::DangerAll) => Some("cannot use autogroup:danger-all as a dst".into()),
            (Side::SshSrc, Alias::SelfDevices | Alias::DangerAll) => {
                Some(format!("autogroup not supported for SSH sources: {a:?}"))
            }
            (Side::SshDst, Alias::Internet | Alias::DangerAll) => {
                Some(format!("autogroup not supported for SSH destinations: {a:?}"))
            }
            (Side::NodeAttr, Alias::SelfDevices | Alias::DangerAll) => {
                Some(format!("nodeAttrs target does not support this autogroup: {a:?}"))
            }
            _ => None,
        };
        match refusal {
            Some(r) => {
                self.problem(pos, r);
                None
            }
            None => Some(ag),
        }
    }

    /// A list of aliases; `None` if any of them is wrong.
    pub fn aliases(&mut self, n: &Node, what: &str, side: Side) -> Option<Vec<Alias>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (s, pos) in self.strings(n, what) {
            match self.alias(s, pos, side) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
