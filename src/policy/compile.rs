//! The policy compiled for a tailnet: each node's packet filter, who sees
//! whom, and which routes each viewer gets. Pure: the policy and the nodes
//! in, the answers out.
//!
//! Work is shared where Tailscale's rules allow it: an alias is resolved
//! once, a rule is built once for the tailnet (or once per user for
//! `autogroup:self`, once per router for `via`) and only cut down per node;
//! visibility is computed with bit sets per rule, not per pair of nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::filter::{self, Cap, Dst, Here, Indexed, Matcher, Rule, Target};
use super::ipset::IpSet;
use super::model::{Alias, CapMap, Grant, IpRule, Policy};
use super::nodes::{self, Facts, NodeInfo, UserRef, Users};
use super::peers::{self, Via};
use super::resolve::Resolver;
use crate::tailcfg::{FilterRule, Prefix};

/// Capabilities Tailscale answers with a companion capability in the other
/// direction (the destination learns it may act for the source).
const COMPANIONS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

/// A grant's `autogroup:self` part, made into rules per user.
struct SelfPart {
    src: Arc<Sources>,
    ip: Vec<IpRule>,
    app: Option<CapMap>,
}

/// A grant's sources, resolved: each alias's set and their union, the
/// `SrcIPs` text (none when they resolve to no address) and the set it
/// covers (with the routes a `*` adds).
pub(super) struct Sources {
    pub sets: Vec<IpSet>,
    pub union: Arc<IpSet>,
    pub text: Option<Arc<[String]>>,
    pub set: Arc<IpSet>,
}

/// Sources resolved once per source list: the grants one ACL becomes (one
/// per destination) share their list, and with it these, so an ACL of a
/// thousand sources and a thousand destinations resolves a thousand
/// aliases, not a million, and its rules share one `SrcIPs`.
#[derive(Default)]
pub(super) struct SourceCache {
    // Keyed by the shared list's address: the policy, which holds the
    // lists, outlives the cache, so no two live lists share one.
    done: HashMap<(usize, bool), Arc<Sources>>,
}

impl SourceCache {
    pub fn of(
        &mut self,
        r: &mut Resolver,
        g: &Grant,
        routes: &[String],
        route_set: &IpSet,
        relist: bool,
    ) -> Arc<Sources> {
        let key = (Arc::as_ptr(&g.src) as *const Alias as usize, relist);
        if let Some(s) = self.done.get(&key) {
            return s.clone();
        }
        let sets: Vec<IpSet> = g.src.iter().map(|a| r.resolve(a)).collect();
        let (text, set) = sources(g, &sets, routes, route_set, relist);
        let union = Arc::new(IpSet::union_all(&sets));
        let s = Arc::new(Sources { sets, union, text, set: Arc::new(set) });
        self.done.insert(key, s.clone());
        s
    }
}

/// The policy applied to one set of nodes.
pub struct Compiled {
    index: HashMap<u64, usize>,
    ids: Vec<u64>,
    /// The tailnet-wide rules, merged, which every node's filter is cut
    /// from when it is asked for: held once, not once per node (a policy
    /// of 10,000 rules on 1,000 nodes would otherwise hold ten million).
    rules: Vec<Indexed>,
    merge_keys: HashMap<filter::MergeKey, usize>,
    /// Each node's own rules (its user's autogroup:self rules, its via
    /// rules), shared by reference.
    own_rules: Vec<Vec<Arc<Rule>>>,
    internet: IpSet,
    pub(super) facts: Vec<Facts>,
    pub(super) seen: peers::Seen,
    /// The tailnet-wide rules' matchers.
    pub(super) shared: Vec<Matcher>,
    /// Each node's own matchers (its user's autogroup:self rules, its via
    /// rules): indices into `own`.
    pub(super) mine: Vec<Vec<usize>>,
    pub(super) own: Vec<Matcher>,
    pub(super) via: Option<Via>,
}

impl Policy {
    /// Compiles the policy for these nodes, knowing only the users who own
    /// one of them: a token naming a user without a node may then name
    /// someone else by name (see [`Policy::compile_with_users`]).
    pub fn compile(&self, nodes: &[NodeInfo]) -> Compiled {
        self.compile_with_users(nodes, &[])
    }

    /// Compiles the policy for these nodes, with every user of the tailnet
    /// (those without a node too), so each user token names the user it
    /// was written for, or nobody when it fits several.
    pub fn compile_with_users(&self, nodes: &[NodeInfo], users: &[UserRef]) -> Compiled {
        let users = Users::of(nodes, users);
        let facts = nodes::facts(self, nodes, &users);
        let mut r = Resolver::new(self, &facts, &users);
        let routes: Vec<String> = r.subnet_routes().iter().map(Prefix::to_string).collect();
        let route_set = IpSet::of_prefixes(&r.subnet_routes());

        let mut shared = Vec::new();
        let mut selves = Vec::new();
        let mut via_grants = Vec::new();
        let mut cache = SourceCache::default();
        for g in &self.grants {
            if g.via.is_empty() {
                shared.extend(regular(&mut r, &mut cache, g, &routes, &route_set, &mut selves));
            } else if let Some(v) = peers::via_grant(&mut r, &mut cache, g, &routes, &route_set) {
                via_grants.push(v);
            }
        }
        let shared = filter::merge(shared);
        let shared_matchers: Vec<Matcher> = shared.iter().map(Rule::matcher).collect();
        let shared: Vec<Indexed> =
            shared.into_iter().zip(&shared_matchers).map(|(rule, m)| Indexed::new(rule, m.dsts.clone())).collect();

        // autogroup:self rules, per user; via rules, per router.
        // Shared by the devices of one user: each holds its user's rules.
        let mut own_rules: Vec<Vec<Arc<Rule>>> = vec![Vec::new(); facts.len()];
        let mut own: Vec<Matcher> = Vec::new();
        let mut mine: Vec<Vec<usize>> = vec![Vec::new(); facts.len()];
        if !selves.is_empty() {
            let mut by_user: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, f) in facts.iter().enumerate() {
                if let (false, Some(u)) = (f.tagged, f.user) {
                    by_user.entry(u).or_default().push(i);
                }
            }
            for same in by_user.values() {
                let rules: Vec<Arc<Rule>> =
                    selves.iter().flat_map(|s| self_rules(s, same, &facts)).map(Arc::new).collect();
                let first = own.len();
                own.extend(rules.iter().map(|r| r.matcher()));
                for &n in same {
                    own_rules[n].extend(rules.iter().cloned());
                    mine[n].extend(first..own.len());
                }
            }
        }
        for (n, f) in facts.iter().enumerate() {
            for v in &via_grants {
                let (rules, reach) = v.rules_for(f, r.internet_set());
                let first = own.len();
                own.extend(rules.iter().map(Rule::matcher).chain(reach));
                mine[n].extend(first..own.len());
                own_rules[n].extend(rules.into_iter().map(Arc::new));
            }
        }

        let internet = r.internet_set().clone();
        let merge_keys = filter::merge_keys(&shared);

        let via = peers::Via::new(&mut r, &mut cache, (&routes, &route_set), self, via_grants);
        let seen = peers::visibility(&facts, &shared_matchers, &own, &mine, &internet);
        Compiled {
            index: nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect(),
            ids: nodes.iter().map(|n| n.id).collect(),
            rules: shared,
            merge_keys,
            own_rules,
            internet,
            facts,
            seen,
            shared: shared_matchers,
            mine,
            own,
            via,
        }
    }
}

impl Compiled {
    pub(super) fn at(&self, id: u64) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// The node's packet filter (empty: nothing may reach it; an unknown
    /// node gets that too).
    ///
    /// Cut from the shared rules at each call (O(rules)): callers keep what
    /// they need of it (the mapper keeps a hash of the filter it sent).
    pub fn filter(&self, node: u64) -> Vec<FilterRule> {
        let Some(i) = self.at(node) else { return Vec::new() };
        let here = Here { facts: &self.facts[i], internet: &self.internet };
        let extra = &self.own_rules[i];
        if extra.is_empty() {
            self.rules.iter().filter_map(|s| here.cut_indexed(s)).collect()
        } else {
            filter::merge_onto(&self.rules, &self.merge_keys, extra).iter().filter_map(|p| here.cut_part(p)).collect()
        }
    }

    /// Whether `viewer` gets `peer` in its netmap: either may reach the other.
    pub fn sees(&self, viewer: u64, peer: u64) -> bool {
        match (self.at(viewer), self.at(peer)) {
            (Some(v), Some(p)) => v != p && self.seen.get(v, p),
            _ => false,
        }
    }

    /// The rules this compile holds (the tailnet's and every node's own).
    #[cfg(test)]
    pub(super) fn held_rules(&self) -> usize {
        self.rules.len() + self.own_rules.iter().map(Vec::len).sum::<usize>()
    }

    /// The peers `viewer` sees, by id, in the order the nodes were given.
    pub fn peers(&self, viewer: u64) -> Vec<u64> {
        let Some(v) = self.at(viewer) else { return Vec::new() };
        (0..self.ids.len()).filter(|&i| i != v && self.seen.get(v, i)).map(|i| self.ids[i]).collect()
    }

    /// The routes (approved by hand or by `autoApprovers`) of a node.
    pub fn approved_routes(&self, node: u64) -> Vec<Prefix> {
        self.at(node).map(|i| self.facts[i].approved.clone()).unwrap_or_default()
    }
}

/// The rules a grant (without `via`) gives the whole tailnet; its
/// `autogroup:self` part is kept in `selves` for the per-user pass.
///
/// Each destination address is listed once per rule, with the rule's port
/// ranges shared, not once per port: the cross product of destinations
/// and ports is made only in one node's cut, of the destinations it serves.
fn regular(
    r: &mut Resolver,
    cache: &mut SourceCache,
    g: &Grant,
    routes: &[String],
    route_set: &IpSet,
    selves: &mut Vec<SelfPart>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    if g.src.is_empty() || g.dst.is_empty() {
        return out;
    }
    let src = cache.of(r, g, routes, route_set, true);
    let others: Vec<&Alias> = g.dst.iter().filter(|a| **a != Alias::SelfDevices).collect();
    if !others.is_empty() {
        let dst_sets: Vec<(bool, IpSet)> = others.iter().map(|a| (**a == Alias::Any, r.resolve(a))).collect();
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for (any, set) in &dst_sets {
            if *any {
                targets.push(Target::Any);
            } else {
                targets.extend(set.prefixes().into_iter().map(|prefix| Target::Net { prefix, bare: true }));
            }
        }
        targets.retain(|t| seen.insert(t.clone()));
        if let (false, Some(text)) = (targets.is_empty(), &src.text) {
            for ip in &g.ip {
                let dsts = targets.iter().map(|t| Dst { target: t.clone(), ports: ip.ports.clone() }).collect();
                out.push(Rule::ip(text, &src.set, &ip.proto, dsts));
            }
        }
        if let Some(app) = &g.app {
            // One capability entry for all the destinations: a node's cut
            // then copies the value once per rule, not once per destination.
            let mut cap_dsts: Vec<Prefix> = dst_sets.iter().flat_map(|(_, s)| s.prefixes()).collect();
            let mut at = HashSet::new();
            cap_dsts.retain(|p| at.insert(*p));
            let mut dst_text: Vec<String> = dst_sets.iter().flat_map(|(_, s)| s.strings()).collect();
            let mut dst_set = IpSet::union_all(dst_sets.iter().map(|(_, s)| s));
            if dst_sets.iter().any(|(any, _)| *any) {
                dst_text.extend(routes.iter().cloned());
                dst_set = dst_set.union(route_set);
            }
            let src_prefixes: Vec<Prefix> = src.sets.iter().flat_map(IpSet::prefixes).collect();
            out.push(Rule {
                src: src.text.clone().unwrap_or_else(|| Arc::from(Vec::new())),
                src_set: src.set.clone(),
                proto: Vec::new(),
                dsts: Vec::new(),
                caps: vec![Cap { dsts: cap_dsts, map: app.clone() }],
            });
            out.extend(companions(app, dst_text, dst_set, src_prefixes));
        }
    }
    if g.dst.contains(&Alias::SelfDevices) {
        selves.push(SelfPart { src, ip: g.ip.clone(), app: g.app.clone() });
    }
    out
}

/// A rule's `SrcIPs` and the set they cover. `None` when the sources
/// resolve to no address (no rule is made then, but for capabilities).
/// `*` adds every approved subnet route, written apart; with `*` the other
/// sources are listed again on their own, as Tailscale writes them.
pub(super) fn sources(
    g: &Grant,
    sets: &[IpSet],
    routes: &[String],
    route_set: &IpSet,
    relist: bool,
) -> (Option<Arc<[String]>>, IpSet) {
    if g.src.contains(&Alias::DangerAll) {
        return (Some(Arc::from(vec!["*".to_string()])), IpSet::everything());
    }
    let merged = IpSet::union_all(sets);
    if merged.is_empty() {
        return (None, merged);
    }
    let any = g.src.contains(&Alias::Any);
    let mut text = merged.strings();
    let mut set = merged;
    if any {
        text.extend(routes.iter().cloned());
        set = set.union(route_set);
        if relist {
            let mut listed: std::collections::HashSet<String> = text.iter().cloned().collect();
            for (a, s) in g.src.iter().zip(sets) {
                if *a != Alias::Any {
                    for t in s.strings() {
                        if listed.insert(t.clone()) {
                            text.push(t);
                        }
                    }
                }
            }
        }
    }
    (Some(Arc::from(text)), set)
}

/// The companion rules of `app`'s capabilities, pointing back from the
/// destinations to the sources.
fn companions(app: &CapMap, dst_text: Vec<String>, dst_set: IpSet, src_prefixes: Vec<Prefix>) -> Vec<Rule> {
    let src: Arc<[String]> = Arc::from(dst_text);
    let dst_set = Arc::new(dst_set);
    COMPANIONS
        .iter()
        .filter(|(cap, _)| app.contains_key(*cap))
        .map(|(_, companion)| Rule {
            src: src.clone(),
            src_set: dst_set.clone(),
            proto: Vec::new(),
            dsts: Vec::new(),
            caps: vec![Cap {
                dsts: src_prefixes.clone(),
                map: Arc::new([(companion.to_string(), serde_json::Value::Null)].into_iter().collect()),
            }],
        })
        .collect()
}

/// One user's `autogroup:self` rules: sources and destinations are that
/// user's own untagged devices.
fn self_rules(part: &SelfPart, same: &[usize], facts: &[Facts]) -> Vec<Rule> {
    let mut out = Vec::new();
    let members: Vec<&Facts> = same.iter().map(|&i| &facts[i]).collect();
    let src_set = Arc::new(IpSet::of_addrs(
        members
            .iter()
            .filter(|f| part.src.sets.iter().any(|s| f.ips.iter().any(|ip| s.contains(*ip))))
            .flat_map(|f| f.ips.iter().copied()),
    ));
    if src_set.is_empty() {
        return out;
    }
    let src: Arc<[String]> = Arc::from(src_set.strings());
    for ip in &part.ip {
        let dsts: Vec<Dst> = members
            .iter()
            .flat_map(|f| f.ips.iter())
            .map(|a| Dst { target: Target::Net { prefix: Prefix::host(*a), bare: true }, ports: ip.ports.clone() })
            .collect();
        if !dsts.is_empty() {
            out.push(Rule::ip(&src, &src_set, &ip.proto, dsts));
        }
    }
    if let Some(app) = &part.app {
        let caps = vec![Cap {
            dsts: members.iter().flat_map(|f| f.ips.iter().map(|a| Prefix::host(*a))).collect(),
            map: app.clone(),
        }];
        let dst_text: Vec<String> = members.iter().flat_map(|f| f.ips.iter().map(|a| a.to_string())).collect();
        let dst_set = IpSet::of_addrs(members.iter().flat_map(|f| f.ips.iter().copied()));
        out.push(Rule { src: src.clone(), src_set: src_set.clone(), proto: Vec::new(), dsts: Vec::new(), caps });
        out.extend(companions(app, dst_text, dst_set, src_set.prefixes()));
    }
    out
}
