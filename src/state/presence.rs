//! What is true of a node only while it is connected: endpoints, disco key,
//! home DERP region, Hostinfo, online. Kept in RAM only: endpoint churn must
//! never write flash. After a restart clients report it all again within seconds.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::events::{Change, Subscription};
use super::{Node, State, StateError};
use crate::tailcfg::{DiscoPublic, HostinfoView};

/// A Hostinfo larger than this is not kept (real ones are 1–3 KiB).
pub const MAX_HOSTINFO: usize = 16 * 1024;
/// Endpoints a node keeps, and the longest one (`[v6%zone]:port` fits):
/// every peer's map carries them, so one node must not make them large.
/// Real clients report a handful.
pub const MAX_ENDPOINTS: usize = 64;
pub const MAX_ENDPOINT_LEN: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Presence {
    pub disco_key: DiscoPublic,
    pub endpoints: Vec<String>,
    pub home_derp: i64,
    pub hostinfo: Option<Arc<RawValue>>,
    /// The client's capability version.
    pub cap: u32,
    /// Open map streams.
    pub streams: u32,
    /// What peers were last told: online from its first stream until the
    /// grace period after its last one closed. Maps show this, so a full map
    /// and the deltas before it agree.
    pub shown_online: bool,
    /// When the last stream closed (Unix seconds).
    pub last_seen: Option<i64>,
    /// Since when (monotonic seconds) the node has had no stream: set when
    /// its last stream closes, or when the ephemeral reaper first finds it
    /// without one (after a restart, or a registration never followed by a
    /// stream).
    pub idle_since: Option<u64>,
}

impl Presence {
    pub fn online(&self) -> bool {
        self.streams > 0
    }
}

/// What one map request reports of its node.
#[derive(Debug, Default)]
pub struct Reported {
    pub disco: DiscoPublic,
    pub endpoints: Option<Vec<String>>,
    pub hostinfo: Option<Box<RawValue>>,
    /// The client's capability version.
    pub cap: u32,
}

/// What a map request changed, so peers hear of exactly that.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Update {
    /// Endpoints, disco key, home region or capability version: a patch suffices.
    pub endpoints: bool,
    /// The Hostinfo: peers need the whole node.
    pub hostinfo: bool,
    /// The routes the Hostinfo announces, when they differ from the stored
    /// ones: the caller stores them with [`State::set_announced_routes`]
    /// (a write, which `report` never does: it runs on the async runtime).
    pub routes: Option<Vec<crate::tailcfg::Prefix>>,
}

/// Applies one map request's reports to `p`.
pub fn apply(
    p: &mut Presence,
    disco: DiscoPublic,
    endpoints: Option<Vec<String>>,
    hostinfo: Option<Box<RawValue>>,
    cap: u32,
) -> Update {
    let mut u = Update::default();
    if !disco.is_zero() && disco != p.disco_key {
        p.disco_key = disco;
        u.endpoints = true;
    }
    if let Some(mut eps) = endpoints {
        eps.retain(|e| e.len() <= MAX_ENDPOINT_LEN);
        eps.truncate(MAX_ENDPOINTS);
        if eps != p.endpoints {
            p.endpoints = eps;
            u.endpoints = true;
        }
    }
    if cap != 0 && cap != p.cap {
        p.cap = cap;
        u.endpoints = true;
    }
    if let Some(hi) = hostinfo.filter(|h| h.get().len() <= MAX_HOSTINFO) {
        let view = HostinfoView::of(&hi);
        let hi = match (&view.net_info, &p.hostinfo) {
            // A Hostinfo without NetInfo keeps the one we had (protocol.md §6.1).
            (None, Some(old)) => keep_net_info(&hi, old).unwrap_or(hi),
            _ => hi,
        };
        let home = view.net_info.map(|n| n.preferred_derp).filter(|d| *d != 0);
        if let Some(h) = home {
            if h != p.home_derp {
                p.home_derp = h;
                u.endpoints = true;
            }
        }
        if p.hostinfo.as_ref().map(|o| o.get()) != Some(hi.get()) {
            p.hostinfo = Some(Arc::from(hi));
            u.hostinfo = true;
        }
    }
    u
}

fn keep_net_info(new: &RawValue, old: &RawValue) -> Option<Box<RawValue>> {
    let old: serde_json::Value = serde_json::from_str(old.get()).ok()?;
    let ni = old.get("NetInfo")?.clone();
    let mut new: serde_json::Value = serde_json::from_str(new.get()).ok()?;
    new.as_object_mut()?.insert("NetInfo".into(), ni);
    serde_json::value::to_raw_value(&new).ok()
}

impl State {
    pub(super) fn forget_presence(&self, id: u64) {
        self.presence.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.announces.lock().unwrap_or_else(|e| e.into_inner()).forget(id);
    }

    pub fn with_presence<R>(&self, f: impl FnOnce(&HashMap<u64, Presence>) -> R) -> R {
        f(&self.presence.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records what a map request reported and tells peers what changed.
    /// Routes the Hostinfo announces anew come back in `Update::routes`,
    /// for the caller to store.
    pub fn report(&self, id: u64, r: Reported) -> Update {
        let u = self.record_report(id, r);
        self.announce_report(id, &u, None);
        u
    }

    /// Tells peers what [`State::record_report`] recorded; not `known`,
    /// the node's own session that already sent it.
    pub fn announce_report(&self, id: u64, u: &Update, known: Option<&Subscription>) {
        if u.hostinfo {
            self.hub.publish_except(Change::NodeChanged(id), known);
        } else if u.endpoints {
            self.hub.publish_except(Change::Endpoints(id), known);
        }
    }

    /// [`State::report`] without telling peers: a map stream does that once
    /// its first map is out ([`State::announce_report`]), so the new node's
    /// map does not wait behind every peer's delta.
    pub fn record_report(&self, id: u64, r: Reported) -> Update {
        let Reported { disco, endpoints, hostinfo, cap } = r;
        let given = hostinfo.is_some();
        let (mut u, kept) = {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            let p = map.entry(id).or_default();
            let u = apply(p, disco, endpoints, hostinfo, cap);
            (u, p.hostinfo.clone())
        };
        // Compared with the store at every Hostinfo, not only a changed one:
        // a write that failed (a full flash) is tried again. At most one
        // stored change per node per `routes::ANNOUNCE_EVERY`; a later one
        // waits for `store_deferred_routes`.
        if let Some(h) = kept.filter(|_| given) {
            u.routes = self.routes_to_store(id, &h, crate::clock::mono_secs());
        }
        u
    }

    /// [`State::report`], then stores the routes it announces anew: for
    /// callers already off the async runtime (registration). A failed
    /// write is logged; the next Hostinfo tries again.
    pub fn report_blocking(&self, id: u64, hostinfo: Option<Box<RawValue>>, cap: u32) {
        if let Some(routes) = self.report(id, Reported { hostinfo, cap, ..Default::default() }).routes {
            if let Err(e) = self.set_announced_routes(id, routes) {
                log::warn!("node {id}: its announced routes could not be stored: {e}");
            }
        }
    }

    /// A map stream opened and its first map is out ([`State::stream_started`],
    /// then [`State::show_online`]).
    pub fn stream_opened(&self, id: u64) -> bool {
        self.stream_started(id);
        self.show_online(id)
    }

    /// A map stream started: from here the node is not idle (nor reaped
    /// as an idle ephemeral node).
    pub fn stream_started(&self, id: u64) {
        let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
        let p = map.entry(id).or_default();
        p.streams += 1;
        p.idle_since = None;
    }

    /// A stream's first map is out: the first such stream makes the node
    /// online to peers (returns whether it did: then
    /// [`State::elect_primaries`] is due). A node deleted meanwhile (its
    /// presence forgotten) is not brought back.
    pub fn show_online(&self, id: u64) -> bool {
        let news = {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            map.get_mut(&id).is_some_and(|p| p.online() && !std::mem::replace(&mut p.shown_online, true))
        };
        if news {
            self.hub.publish(Change::Online(id, true));
        }
        news
    }

    /// A map stream closed at `now` (wall) / `mono` (monotonic seconds);
    /// returns whether the node has none left.
    pub fn stream_closed(&self, id: u64, now: i64, mono: u64) -> bool {
        let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
        let Some(p) = map.get_mut(&id) else { return true };
        p.streams = p.streams.saturating_sub(1);
        if p.streams == 0 {
            p.last_seen = Some(now);
            p.idle_since = Some(mono);
            self.unsaved_seen.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        }
        p.streams == 0
    }

    /// Removes the ephemeral nodes that have had no map stream for
    /// `timeout` seconds (`mono`: monotonic seconds now). A node found
    /// without a stream for the first time starts its count here, so nodes
    /// loaded at start or registered without ever streaming go too.
    pub fn reap_ephemeral(&self, mono: u64, timeout: u64) -> Result<Vec<Arc<Node>>, StateError> {
        let idle: Vec<u64> = {
            let snap = self.snapshot();
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            snap.nodes
                .values()
                .filter(|n| n.ephemeral)
                .filter_map(|n| {
                    let p = map.entry(n.id).or_default();
                    if p.online() {
                        return None;
                    }
                    let since = *p.idle_since.get_or_insert(mono);
                    (mono.saturating_sub(since) >= timeout).then_some(n.id)
                })
                .collect()
        };
        if idle.is_empty() {
            return Ok(Vec::new());
        }
        let gone = self.mutate(|tx| {
            // Checked again where the write happens: it may have come back or
            // re-registered as a node that is not ephemeral.
            let presence = self.presence.read().unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            for id in idle {
                let Some(n) = tx.snap().nodes.get(&id).cloned() else { continue };
                if n.ephemeral && presence.get(&id).is_none_or(|p| !p.online()) {
                    tx.remove_node(id);
                    gone.push(n);
                }
            }
            Ok::<_, StateError>(gone)
        })?;
        for n in &gone {
            self.forget_presence(n.id);
        }
        Ok(gone)
    }

    /// Whether peers were told the node is online: what the primary
    /// routers are elected from, so a router is replaced when peers hear
    /// it went offline, not at every short reconnect.
    pub fn shown_online(&self, id: u64) -> bool {
        self.with_presence(|m| m.get(&id).is_some_and(|p| p.shown_online))
    }

    /// After the grace period: announce the node offline if it did not come
    /// back (returns whether it was: then [`State::elect_primaries`] is due).
    pub fn announce_if_offline(&self, id: u64) -> bool {
        let news = {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            map.get_mut(&id).is_some_and(|p| !p.online() && std::mem::replace(&mut p.shown_online, false))
        };
        if news {
            self.hub.publish(Change::Online(id, false));
        }
        news
    }

    pub fn is_online(&self, id: u64) -> bool {
        self.with_presence(|m| m.get(&id).is_some_and(Presence::online))
    }

    /// Writes the last-seen times flash does not have yet: of the nodes
    /// that went offline since the last call, or, at shutdown
    /// (`online_too`), of every node, the online ones as `now`. While a
    /// node streams its last-seen is not written at all (a map shows it
    /// online, not when it was seen): idle streaming nodes cost no flash,
    /// and a power cut loses only the last-seen of nodes that were online
    /// or went offline in the last housekeeping round, which their next
    /// connection makes moot.
    pub fn persist_last_seen(&self, now: i64, online_too: bool) -> Result<usize, StateError> {
        let due = std::mem::take(&mut *self.unsaved_seen.lock().unwrap_or_else(|e| e.into_inner()));
        let seen: Vec<(u64, i64)> = self.with_presence(|m| {
            let time = |id: &u64, p: &Presence| match p.online() {
                true => online_too.then_some((*id, now)),
                false => p.last_seen.map(|t| (*id, t)),
            };
            match online_too {
                true => m.iter().filter_map(|(id, p)| time(id, p)).collect(),
                false => due.iter().filter_map(|id| time(id, m.get(id)?)).collect(),
            }
        });
        if seen.is_empty() {
            return Ok(0);
        }
        let written = self.mutate(|tx| {
            let mut n = 0;
            for (id, t) in &seen {
                let Some(old) = tx.snap().nodes.get(id).cloned() else { continue };
                if old.last_seen == Some(*t) {
                    continue;
                }
                // Last-seen is not news for peers: written without an event.
                tx.touch_node(Arc::new(Node { last_seen: Some(*t), ..(*old).clone() }));
                n += 1;
            }
            Ok(n)
        });
        if written.is_err() {
            // Tried again next round.
            self.unsaved_seen.lock().unwrap_or_else(|e| e.into_inner()).extend(due);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.to_string()).unwrap())
    }

    #[test]
    fn updates_say_what_changed() {
        let mut p = Presence::default();
        let u = apply(&mut p, DiscoPublic([1; 32]), None, raw(r#"{"Hostname":"a"}"#), 130);
        assert_eq!(u, Update { endpoints: true, hostinfo: true, routes: None });
        assert_eq!(p.cap, 130);
        let u = apply(&mut p, DiscoPublic([1; 32]), Some(vec!["1.2.3.4:5".into()]), None, 130);
        assert_eq!(u, Update { endpoints: true, hostinfo: false, routes: None });
        let u = apply(&mut p, DiscoPublic([1; 32]), Some(vec!["1.2.3.4:5".into()]), raw(r#"{"Hostname":"a"}"#), 130);
        assert_eq!(u, Update::default());
        let u =
            apply(&mut p, DiscoPublic::default(), None, raw(r#"{"Hostname":"a","NetInfo":{"PreferredDERP":900}}"#), 0);
        assert_eq!(u, Update { endpoints: true, hostinfo: true, routes: None });
        assert_eq!(p.home_derp, 900);
        // A later Hostinfo without NetInfo keeps the home region.
        let u = apply(&mut p, DiscoPublic::default(), None, raw(r#"{"Hostname":"b"}"#), 0);
        assert!(u.hostinfo && !u.endpoints);
        assert!(p.hostinfo.as_ref().unwrap().get().contains("PreferredDERP"));
        // An oversized Hostinfo is dropped.
        let big = format!(r#"{{"Hostname":"{}"}}"#, "x".repeat(MAX_HOSTINFO));
        assert_eq!(apply(&mut p, DiscoPublic::default(), None, raw(&big), 0), Update::default());
        // Endpoints: no more than the cap, none too long.
        let mut eps: Vec<String> = (0..1000).map(|i| format!("198.51.100.{}:{}", i % 250, 40000 + i)).collect();
        eps.insert(1, format!("{}:41641", "9".repeat(MAX_ENDPOINT_LEN)));
        let zoned = "[fe80::1234:5678:9abc:def0%enp0s31f6]:41641".to_string();
        eps.insert(2, zoned.clone());
        apply(&mut p, DiscoPublic::default(), Some(eps.clone()), None, 0);
        assert_eq!(p.endpoints.len(), MAX_ENDPOINTS);
        assert_eq!(p.endpoints[..2], [eps[0].clone(), zoned], "in order, the long one left out");
    }

    /// A stream counts from its start (an ephemeral node is not reaped
    /// while its first map goes out), is shown online after, and a node
    /// deleted in between is not brought back nor announced.
    #[test]
    fn a_stream_counts_from_its_start_and_shows_online_after_its_first_map() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::state::routes::tests::open(dir.path());
        crate::state::routes::tests::with_nodes(&s, 2);
        let watcher = s.subscribe(999);
        s.stream_started(1);
        assert!(s.is_online(1));
        assert!(watcher.take().changes.is_empty());
        assert!(s.show_online(1));
        assert_eq!(watcher.take().changes, [Change::Online(1, true)]);
        s.stream_started(2);
        s.forget_presence(2);
        assert!(!s.show_online(2));
        assert!(watcher.take().changes.is_empty());
        assert!(s.with_presence(|m| !m.contains_key(&2)));
    }

    #[test]
    fn last_seen_reaches_flash_when_a_node_goes_offline_and_at_shutdown_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::state::routes::tests::open(dir.path());
        crate::state::routes::tests::with_nodes(&s, 3);
        let stored = |s: &State, id| s.snapshot().nodes[&id].last_seen;
        for id in 1..=3 {
            s.stream_opened(id);
        }
        // Streaming nodes: nothing to write, however often asked.
        assert_eq!(s.persist_last_seen(1000, false).unwrap(), 0);
        s.stream_closed(2, 1010, 10);
        assert_eq!(s.persist_last_seen(1020, false).unwrap(), 1);
        assert_eq!((stored(&s, 1), stored(&s, 2)), (None, Some(1010)));
        // Written once: the next rounds write nothing.
        assert_eq!(s.persist_last_seen(1030, false).unwrap(), 0);
        // Back online and off again before a round: the later time is written.
        s.stream_opened(2);
        s.stream_closed(2, 1040, 40);
        s.stream_opened(3);
        s.stream_closed(3, 1041, 41);
        s.stream_opened(3);
        assert_eq!(s.persist_last_seen(1050, false).unwrap(), 1);
        assert_eq!((stored(&s, 2), stored(&s, 3)), (Some(1040), None));
        // Shutdown: the online nodes are written as seen now, the saved one is not again.
        assert_eq!(s.persist_last_seen(1060, true).unwrap(), 2);
        assert_eq!([stored(&s, 1), stored(&s, 2), stored(&s, 3)], [Some(1060), Some(1040), Some(1060)]);
        // And it is on disk: a reload reads it back.
        drop(s);
        let s = crate::state::routes::tests::open(dir.path());
        assert_eq!(stored(&s, 2), Some(1040));
    }
}
