//! Network maps: the full MapResponse a session starts with, and the
//! smallest delta for each batch of changes after it. Pure: it reads a
//! snapshot and the volatile presence, and takes `now` as an argument.

pub mod frame;
mod matcher;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::clock;
use crate::dns;
use crate::policy::Compiled;
use crate::state::events::Change;
use crate::state::presence::Presence;
use crate::state::register::TAGGED_DEVICES;
use crate::state::routes::is_exit;
use crate::state::{has_passed, MapContext, Node, Snapshot};
use crate::tailcfg::{self, FilterRule, MapResponse, PeerChange, Prefix, UserProfile};

const CAP_FILE_SHARING: &str = "https://tailscale.com/cap/file-sharing";

fn time(t: i64) -> String {
    clock::rfc3339(t)
}

pub fn user_profile(snap: &Snapshot, user_id: u64) -> UserProfile {
    if user_id == TAGGED_DEVICES {
        return UserProfile {
            id: user_id,
            login_name: "tagged-devices".into(),
            display_name: "Tagged Devices".into(),
            profile_pic_url: String::new(),
        };
    }
    match snap.users.get(&user_id) {
        Some(u) => UserProfile {
            id: u.id,
            login_name: if u.email.is_empty() { u.name.clone() } else { u.email.clone() },
            display_name: if u.display_name.is_empty() { u.name.clone() } else { u.display_name.clone() },
            profile_pic_url: u.profile_pic_url.clone(),
        },
        None => UserProfile {
            id: user_id,
            login_name: format!("user-{user_id}"),
            display_name: String::new(),
            profile_pic_url: String::new(),
        },
    }
}

/// A node as a client sees it (`is_self`: its own node).
pub fn node(ctx: &MapContext, n: &Node, p: Option<&Presence>, now: i64, is_self: bool) -> tailcfg::Node {
    let addrs: Vec<String> =
        n.ipv4.map(|a| format!("{a}/32")).into_iter().chain(n.ipv6.map(|a| format!("{a}/128"))).collect();
    let online = p.is_some_and(|p| p.shown_online);
    let home = p.map_or(0, |p| p.home_derp);
    let mut cap_map = BTreeMap::new();
    if is_self && ctx.taildrop {
        cap_map.insert(CAP_FILE_SHARING.to_string(), Vec::new());
    }
    tailcfg::Node {
        id: n.id,
        stable_id: n.id.to_string(),
        name: dns::fqdn(&n.given_name, &ctx.base_domain),
        user: n.user_id,
        // Stored keys were written from parsed keys; a damaged one reads as zero.
        key: n.node_key,
        key_expiry: n.expiry.map(time),
        machine: n.machine_key.unwrap_or_default(),
        disco_key: p.map(|p| p.disco_key).unwrap_or_default(),
        allowed_ips: addrs.clone(),
        primary_routes: Vec::new(),
        addresses: addrs,
        endpoints: p.map(|p| p.endpoints.clone()).unwrap_or_default(),
        home_derp: home,
        legacy_derp: if home > 0 { format!("127.3.3.40:{home}") } else { String::new() },
        hostinfo: p.and_then(|p| p.hostinfo.clone()),
        created: time(n.created_at),
        cap: p.map_or(0, |p| p.cap),
        tags: n.tags.clone(),
        last_seen: if online { None } else { p.and_then(|p| p.last_seen).or(n.last_seen).map(time) },
        online: Some(online),
        machine_authorized: true,
        cap_map,
        expired: n.expiry.is_some_and(|e| has_passed(e, now)),
    }
}

/// A peer as `viewer` sees it: its routes in `AllowedIPs` and
/// `PrimaryRoutes` as the compiled policy lets this viewer use them.
fn peer_node(
    ctx: &MapContext,
    snap: &Snapshot,
    n: &Node,
    p: Option<&Presence>,
    viewer: u64,
    now: i64,
) -> tailcfg::Node {
    let mut out = node(ctx, n, p, now, false);
    let (routes, primary) = peer_routes(snap.access.as_deref(), n, viewer);
    out.allowed_ips.extend(routes.iter().map(|r| r.to_string()));
    out.primary_routes = primary.iter().map(|r| r.to_string()).collect();
    out
}

/// A node's own node: the subnets it is primary for in `PrimaryRoutes`
/// and, with its approved exit routes, in `AllowedIPs`, as Headscale sends it.
fn self_node(ctx: &MapContext, snap: &Snapshot, me: &Node, p: Option<&Presence>, now: i64) -> tailcfg::Node {
    let mut out = node(ctx, me, p, now, true);
    let primary: Vec<String> =
        snap.primaries.iter().filter(|(_, id)| **id == me.id).map(|(r, _)| r.to_string()).collect();
    let exit = me.announced_routes.iter().filter(|r| is_exit(r) && me.approved_routes.contains(r));
    out.allowed_ips.extend(primary.iter().cloned().chain(exit.map(|r| r.to_string())));
    out.primary_routes = primary;
    out
}

/// Whether any viewer may get routes through `peer` under `access`.
fn routes_through(access: Option<&Compiled>, peer: u64) -> bool {
    access.is_some_and(|a| a.routes_through(peer))
}

/// The routes of `peer` that `viewer` gets beyond its addresses (subnets
/// and exit routes), and those of them it is primary for.
fn peer_routes(access: Option<&Compiled>, peer: &Node, viewer: u64) -> (Vec<Prefix>, Vec<Prefix>) {
    let Some(a) = access else { return (Vec::new(), Vec::new()) };
    let own: Vec<Prefix> = peer
        .ipv4
        .map(|ip| Prefix::host(ip.into()))
        .into_iter()
        .chain(peer.ipv6.map(|ip| Prefix::host(ip.into())))
        .collect();
    let routes = a.allowed_ips(viewer, peer.id).into_iter().filter(|r| !own.contains(r)).collect();
    (routes, a.primary_routes(viewer, peer.id))
}

/// Whether `self_id`'s key has expired: such a node is shown only itself
/// until it logs in again.
pub fn self_expired(snap: &Snapshot, self_id: u64, now: i64) -> bool {
    snap.nodes.get(&self_id).is_some_and(|n| n.expiry.is_some_and(|e| has_passed(e, now)))
}

/// The first map of a session; `None` when the node no longer exists.
pub fn full(
    ctx: &MapContext,
    snap: &Snapshot,
    presence: &HashMap<u64, Presence>,
    self_id: u64,
    now: i64,
) -> Option<MapResponse> {
    let me = snap.nodes.get(&self_id)?;
    if self_expired(snap, self_id, now) {
        // Only the peers this policy shows it: it may hold them from an
        // earlier stream; the others it was never told of.
        let access = snap.access.as_deref();
        return Some(expired_map(ctx, snap, presence, me, &[], now, &|id| sees(access, self_id, id)));
    }
    let access = snap.access.as_deref();
    let peers: Vec<tailcfg::Node> = snap
        .nodes
        .values()
        .filter(|n| n.id != self_id && sees(access, self_id, n.id))
        .map(|n| peer_node(ctx, snap, n, presence.get(&n.id), self_id, now))
        .collect();
    let users: BTreeSet<u64> = std::iter::once(me.user_id).chain(peers.iter().map(|p| p.user)).collect();
    Some(MapResponse {
        node: Some(self_node(ctx, snap, me, presence.get(&self_id), now)),
        derp_map: Some(ctx.derp_map.clone()),
        peers: (!peers.is_empty()).then_some(peers),
        dns_config: Some(ctx.dns.clone()),
        domain: ctx.domain.clone(),
        packet_filter: Some(filter(access, self_id)),
        user_profiles: users.into_iter().map(|u| user_profile(snap, u)).collect(),
        control_time: Some(time(now)),
        debug: Some(tailcfg::Debug { disable_log_tail: true }),
        ..Default::default()
    })
}

/// What an expired node is told: its own node (`Expired`, `KeyExpiry` in the
/// past, which makes the client ask for a login), no peers, a packet filter
/// that lets nothing in, and the parts that come from the configuration. `gone` lists the peers the client may still
/// hold from before (every current one, plus `removed` ones of this batch),
/// so a stream that was live empties its peer list; only those `shown` it,
/// so a peer the policy hid is never named.
fn expired_map(
    ctx: &MapContext,
    snap: &Snapshot,
    presence: &HashMap<u64, Presence>,
    me: &Node,
    removed: &[u64],
    now: i64,
    shown: &dyn Fn(u64) -> bool,
) -> MapResponse {
    let gone: BTreeSet<u64> = snap
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != me.id)
        .chain(removed.iter().copied())
        .filter(|id| shown(*id))
        .collect();
    MapResponse {
        node: Some(node(ctx, me, presence.get(&me.id), now, true)),
        derp_map: Some(ctx.derp_map.clone()),
        peers_removed: gone.into_iter().collect(),
        dns_config: Some(ctx.dns.clone()),
        domain: ctx.domain.clone(),
        packet_filter: Some(Vec::new()),
        user_profiles: vec![user_profile(snap, me.user_id)],
        control_time: Some(time(now)),
        ..Default::default()
    }
}

/// Whether `viewer` is shown `peer` (everyone is, without a policy).
fn sees(access: Option<&Compiled>, viewer: u64, peer: u64) -> bool {
    access.is_none_or(|a| a.sees(viewer, peer))
}

fn filter(access: Option<&Compiled>, node: u64) -> Vec<FilterRule> {
    access.map_or_else(FilterRule::allow_all, |a| a.filter(node))
}

/// A digest of a filter as it goes on the wire: what a session keeps of
/// the filter it sent, to tell whether a new policy changes it (a filter
/// may be large, and a router holds a session per node).
fn filter_digest(rules: &[FilterRule]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Invariant: filter rules are plain data, which always serializes.
    serde_json::to_vec(rules).expect("a filter serializes").hash(&mut h);
    h.finish()
}

/// What a session has told its client that later answers depend on.
#[derive(Default, Clone)]
pub struct Sent {
    /// The client was told its node expired (and holds no peers).
    pub expired: bool,
    /// The compiled policy its filter and peers came from: a new one is
    /// diffed against it for this node alone.
    pub access: Option<Arc<Compiled>>,
    /// [`filter_digest`] of the filter it was sent last.
    pub filter_digest: u64,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent").field("expired", &self.expired).field("policy", &self.access.is_some()).finish()
    }
}

impl PartialEq for Sent {
    fn eq(&self, other: &Sent) -> bool {
        let same = match (&self.access, &other.access) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.expired == other.expired && same && self.filter_digest == other.filter_digest
    }
}

impl Sent {
    /// After a full map built at `now`.
    pub fn after_full(snap: &Snapshot, self_id: u64, now: i64) -> Sent {
        Sent {
            expired: self_expired(snap, self_id, now),
            access: snap.access.clone(),
            filter_digest: filter_digest(&filter(snap.access.as_deref(), self_id)),
        }
    }
}

#[derive(Debug)]
pub enum Delta {
    Nothing,
    Send(Box<MapResponse>),
    /// Too much changed for a delta: send a full map.
    Full,
    /// The session's own node is gone: end the stream.
    SelfGone,
}

/// The smallest update for `self_id` after `changes` (which may repeat ids),
/// given what the session already `sent`. Also called with no changes (at
/// each keep-alive) so a key that expires by the clock is noticed.
pub fn delta(
    ctx: &MapContext,
    snap: &Snapshot,
    presence: &HashMap<u64, Presence>,
    self_id: u64,
    changes: &[Change],
    now: i64,
    sent: &mut Sent,
) -> Delta {
    let Some(me) = snap.nodes.get(&self_id) else { return Delta::SelfGone };
    match (sent.expired, self_expired(snap, self_id, now)) {
        (false, true) => {
            sent.expired = true;
            let removed: Vec<u64> =
                changes.iter().filter_map(|c| if let Change::NodeRemoved(id) = c { Some(*id) } else { None }).collect();
            // What it was last told it may see (the policy may have changed since).
            let told = sent.access.as_deref();
            let shown = |id: u64| sees(told, self_id, id);
            return Delta::Send(Box::new(expired_map(ctx, snap, presence, me, &removed, now, &shown)));
        }
        (true, true) => {
            // Nothing about peers reaches an expired node; only its own node
            // and what comes from the configuration.
            let me_changed = changes.contains(&Change::NodeChanged(self_id));
            let derp = changes.contains(&Change::DerpMap);
            let dns = changes.contains(&Change::Dns);
            if !me_changed && !derp && !dns {
                return Delta::Nothing;
            }
            let resp = MapResponse {
                node: me_changed.then(|| node(ctx, me, presence.get(&self_id), now, true)),
                derp_map: derp.then(|| ctx.derp_map.clone()),
                dns_config: dns.then(|| ctx.dns.clone()),
                // Its owner may be what changed (a user rename).
                user_profiles: if me_changed { vec![user_profile(snap, me.user_id)] } else { Vec::new() },
                control_time: Some(time(now)),
                ..Default::default()
            };
            return Delta::Send(Box::new(resp));
        }
        // Logged in again: everything it was not told meanwhile.
        (true, false) => {
            sent.expired = false;
            return Delta::Full;
        }
        (false, false) => {}
    }
    let (mut self_changed, mut changed, mut removed) = (false, BTreeSet::new(), BTreeSet::new());
    let (mut patched, mut online) = (BTreeSet::new(), BTreeSet::new());
    let (mut derp, mut dns) = (false, false);
    for c in changes {
        match *c {
            Change::Everything => return Delta::Full,
            Change::DerpMap => derp = true,
            Change::Dns => dns = true,
            // Diffed below, whatever the change.
            Change::Policy => {}
            Change::NodeChanged(id) if id == self_id => self_changed = true,
            Change::NodeRemoved(id) if id == self_id => return Delta::SelfGone,
            // A node's own endpoints and online state are news only to others.
            Change::Endpoints(id) | Change::Online(id, _) if id == self_id => {}
            Change::NodeChanged(id) => {
                removed.remove(&id);
                changed.insert(id);
            }
            Change::NodeRemoved(id) => {
                changed.remove(&id);
                removed.insert(id);
            }
            Change::Endpoints(id) => {
                patched.insert(id);
            }
            Change::Online(id, _) => {
                online.insert(id);
            }
        }
    }
    let mut resp = MapResponse {
        derp_map: derp.then(|| ctx.derp_map.clone()),
        dns_config: dns.then(|| ctx.dns.clone()),
        ..Default::default()
    };
    // A new compiled policy: this node's filter, and the peers it now sees
    // or no longer sees, whatever changed it.
    let access = snap.access.as_deref();
    // What the client was last told it may see: a peer it was never shown
    // is never named to it, not even as removed.
    let told = sent.access.clone();
    let was_seen = |id: u64| sees(told.as_deref(), self_id, id);
    let same = match (&sent.access, &snap.access) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    if !same {
        let before = sent.access.as_deref();
        let now_filter = filter(access, self_id);
        let digest = filter_digest(&now_filter);
        if digest != sent.filter_digest {
            sent.filter_digest = digest;
            resp.packet_filter = Some(now_filter);
        }
        for (&id, n) in snap.nodes.iter().filter(|(id, _)| **id != self_id) {
            match (sees(before, self_id, id), sees(access, self_id, id)) {
                (false, true) => {
                    removed.remove(&id);
                    changed.insert(id);
                }
                (true, false) => {
                    changed.remove(&id);
                    removed.insert(id);
                }
                // Still seen: its routes may be new to this viewer (an
                // approval, a new primary, a rule that lets it use them).
                // Only peers with routes under either policy are compared:
                // comparing every pair made each primary change O(nodes²)
                // for the sessions together (review 12: 5 s unoptimized
                // for 1000 nodes, repeatable by a router's key every 10 s).
                (true, true)
                    if (routes_through(before, id) || routes_through(access, id))
                        && peer_routes(before, n, self_id) != peer_routes(access, n, self_id) =>
                {
                    changed.insert(id);
                }
                _ => {}
            }
        }
        sent.access = snap.access.clone();
    }
    let mut users = BTreeSet::new();
    if self_changed {
        users.insert(me.user_id);
        resp.node = Some(self_node(ctx, snap, me, presence.get(&self_id), now));
    }
    for id in &changed {
        match snap.nodes.get(id).filter(|_| sees(access, self_id, *id)) {
            Some(n) => {
                users.insert(n.user_id);
                resp.peers_changed.push(peer_node(ctx, snap, n, presence.get(id), self_id, now));
            }
            None if was_seen(*id) => {
                removed.insert(*id);
            }
            None => {}
        }
    }
    // Gone, or hidden by the policy, and shown before.
    resp.peers_removed = removed
        .into_iter()
        .filter(|id| (!snap.nodes.contains_key(id) || !sees(access, self_id, *id)) && was_seen(*id))
        .collect();
    let mut patches: BTreeMap<u64, PeerChange> = BTreeMap::new();
    let unchanged_peer = |id: &u64| !changed.contains(id) && snap.nodes.contains_key(id) && sees(access, self_id, *id);
    for id in patched.iter().filter(|id| unchanged_peer(id)) {
        if let Some(p) = presence.get(id) {
            let e = patches.entry(*id).or_insert_with(|| PeerChange { node_id: *id, ..Default::default() });
            e.endpoints = Some(p.endpoints.clone());
            e.disco_key = (!p.disco_key.is_zero()).then_some(p.disco_key);
            e.derp_region = Some(p.home_derp);
            e.cap = (p.cap != 0).then_some(p.cap);
        }
    }
    // What the node's presence says now (the event may be older): online
    // as OnlineChange; offline as a patch, which can carry LastSeen too.
    for id in online.iter().filter(|id| unchanged_peer(id)) {
        let p = presence.get(id);
        if p.is_some_and(|p| p.shown_online) {
            resp.online_change.insert(id.to_string(), true);
            continue;
        }
        let e = patches.entry(*id).or_insert_with(|| PeerChange { node_id: *id, ..Default::default() });
        e.online = Some(false);
        e.last_seen = p.and_then(|p| p.last_seen).or(snap.nodes.get(id).and_then(|n| n.last_seen)).map(time);
    }
    resp.peers_changed_patch = patches.into_values().collect();
    if resp.node.is_none()
        && resp.packet_filter.is_none()
        && resp.derp_map.is_none()
        && resp.dns_config.is_none()
        && resp.peers_changed.is_empty()
        && resp.peers_removed.is_empty()
        && resp.peers_changed_patch.is_empty()
        && resp.online_change.is_empty()
    {
        return Delta::Nothing;
    }
    resp.user_profiles = users.into_iter().map(|u| user_profile(snap, u)).collect();
    resp.control_time = Some(time(now));
    Delta::Send(Box::new(resp))
}

/// The one-line `{"KeepAlive":true}`.
pub fn keepalive() -> MapResponse {
    MapResponse { keep_alive: true, ..Default::default() }
}

#[cfg(test)]
mod client_view;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod tests;
