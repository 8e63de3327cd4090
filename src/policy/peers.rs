//! Who sees whom, and which routes of a peer a viewer gets.
//!
//! A node sees a peer when either may reach the other by the rules (its
//! addresses or its approved subnets as the source, the other's addresses,
//! subnets, or, for an exit node, the internet as the destination). A
//! router's routes reach a viewer only where the viewer's rules let it use
//! them; `via` grants steer a prefix to the routers carrying their tags.

use std::sync::Arc;

use super::compile::{Compiled, SourceCache};
use super::filter::{Dst, Matcher, Rule, Target};
use super::ipset::IpSet;
use super::model::{Alias, Grant, IpRule, Policy};
use super::nodes::Facts;
use super::resolve::Resolver;
use crate::tailcfg::Prefix;

/// A symmetric relation on the nodes, one bit per pair.
pub(super) struct Seen {
    words: usize,
    bits: Vec<u64>,
}

impl Seen {
    fn new(n: usize) -> Seen {
        let words = n.div_ceil(64);
        Seen { words, bits: vec![0; words * n] }
    }

    pub fn get(&self, a: usize, b: usize) -> bool {
        self.bits[a * self.words + b / 64] & (1 << (b % 64)) != 0
    }

    fn set(&mut self, a: usize, b: usize) {
        self.bits[a * self.words + b / 64] |= 1 << (b % 64);
    }

    fn or_row(&mut self, a: usize, row: &[u64]) {
        for (w, r) in self.bits[a * self.words..(a + 1) * self.words].iter_mut().zip(row) {
            *w |= r;
        }
    }
}

/// The whole of one family: length 0 fits both, so `new` cannot fail.
fn all_of(addr: std::net::IpAddr) -> Prefix {
    Prefix::new(addr, 0).expect("a /0 prefix is valid for every family")
}

fn reaches_internet(d: &IpSet, internet: &IpSet) -> bool {
    d.covers_prefix(&all_of([0, 0, 0, 0].into()))
        || d.covers_prefix(&all_of([0u16; 8].into()))
        || internet.is_subset_of(d)
}

fn in_src(f: &Facts, m: &Matcher) -> bool {
    f.ips.iter().any(|ip| m.srcs.contains(*ip)) || f.subnet.iter().any(|r| m.srcs.overlaps_prefix(r))
}

fn in_dst(f: &Facts, m: &Matcher, internet: &IpSet) -> bool {
    f.ips.iter().any(|ip| m.dsts.contains(*ip))
        || f.subnet.iter().any(|r| m.dsts.overlaps_prefix(r))
        || (!f.exit.is_empty() && reaches_internet(&m.dsts, internet))
}

/// Visibility from the shared matchers and each node's own ones (an own
/// matcher counts only for pairs where one side holds it).
pub(super) fn visibility(
    facts: &[Facts],
    shared: &[Matcher],
    own: &[Matcher],
    mine: &[Vec<usize>],
    internet: &IpSet,
) -> Seen {
    let n = facts.len();
    let mut seen = Seen::new(n);
    let words = n.div_ceil(64);
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); own.len()];
    for (node, list) in mine.iter().enumerate() {
        for &k in list {
            holders[k].push(node);
        }
    }
    let row_of = |nodes: &mut dyn Iterator<Item = usize>| {
        let mut row = vec![0u64; words];
        for b in nodes {
            row[b / 64] |= 1 << (b % 64);
        }
        row
    };
    let all_matchers = shared.iter().map(|m| (m, None)).chain(own.iter().zip(&holders).map(|(m, h)| (m, Some(h))));
    for (m, holders) in all_matchers {
        let dst = row_of(&mut (0..n).filter(|&b| in_dst(&facts[b], m, internet)));
        let srcs: Vec<usize> = (0..n).filter(|&a| in_src(&facts[a], m)).collect();
        match holders {
            None => srcs.iter().for_each(|&a| seen.or_row(a, &dst)),
            Some(h) => {
                let held = row_of(&mut h.iter().copied());
                let dst_held: Vec<u64> = dst.iter().zip(&held).map(|(d, o)| d & o).collect();
                for &a in &srcs {
                    let is_holder = held[a / 64] & (1 << (a % 64)) != 0;
                    seen.or_row(a, if is_holder { &dst } else { &dst_held });
                }
            }
        }
    }
    for a in 0..n {
        for b in 0..n {
            if a != b && seen.get(a, b) {
                seen.set(b, a);
            }
        }
    }
    seen
}

/// What a `via` grant needs, resolved once.
pub(super) struct ViaGrant {
    tags: Vec<usize>,
    dst: Vec<Prefix>,
    internet: bool,
    ip: Vec<IpRule>,
    src: Arc<[String]>,
    src_set: Arc<IpSet>,
}

/// A grant's destinations as prefixes (`autogroup:internet` as a flag).
fn dst_prefixes(r: &mut Resolver, g: &Grant) -> (Vec<Prefix>, bool) {
    let mut out = Vec::new();
    let mut internet = false;
    for a in &g.dst {
        match a {
            Alias::Internet => internet = true,
            Alias::SelfDevices => {}
            a => out.extend(r.resolve(a).prefixes()),
        }
    }
    (out, internet)
}

pub(super) fn via_grant(
    r: &mut Resolver,
    cache: &mut SourceCache,
    g: &Grant,
    routes: &[String],
    route_set: &IpSet,
) -> Option<ViaGrant> {
    if g.src.is_empty() {
        return None;
    }
    let s = cache.of(r, g, routes, route_set, false);
    let (dst, internet) = dst_prefixes(r, g);
    Some(ViaGrant {
        tags: g.via.clone(),
        dst,
        internet,
        ip: g.ip.clone(),
        src: s.text.clone()?,
        src_set: s.set.clone(),
    })
}

impl ViaGrant {
    /// The prefixes router `f` serves for this grant (none unless it
    /// carries one of the grant's tags and serves a destination).
    fn targets(&self, f: &Facts, internet: &IpSet) -> Vec<Prefix> {
        if !self.tags.iter().any(|t| f.tags.contains(t)) {
            return Vec::new();
        }
        let mut targets: Vec<Prefix> =
            self.dst.iter().filter(|d| f.subnet.iter().any(|r| r.overlaps(d))).copied().collect();
        if self.internet && !f.exit.is_empty() {
            targets.extend(internet.prefixes());
        }
        targets
    }

    /// The filter rules this grant puts on router `f`, and the matcher that
    /// makes the grant's sources and the router see each other (also for a
    /// grant of capabilities only, which puts no rule in the filter).
    pub fn rules_for(&self, f: &Facts, internet: &IpSet) -> (Vec<Rule>, Option<Matcher>) {
        let targets = self.targets(f, internet);
        if targets.is_empty() {
            return (Vec::new(), None);
        }
        let rules: Vec<Rule> = self
            .ip
            .iter()
            .map(|ip| Rule {
                src: self.src.clone(),
                src_set: self.src_set.clone(),
                proto: ip.proto.clone(),
                dsts: targets
                    .iter()
                    .map(|&prefix| Dst { target: Target::Net { prefix, bare: false }, ports: ip.ports.clone() })
                    .collect(),
                caps: Vec::new(),
            })
            .collect();
        let reach =
            rules.is_empty().then(|| Matcher { srcs: self.src_set.clone(), dsts: IpSet::of_prefixes(&targets) });
        (rules, reach)
    }
}

/// Every grant's reach, kept when the policy has `via` grants: which
/// viewers a grant is for and which prefixes it covers decide where a
/// viewer's route to a prefix points.
pub(super) struct Via {
    grants: Vec<Reach>,
    /// Per node, a bit per grant whose sources hold it: worked out once
    /// here, so a viewer's question visits its own grants, not every grant.
    /// Bits, not lists: nodes × grants of them is a bounded ~1 MB at a
    /// thousand nodes and the 10,000 rules a policy may hold.
    for_node: Vec<u64>,
    words: usize,
}

struct Reach {
    /// Shared with the other grants of one ACL.
    src: Arc<IpSet>,
    dst: Vec<Prefix>,
    internet: bool,
    via: Vec<usize>,
}

impl Via {
    pub fn new(
        r: &mut Resolver,
        cache: &mut SourceCache,
        (routes, route_set): (&[String], &IpSet),
        policy: &Policy,
        via_grants: Vec<ViaGrant>,
    ) -> Option<Via> {
        if via_grants.is_empty() {
            return None;
        }
        let grants = policy
            .grants
            .iter()
            .map(|g| {
                let s = cache.of(r, g, routes, route_set, false);
                let (dst, internet) = dst_prefixes(r, g);
                Reach { src: s.union.clone(), dst, internet, via: g.via.clone() }
            })
            .collect::<Vec<_>>();
        let words = grants.len().div_ceil(64);
        let mut for_node = vec![0u64; words * r.facts.len()];
        for (n, f) in r.facts.iter().enumerate() {
            for (i, g) in grants.iter().enumerate() {
                if f.ips.iter().any(|ip| g.src.contains(*ip)) {
                    for_node[n * words + i / 64] |= 1 << (i % 64);
                }
            }
        }
        Some(Via { grants, for_node, words })
    }

    /// The grants whose sources hold node `v`.
    fn of_node(&self, v: usize) -> impl Iterator<Item = &Reach> {
        let row = &self.for_node[v * self.words..(v + 1) * self.words];
        row.iter().enumerate().flat_map(move |(w, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                let b = (rest != 0).then(|| rest.trailing_zeros() as usize)?;
                rest &= rest - 1;
                Some(&self.grants[w * 64 + b])
            })
        })
    }
}

/// Routes of a peer a viewer is steered to (`include`) or away from
/// (`exclude`) by via grants; `use_primary` falls back to the HA primary.
#[derive(Default)]
struct Steer {
    include: Vec<Prefix>,
    exclude: Vec<Prefix>,
    use_primary: Vec<Prefix>,
}

impl Compiled {
    fn matchers(&self, v: usize) -> impl Iterator<Item = &Matcher> {
        self.shared.iter().chain(self.mine[v].iter().map(|&k| &self.own[k]))
    }

    /// Whether viewer `v`'s rules let it use `route` (to it, or from it back).
    fn may_use(&self, v: usize, route: &Prefix) -> bool {
        let f = &self.facts[v];
        let has_ip = |s: &IpSet| f.ips.iter().any(|ip| s.contains(*ip));
        let has_subnet = |s: &IpSet| f.subnet.iter().any(|r| s.overlaps_prefix(r));
        self.matchers(v).any(|m| {
            (has_ip(&m.srcs) && m.dsts.overlaps_prefix(route))
                || (m.srcs.overlaps_prefix(route) && has_ip(&m.dsts))
                || (has_subnet(&m.srcs) && m.dsts.overlaps_prefix(route))
                || (m.srcs.overlaps_prefix(route) && has_subnet(&m.dsts))
        })
    }

    fn steer(&self, v: usize, p: usize) -> Steer {
        let mut s = Steer::default();
        let Some(via) = &self.via else { return s };
        let peer = &self.facts[p];
        // Steering is about a peer's routes: most peers have none.
        if peer.subnet.is_empty() && peer.exit.is_empty() {
            return s;
        }
        let mine = || via.of_node(v);
        let steering = || mine().filter(|g| !g.via.is_empty());
        for g in steering() {
            let mut matched: Vec<Prefix> = Vec::new();
            for d in &g.dst {
                matched.extend(peer.subnet.iter().filter(|r| d.overlaps(r)));
            }
            if g.internet {
                matched.extend(peer.exit.iter());
            }
            if matched.is_empty() {
                continue;
            }
            if g.via.iter().any(|t| peer.tags.contains(t)) {
                s.include.extend(matched);
            } else {
                s.exclude.extend(matched);
            }
        }
        if s.include.is_empty() && s.exclude.is_empty() {
            return s;
        }
        // Several routers with the grant's tag serve the prefix: the HA
        // primary among them keeps it, else the one with the lowest id.
        for g in steering() {
            for d in &g.dst {
                for inc in s.include.clone() {
                    if !d.overlaps(&inc) {
                        continue;
                    }
                    let routers = || {
                        self.facts
                            .iter()
                            .filter(|f| g.via.iter().any(|t| f.tags.contains(t)) && f.subnet.contains(&inc))
                    };
                    let primary = routers()
                        .find(|f| f.primary.contains(&inc))
                        .map(|f| f.id)
                        .or_else(|| routers().map(|f| f.id).min());
                    if primary.is_some_and(|id| id != peer.id) {
                        s.include.retain(|x| *x != inc);
                        if !s.exclude.contains(&inc) {
                            s.exclude.push(inc);
                        }
                    }
                }
            }
        }
        // A plain grant covering the prefix too leaves it to the HA primary.
        for g in mine().filter(|g| g.via.is_empty()) {
            for d in &g.dst {
                for inc in &s.include {
                    if d.overlaps(inc) && !s.use_primary.contains(inc) {
                        s.use_primary.push(*inc);
                    }
                }
                s.exclude.retain(|e| !d.overlaps(e));
            }
        }
        s
    }

    /// The routes of `peer` that `viewer` gets (subnets it may use and
    /// exit routes), before the peer's own addresses.
    fn routes(&self, v: usize, p: usize) -> Vec<Prefix> {
        let (viewer, peer) = (&self.facts[v], &self.facts[p]);
        let steer = self.steer(v, p);
        let mut out: Vec<Prefix> = peer
            .primary
            .iter()
            .chain(&peer.exit)
            .filter(|r| !steer.exclude.contains(r) && self.may_use(v, r))
            .copied()
            .collect();
        for inc in &steer.include {
            if !out.contains(inc) && (peer.primary.contains(inc) || !steer.use_primary.contains(inc)) {
                out.push(*inc);
            }
        }
        // A router sharing the prefix learns who is primary for it.
        for r in &peer.primary {
            if viewer.subnet.contains(r) && !out.contains(r) {
                out.push(*r);
            }
        }
        out
    }

    /// The peer's `AllowedIPs` as this viewer gets them: its addresses, and
    /// the routes the viewer may use through it. Empty if it does not see it.
    pub fn allowed_ips(&self, viewer: u64, peer: u64) -> Vec<Prefix> {
        let (Some(v), Some(p)) = (self.at(viewer), self.at(peer)) else { return Vec::new() };
        if v == p || !self.seen.get(v, p) {
            return Vec::new();
        }
        let mut out: Vec<Prefix> = self.facts[p].ips.iter().map(|ip| Prefix::host(*ip)).collect();
        out.extend(self.routes(v, p));
        out
    }

    /// Whether any viewer may get routes through `peer` (it has approved
    /// subnets or exit routes). When not, [`Compiled::allowed_ips`] is only
    /// its addresses and [`Compiled::primary_routes`] is empty for every
    /// viewer: a session needs to compare nothing else of it.
    pub fn routes_through(&self, peer: u64) -> bool {
        self.at(peer).is_some_and(|p| !self.facts[p].subnet.is_empty() || !self.facts[p].exit.is_empty())
    }

    /// The subnet routes among them (`PrimaryRoutes`; exit routes are not).
    pub fn primary_routes(&self, viewer: u64, peer: u64) -> Vec<Prefix> {
        let (Some(v), Some(p)) = (self.at(viewer), self.at(peer)) else { return Vec::new() };
        if v == p || !self.seen.get(v, p) {
            return Vec::new();
        }
        self.routes(v, p).into_iter().filter(|r| r.prefix_len() != 0).collect()
    }
}
