//! Subnet routes and exit nodes: what a node announces (its Hostinfo's
//! `RoutableIPs`, checked here and kept on flash only when it changes),
//! what is approved for it (by the admin, or by the policy's
//! `autoApprovers`), and which router is primary for each subnet (in RAM:
//! it follows who is online).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{not_found, Node, Snapshot, State, StateError, Tx};
use crate::config::Prefixes;
use crate::tailcfg::Prefix;

/// Routes one node may announce; more are cut (sorted first, so the same
/// announcement always keeps the same ones). Real routers announce a few.
pub const MAX_ROUTES: usize = 256;

/// A node's announcement is stored at most once per this many seconds: a
/// client changing it at every map request would otherwise have each one
/// write flash, compile the policy and run autoApprovers. A change within
/// the interval waits in RAM (the node's Hostinfo) and is stored once it
/// has passed (by housekeeping, or at the node's next Hostinfo).
pub const ANNOUNCE_EVERY: u64 = 60;

/// When each node's announcement was last stored, and who has a newer one
/// waiting for [`ANNOUNCE_EVERY`] to pass (RAM only; one entry per node).
#[derive(Debug, Default)]
pub(super) struct Announces {
    /// Monotonic seconds of the last stored change (or the one under way).
    last: HashMap<u64, u64>,
    waiting: BTreeSet<u64>,
}

impl Announces {
    /// Whether node `id` may store a changed announcement at `mono`; if so
    /// the slot is taken now (so concurrent requests get one write), if not
    /// the node waits for [`State::store_deferred_routes`].
    fn take_slot(&mut self, id: u64, mono: u64) -> bool {
        if self.last.get(&id).is_some_and(|t| mono < t.saturating_add(ANNOUNCE_EVERY)) {
            self.waiting.insert(id);
            return false;
        }
        self.last.insert(id, mono);
        self.waiting.remove(&id);
        true
    }

    pub(super) fn forget(&mut self, id: u64) {
        self.last.remove(&id);
        self.waiting.remove(&id);
    }
}

/// An exit route: `0.0.0.0/0` or `::/0`.
pub fn is_exit(p: &Prefix) -> bool {
    p.prefix_len() == 0
}

/// The two exit routes, which are approved together (a client treats a
/// node as an exit node only with both, as Headscale does).
pub fn exit_pair() -> [Prefix; 2] {
    // Invariant: constant, valid prefixes.
    ["0.0.0.0/0".parse().expect("valid prefix"), "::/0".parse().expect("valid prefix")]
}

/// What a Hostinfo's `RoutableIPs` announce, as the server keeps it: parsed,
/// with host bits zero (`192.168.1.7/24` is a mistake, not a route: the
/// Tailscale CLI refuses it too), deduplicated, sorted, at most
/// [`MAX_ROUTES`]. Routes inside or around the tailnet's own ranges are
/// dropped: peers would send tailnet traffic to the router (Tailscale keeps
/// its CGNAT and ULA ranges out of subnet routes too). Exit routes stay,
/// though they cover everything. Entries dropped are returned as text, to log.
pub fn announced(texts: &[String], tailnet: &Prefixes) -> (Vec<Prefix>, Vec<String>) {
    let mut kept = BTreeSet::new();
    let mut dropped = Vec::new();
    for t in texts {
        let ok = t.parse::<Prefix>().ok().filter(|p| {
            *p == p.masked() && (is_exit(p) || ![tailnet.v4, tailnet.v6].iter().flatten().any(|own| own.overlaps(p)))
        });
        match ok {
            Some(p) => {
                kept.insert(p);
            }
            None => dropped.push(crate::text::clip(t, 64).to_string()),
        }
    }
    if kept.len() > MAX_ROUTES {
        dropped.push(format!("{} route(s) beyond the {MAX_ROUTES} a node may announce", kept.len() - MAX_ROUTES));
    }
    (kept.into_iter().take(MAX_ROUTES).collect(), dropped)
}

/// The approvals an admin asks for, checked against what `node` announces:
/// each route must be one it announces (a router approved for a route it
/// does not offer would serve nothing, and silently start serving when it
/// does); an exit route brings its pair. Empty: nothing approved.
pub fn checked_approval(node: &Node, routes: &[Prefix]) -> Result<Vec<Prefix>, StateError> {
    let mut out = BTreeSet::new();
    for r in routes {
        if *r != r.masked() {
            return Err(StateError::Invalid(format!("{r} has host bits set (did you mean {}?)", r.masked())));
        }
        if !node.announced_routes.contains(r) {
            let offered = node.announced_routes.iter().map(Prefix::to_string).collect::<Vec<_>>();
            return Err(StateError::Invalid(format!(
                "node {} does not announce {r}, so it cannot be approved (it announces: {}; a device announces routes with tailscale up --advertise-routes or --advertise-exit-node)",
                node.id,
                if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") }
            )));
        }
        if is_exit(r) {
            out.extend(exit_pair());
        } else {
            out.insert(*r);
        }
    }
    Ok(out.into_iter().collect())
}

/// One primary router per served subnet, from `routers` (each subnet's
/// online routers): the current primary keeps it while it is online (a
/// router coming back does not take it back, so peers do not flap);
/// otherwise the lowest node id among the online ones. A subnet with no
/// online router has none. Exit routes have no primary (not given here).
pub fn elect(current: &BTreeMap<Prefix, u64>, routers: &BTreeMap<Prefix, BTreeSet<u64>>) -> BTreeMap<Prefix, u64> {
    routers
        .iter()
        .filter_map(|(p, ids)| {
            let keep = current.get(p).filter(|id| ids.contains(id));
            keep.or_else(|| ids.first()).map(|id| (*p, *id))
        })
        .collect()
}

/// The subnets each online node serves (announced, approved, not exit routes).
fn online_routers(snap: &Snapshot, online: &dyn Fn(u64) -> bool) -> BTreeMap<Prefix, BTreeSet<u64>> {
    let mut out: BTreeMap<Prefix, BTreeSet<u64>> = BTreeMap::new();
    for n in snap.nodes.values().filter(|n| !n.announced_routes.is_empty() && online(n.id)) {
        for r in n.announced_routes.iter().filter(|r| !is_exit(r) && n.approved_routes.contains(r)) {
            out.entry(*r).or_default().insert(n.id);
        }
    }
    out
}

/// The primaries `snap` should have with these nodes online.
pub(super) fn elected(snap: &Snapshot, online: &dyn Fn(u64) -> bool) -> BTreeMap<Prefix, u64> {
    elect(&snap.primaries, &online_routers(snap, online))
}

impl Tx {
    /// Elects the primary routers again (after the routes, the nodes or
    /// who is online changed). The routers whose role changed are news to
    /// every peer (and to themselves: their own `PrimaryRoutes`).
    pub(super) fn elect(&mut self, online: &dyn Fn(u64) -> bool) {
        let next = elected(self.snap(), online);
        if next == *self.snap().primaries {
            return;
        }
        let old = self.snap().primaries.clone();
        let mut touched: BTreeSet<u64> = BTreeSet::new();
        for (p, id) in old.iter() {
            if next.get(p) != Some(id) {
                touched.insert(*id);
            }
        }
        for (p, id) in &next {
            if old.get(p) != Some(id) {
                touched.insert(*id);
                log::info!("route {p}: node {id} is its primary router now");
            }
        }
        self.set_primaries(next, touched);
    }

    /// Stores what the policy's `autoApprovers` approve of what nodes
    /// announce, in the mutation that made it so (a new announcement, a new
    /// policy, a new owner or tag: [`Tx::review_routes`]). It only ever adds: an approval stays
    /// when the policy changes, as in Headscale.
    pub(super) fn auto_approve(&mut self) {
        let snap: &Snapshot = self.snap();
        let Some(policy) = snap.policy.clone() else { return };
        // Most mutations touch no route: nothing announced waits for approval.
        let waiting = |n: &Node| n.announced_routes.iter().any(|r| !n.approved_routes.contains(r));
        if !snap.nodes.values().any(|n| waiting(n)) {
            return;
        }
        let nodes = snap.policy_nodes();
        let users: Vec<_> = snap.users.values().map(|u| Snapshot::user_ref(u)).collect();
        let approved = policy.approved_routes(&nodes, &users);
        let mut updates = Vec::new();
        for (info, auto) in nodes.iter().zip(approved) {
            let Some(n) = snap.nodes.get(&info.id) else { continue };
            let mut all: BTreeSet<Prefix> = n.approved_routes.iter().copied().collect();
            all.extend(auto);
            if all.len() != n.approved_routes.len() {
                updates.push(Arc::new(Node { approved_routes: all.into_iter().collect(), ..(**n).clone() }));
            }
        }
        for n in updates {
            log::info!("node {}: routes approved by the policy: {}", n.id, list(&n.approved_routes));
            self.put_node(n);
        }
    }
}

/// Routes as one comma-separated line.
pub fn list(routes: &[Prefix]) -> String {
    routes.iter().map(Prefix::to_string).collect::<Vec<_>>().join(", ")
}

impl State {
    /// Stores the announcements that changed within [`ANNOUNCE_EVERY`] of
    /// the previous stored one, once it has passed (`mono`: monotonic
    /// seconds now), from the node's latest Hostinfo; returns how many were
    /// written. Blocking (store writes): housekeeping calls it. A failed
    /// write leaves the node waiting, to be tried again.
    pub fn store_deferred_routes(&self, mono: u64) -> Result<usize, StateError> {
        let due: Vec<u64> = {
            let a = self.announces.lock().unwrap_or_else(|e| e.into_inner());
            a.waiting
                .iter()
                .copied()
                .filter(|id| a.last.get(id).is_none_or(|t| mono >= t.saturating_add(ANNOUNCE_EVERY)))
                .collect()
        };
        let mut written = 0;
        for id in due {
            let hostinfo = self.with_presence(|m| m.get(&id).and_then(|p| p.hostinfo.clone()));
            let routes = match hostinfo {
                Some(h) => self.routes_to_store(id, &h, mono),
                None => None,
            };
            // Nothing to store (it went back to what is stored, or is gone): no longer waiting.
            let Some(routes) = routes else {
                self.announces.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(&id);
                continue;
            };
            match self.set_announced_routes(id, routes) {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(StateError::NotFound(_)) => {}
                Err(e) => {
                    self.announces.lock().unwrap_or_else(|e| e.into_inner()).waiting.insert(id);
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Elects the primary routers again after who is online changed
    /// (a stream opened, or a node was announced offline); returns whether
    /// a primary changed. Takes the writer lock, so async callers use
    /// `spawn_blocking`; writes nothing to the store.
    pub fn elect_primaries(&self) -> Result<bool, StateError> {
        let online = |id| self.shown_online(id);
        // Most online changes are of nodes that route nothing.
        if elected(&self.snapshot(), &online) == *self.snapshot().primaries {
            return Ok(false);
        }
        let before = self.snapshot().primaries.clone();
        self.mutate(|_| Ok::<_, StateError>(()))?;
        Ok(self.snapshot().primaries != before)
    }

    /// `tinyscale nodes approve-routes`: the node's approved routes become
    /// `routes` (checked by [`checked_approval`]; empty un-approves all).
    /// autoApprovers approve again only at the next announcement, policy,
    /// owner or tag change.
    pub fn approve_routes(&self, id: u64, routes: &[Prefix]) -> Result<Arc<Node>, StateError> {
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            let approved = checked_approval(&old, routes)?;
            if approved != old.approved_routes {
                tx.put_node(Arc::new(Node { approved_routes: approved, ..(*old).clone() }));
            }
            Ok::<_, StateError>(())
        })?;
        self.snapshot().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))
    }

    /// Stores what node `id` announces now (from [`announced`]); returns
    /// whether it changed. Peers hear of it: it may make routes serve.
    /// A write, so callers on the async runtime use `spawn_blocking`.
    pub fn set_announced_routes(&self, id: u64, routes: Vec<Prefix>) -> Result<bool, StateError> {
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            // Checked here, where the write happens: flash is written only
            // when the announcement really changed.
            if old.announced_routes == routes {
                return Ok(false);
            }
            tx.put_node(Arc::new(Node { announced_routes: routes, ..(*old).clone() }));
            tx.review_routes();
            Ok(true)
        })
    }

    /// The routes the node's Hostinfo announces, when they differ from
    /// what is stored and the node may store a change at `mono` (monotonic
    /// seconds; see [`ANNOUNCE_EVERY`]). `None`: nothing to write now.
    pub(super) fn routes_to_store(
        &self,
        id: u64,
        hostinfo: &serde_json::value::RawValue,
        mono: u64,
    ) -> Option<Vec<Prefix>> {
        let texts = crate::tailcfg::HostinfoView::of(hostinfo).routable_ips.unwrap_or_default();
        let (routes, dropped) = announced(&texts, &self.settings.prefixes);
        if !dropped.is_empty() {
            log::debug!("node {id}: announced routes not taken: {}", dropped.join(", "));
        }
        let snap = self.snapshot();
        let stored = snap.nodes.get(&id)?;
        let mut a = self.announces.lock().unwrap_or_else(|e| e.into_inner());
        if stored.announced_routes == routes {
            // Back to what is stored: nothing waits any more.
            a.waiting.remove(&id);
            return None;
        }
        a.take_slot(id, mono).then_some(routes)
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
pub(super) mod tests;
