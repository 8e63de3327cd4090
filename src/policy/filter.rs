//! Rules before they are cut down to one node, their merging, and the cut
//! (Tailscale sends each node only the parts of a rule whose destination
//! is that node, its approved subnets, or, for an exit node, the internet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::ipset::IpSet;
use super::model::CapMap;
use super::nodes::Facts;
use crate::tailcfg::{CapGrant, FilterRule, NetPortRange, PortRange, Prefix};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// `*`: anywhere.
    Any,
    /// A network; `bare` writes a single address without its length, as
    /// Tailscale does for resolved names (via routes keep the length).
    Net { prefix: Prefix, bare: bool },
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::Any => "*".into(),
            Target::Net { prefix, bare: true } if prefix.first() == prefix.last() => prefix.addr().to_string(),
            Target::Net { prefix, .. } => prefix.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Dst {
    pub target: Target,
    /// The rule's port ranges, shared by all its destinations.
    pub ports: Arc<[PortRange]>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Cap {
    pub dsts: Vec<Prefix>,
    pub map: CapMap,
}

/// A rule for the whole tailnet (or a user's, or a router's), not yet cut
/// down to one node. Either `dsts` or `caps` is used, never both.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Rule {
    pub src: Arc<[String]>,
    /// What `src` covers, for the peer and route checks.
    /// Shared: the rules of one source list (an ACL's destinations) all
    /// hold it, and a list of a thousand sources is a thousand ranges.
    pub src_set: Arc<IpSet>,
    pub proto: Vec<u8>,
    pub dsts: Vec<Dst>,
    pub caps: Vec<Cap>,
}

impl Rule {
    /// A rule of IP destinations (no capabilities).
    pub fn ip(src: &Arc<[String]>, src_set: &Arc<IpSet>, proto: &[u8], dsts: Vec<Dst>) -> Rule {
        Rule { src: src.clone(), src_set: src_set.clone(), proto: proto.to_vec(), dsts, caps: Vec::new() }
    }
}

/// A rule's sources and destinations as sets: whether a node may reach
/// another is decided on these.
#[derive(Clone, Debug)]
pub(super) struct Matcher {
    pub srcs: Arc<IpSet>,
    pub dsts: IpSet,
}

impl Rule {
    pub fn matcher(&self) -> Matcher {
        let mut prefixes = Vec::new();
        let mut any = false;
        for d in &self.dsts {
            match &d.target {
                Target::Any => any = true,
                Target::Net { prefix, .. } => prefixes.push(*prefix),
            }
        }
        for c in &self.caps {
            prefixes.extend_from_slice(&c.dsts);
        }
        let dsts = if any { IpSet::everything() } else { IpSet::of_prefixes(&prefixes) };
        Matcher { srcs: self.src_set.clone(), dsts }
    }
}

/// Joins rules with the same sources and protocols into one (their
/// destinations appended), as Tailscale sends them; capability rules stay
/// apart.
pub(super) fn merge(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    let mut at: HashMap<MergeKey, usize> = HashMap::new();
    // The rules of one ACL share their sources' text: found by its address
    // first, a list of a thousand sources is not hashed once per rule (no
    // list is made while merging, so an address stays its list's).
    let mut at_ptr: HashMap<(*const String, Vec<u8>), usize> = HashMap::new();
    for r in rules {
        if !r.caps.is_empty() {
            out.push(r);
            continue;
        }
        let ptr = (r.src.as_ptr(), r.proto.clone());
        let found = at_ptr.get(&ptr).or_else(|| at.get(&(r.src.clone(), r.proto.clone()))).copied();
        match found {
            Some(i) => {
                at_ptr.insert(ptr, i);
                out[i].dsts.extend(r.dsts);
            }
            None => {
                at_ptr.insert(ptr, out.len());
                at.insert((r.src.clone(), r.proto.clone()), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// A shared rule made ready to be cut for many nodes: where it reaches at
/// all, and its single-address destinations by address, so a node finds its
/// own in one lookup instead of a scan.
pub(super) struct Indexed {
    pub rule: Rule,
    reach: IpSet,
    hosts: HashMap<IpAddr, Vec<usize>>,
    wide: Vec<usize>,
}

impl Indexed {
    pub fn new(rule: Rule, reach: IpSet) -> Indexed {
        let mut hosts: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut wide = Vec::new();
        for (i, d) in rule.dsts.iter().enumerate() {
            match &d.target {
                Target::Net { prefix, .. } if prefix.first() == prefix.last() => {
                    hosts.entry(prefix.addr()).or_default().push(i)
                }
                _ => wide.push(i),
            }
        }
        Indexed { rule, reach, hosts, wide }
    }
}

/// One of a node's rules: a shared one with the node's own rules of the
/// same sources and protocols (autogroup:self, via) joined to it, or the
/// node's own rules alone (one, if it grants capabilities). Joined by
/// reference, cut apart, and only the cuts put together: a shared rule is
/// never copied per node.
pub(super) enum Part<'a> {
    Shared(&'a Indexed, Vec<&'a Rule>),
    Own(&'a Rule, Vec<&'a Rule>),
}

/// What merges rules: the same sources and protocols.
pub(super) type MergeKey = (Arc<[String]>, Vec<u8>);

/// Where each shared rule that others may merge into stands.
pub(super) fn merge_keys(shared: &[Indexed]) -> HashMap<MergeKey, usize> {
    shared
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rule.caps.is_empty())
        .map(|(i, r)| ((r.rule.src.clone(), r.rule.proto.clone()), i))
        .collect()
}

/// Joins a node's own rules (autogroup:self, via) to the shared ones of the
/// same sources and protocols, or to each other.
pub(super) fn merge_onto<'a>(
    shared: &'a [Indexed],
    keys: &HashMap<MergeKey, usize>,
    own: &'a [Arc<Rule>],
) -> Vec<Part<'a>> {
    let mut out: Vec<Part> = shared.iter().map(|s| Part::Shared(s, Vec::new())).collect();
    let mut mine: HashMap<MergeKey, usize> = HashMap::new();
    for r in own {
        if !r.caps.is_empty() {
            out.push(Part::Own(r, Vec::new()));
            continue;
        }
        let key = (r.src.clone(), r.proto.clone());
        match keys.get(&key).or_else(|| mine.get(&key)) {
            Some(&i) => match &mut out[i] {
                Part::Shared(_, extra) | Part::Own(_, extra) => extra.push(r),
            },
            None => {
                mine.insert(key, out.len());
                out.push(Part::Own(r, Vec::new()));
            }
        }
    }
    out
}

/// A node's view of the routes and addresses that decide what reaches it.
pub(super) struct Here<'a> {
    pub facts: &'a Facts,
    pub internet: &'a IpSet,
}

impl Here<'_> {
    fn has_ip_in(&self, p: &Prefix) -> bool {
        self.facts.ips.iter().any(|ip| p.contains(*ip))
    }

    fn concerns(&self, t: &Target) -> bool {
        match t {
            Target::Any => !self.facts.ips.is_empty() || !self.facts.subnet.is_empty(),
            Target::Net { prefix, .. } => {
                self.has_ip_in(prefix)
                    || self.facts.subnet.iter().any(|r| r.overlaps(prefix))
                    || (!self.facts.exit.is_empty() && self.internet.covers_prefix(prefix))
            }
        }
    }

    pub fn cut_part(&self, part: &Part) -> Option<FilterRule> {
        let (base, first, extra) = match part {
            Part::Shared(s, extra) => (self.cut_indexed(s), &s.rule, extra),
            Part::Own(r, extra) => (self.cut(r), *r, extra),
        };
        let more = self.with_dsts(first, extra.iter().flat_map(|r| &r.dsts).filter(|d| self.concerns(&d.target)));
        match (base, more) {
            (Some(mut b), Some(m)) => {
                b.dst_ports.extend(m.dst_ports);
                Some(b)
            }
            (b, m) => b.or(m),
        }
    }

    /// [`Here::cut`] of a shared rule, without a scan where the index allows.
    pub fn cut_indexed(&self, s: &Indexed) -> Option<FilterRule> {
        let f = self.facts;
        let near = f.ips.iter().any(|ip| s.reach.contains(*ip)) || f.subnet.iter().any(|r| s.reach.overlaps_prefix(r));
        if !near && (f.exit.is_empty() || !s.reach.overlaps(self.internet)) {
            return None;
        }
        if !s.rule.caps.is_empty() || !f.subnet.is_empty() || !f.exit.is_empty() {
            // Routers may be concerned by any destination: the scan.
            return self.cut(&s.rule);
        }
        let mut at: Vec<usize> = f.ips.iter().filter_map(|ip| s.hosts.get(ip)).flatten().copied().collect();
        at.extend(s.wide.iter().copied().filter(|&i| self.concerns(&s.rule.dsts[i].target)));
        at.sort_unstable();
        at.dedup();
        self.with_dsts(&s.rule, at.into_iter().map(|i| &s.rule.dsts[i]))
    }

    fn with_dsts<'d>(&self, rule: &Rule, dsts: impl Iterator<Item = &'d Dst>) -> Option<FilterRule> {
        let mut dst_ports: Vec<NetPortRange> = Vec::new();
        for d in dsts {
            let ip = d.target.text();
            dst_ports.extend(d.ports.iter().map(|&ports| NetPortRange { ip: ip.clone(), ports }));
        }
        (!dst_ports.is_empty()).then(|| FilterRule {
            src_ips: rule.src.clone(),
            dst_ports,
            ip_proto: rule.proto.clone(),
            cap_grant: Vec::new(),
        })
    }

    /// The part of `rule` this node enforces, if any.
    pub fn cut(&self, rule: &Rule) -> Option<FilterRule> {
        if rule.caps.is_empty() {
            return self.with_dsts(rule, rule.dsts.iter().filter(|d| self.concerns(&d.target)));
        }
        let mut grants = Vec::new();
        for c in &rule.caps {
            let mut dsts: Vec<Prefix> = Vec::new();
            for d in &c.dsts {
                if d.first() == d.last() {
                    if self.facts.ips.contains(&d.addr()) {
                        dsts.push(*d);
                    }
                } else {
                    // A broad destination is narrowed to this node's own
                    // addresses: peers learn no more than they need.
                    dsts.extend(self.facts.ips.iter().filter(|ip| d.contains(**ip)).map(|ip| Prefix::host(*ip)));
                }
            }
            // The router of a subnet keeps the destination as written.
            dsts.extend(c.dsts.iter().filter(|d| self.facts.subnet.iter().any(|r| r.overlaps(d))).copied());
            dsts.sort_unstable();
            dsts.dedup();
            if !dsts.is_empty() {
                grants.push(CapGrant { dsts, cap_map: c.map.clone() });
            }
        }
        (!grants.is_empty()).then(|| FilterRule {
            src_ips: rule.src.clone(),
            dst_ports: Vec::new(),
            ip_proto: Vec::new(),
            cap_grant: grants,
        })
    }
}
