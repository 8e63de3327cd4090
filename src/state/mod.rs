//! The in-memory picture of the tailnet and the one place it changes.
//!
//! Readers take an `Arc<Snapshot>` and never block writers. A mutation runs
//! in [`State::mutate`]: it checks its rules and makes its changes through a
//! [`Tx`] on a copy of the snapshot, the store batch lands (flushed), and
//! only then is the next snapshot swapped in and its changes published:
//! what a caller is told succeeded is on flash. Mutations do blocking I/O;
//! async callers run them in `spawn_blocking`. Time (wall and monotonic) and
//! randomness come in as parameters or through [`Settings`], so the rules are
//! testable; no file here reads a clock or the RNG itself.
//!
//! By concern: `snapshot.rs` (the value and its indexes), `tx.rs` (one
//! mutation), `users.rs`, `keys.rs` (pre-auth keys), `nodes.rs`,
//! `register.rs` (who may join), `presence.rs` (what is true only while a
//! node is connected), `expiry.rs` (expiries on a clock that may read
//! early), `events.rs` (change fan-out), `ipalloc.rs`, `names.rs`,
//! `routes.rs` (announced and approved routes, primary routers).

mod apikeys;
pub mod events;
pub mod expiry;
pub mod ipalloc;
mod keys;
pub mod names;
mod nodes;
pub mod pending;
mod policy;
pub mod presence;
pub mod register;
pub mod routes;
mod snapshot;
mod tx;
mod users;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::Span;
use crate::config::Prefixes;
use crate::secrets;
use crate::store::{NextIds, Store, StoreError};
use crate::tailcfg::{DerpMap, DnsConfig, DnsRecord};
use events::Hub;
use presence::Presence;

/// The records state keeps, as the store encodes them: the mapper and the
/// API read them from here, never from `store`.
pub use crate::store::{ApiKey, Node, PreAuthKey, User};
pub use apikeys::prefix_of as api_key_prefix;
pub use keys::NewPreAuthKey;
pub use policy::{Applied, PolicySource};
pub use snapshot::Snapshot;
pub use tx::Tx;
pub use users::{ExternalIdentity, NewUser};

#[derive(Debug)]
pub enum StateError {
    NotFound(String),
    Exists(String),
    Invalid(String),
    /// The change would orphan something (a user that still has nodes).
    InUse(String),
    PoolFull(String),
    Store(StoreError),
    Random,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NotFound(m)
            | StateError::Exists(m)
            | StateError::Invalid(m)
            | StateError::InUse(m)
            | StateError::PoolFull(m) => f.write_str(m),
            StateError::Store(e) => e.fmt(f),
            StateError::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError::Store(e)
    }
}

impl From<secrets::RandomUnavailable> for StateError {
    fn from(_: secrets::RandomUnavailable) -> Self {
        StateError::Random
    }
}

/// The parts of the config the rules need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefixes: Prefixes,
    /// Zero: nodes do not expire.
    pub node_expiry: Span,
    /// Nodes the tailnet may hold (the board profile's cap).
    pub max_nodes: usize,
    /// Where keys and random addresses come from (the OS; tests may fix it).
    pub random: secrets::Fill,
    /// What every map carries, as configured (its DERP map and extra DNS
    /// records can change later: [`State::set_derp_map`],
    /// [`State::set_extra_records`]).
    pub map: MapContext,
    pub policy: PolicySource,
}

impl Settings {
    pub fn new(prefixes: Prefixes) -> Self {
        Settings {
            prefixes,
            node_expiry: Span(0),
            max_nodes: 10_000,
            random: secrets::random_bytes,
            map: MapContext::default(),
            policy: PolicySource::default(),
        }
    }
}

/// What every map carries that does not come from the nodes.
#[derive(Debug, Clone, Default)]
pub struct MapContext {
    /// MagicDNS's domain ("" without MagicDNS).
    pub base_domain: String,
    pub derp_map: Arc<DerpMap>,
    pub dns: Arc<DnsConfig>,
    /// The tailnet's display name.
    pub domain: String,
    pub taildrop: bool,
}

struct Writer {
    next: NextIds,
}

pub struct State {
    store: Store,
    settings: Settings,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held for the whole of a mutation: one writer at a time, in order.
    writer: Mutex<Writer>,
    /// Private: every change is published here, by state, after its commit.
    hub: Arc<Hub>,
    presence: RwLock<HashMap<u64, Presence>>,
    /// Nodes gone offline whose last-seen is not on flash yet
    /// ([`State::persist_last_seen`]).
    unsaved_seen: Mutex<std::collections::HashSet<u64>>,
    /// When each node's announced routes were last stored (`routes::ANNOUNCE_EVERY`).
    announces: Mutex<routes::Announces>,
    pending: Mutex<pending::PendingRegs>,
    expiry: expiry::Deferred,
    /// Swapped whole when the DERP map changes; readers clone the `Arc`.
    map: RwLock<Arc<MapContext>>,
}

fn not_found(what: &str, id: u64) -> StateError {
    StateError::NotFound(format!("no {what} with id {id}"))
}

impl State {
    /// Loads everything from `store`.
    pub fn load(store: Store, settings: Settings) -> Result<State, StateError> {
        let (snap, next, stored_policy) = Self::read_store(&store)?;
        let expiry = expiry::Deferred::default();
        if snap.nodes.values().any(|n| n.expiry_deferred.is_some()) {
            expiry.note_deferred();
        }
        let state = State {
            store,
            map: RwLock::new(Arc::new(settings.map.clone())),
            settings,
            snapshot: RwLock::new(Arc::new(snap)),
            writer: Mutex::new(Writer { next }),
            hub: Arc::new(Hub::default()),
            presence: RwLock::new(HashMap::new()),
            unsaved_seen: Mutex::default(),
            announces: Mutex::new(routes::Announces::default()),
            pending: Mutex::new(pending::PendingRegs::default()),
            expiry,
        };
        state.load_policy(stored_policy)?;
        Ok(state)
    }

    /// Everything the store holds, as a snapshot, the next free ids and the
    /// stored policy text (put in force by `load_policy`, not here).
    fn read_store(store: &Store) -> Result<(Snapshot, NextIds, Option<String>), StateError> {
        let c = store.load()?;
        let mut snap = Snapshot::from_records(c.users, c.nodes, c.preauth_keys);
        snap.api_keys = c.api_keys.into_iter().map(|k| (k.id, Arc::new(k))).collect();
        // Counters never fall behind what exists, even if a record outlived a counter write.
        let mut next = c.next_ids;
        next.user = next.user.max(snap.users.keys().max().map_or(1, |m| m + 1));
        next.node = next.node.max(snap.nodes.keys().max().map_or(1, |m| m + 1));
        next.preauth_key = next.preauth_key.max(snap.preauth_keys.keys().max().map_or(1, |m| m + 1));
        next.api_key = next.api_key.max(snap.api_keys.keys().max().map_or(1, |m| m + 1));
        Ok((snap, next, c.policy))
    }

    /// After a failed write (a full flash): reopens the store and takes what
    /// it holds as the truth, since the failed batch may or may not have
    /// landed. Until the store opens again (room on the flash) every write is
    /// refused with the store's error; reads keep the last snapshot.
    fn recover_store(&self, w: &mut Writer) -> Result<(), StateError> {
        self.store.reopen()?;
        let (mut snap, next, _) = Self::read_store(&self.store)?;
        // The policy in force stays (a file's is not in the store at all).
        let old = self.snapshot();
        snap.policy = old.policy.clone();
        snap.policy_text = old.policy_text.clone();
        snap.primaries = old.primaries.clone();
        snap.recompile(true);
        if snap.nodes.values().any(|n| n.expiry_deferred.is_some()) {
            self.expiry.note_deferred();
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        w.next = next;
        log::warn!("the store was reopened after a failed write; writes work again");
        self.hub.publish(events::Change::Everything);
        Ok(())
    }

    /// Change events from now on for a map session of `node_id` (or any
    /// other follower: id 0 is no node).
    pub fn subscribe(&self, node_id: u64) -> events::Subscription {
        self.hub.subscribe(node_id)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What every map carries now.
    pub fn map_context(&self) -> Arc<MapContext> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new DERP map and tells every map session; returns whether
    /// it changed. (All change events are published here, in `state`.)
    pub fn set_derp_map(&self, derp_map: DerpMap) -> bool {
        {
            let mut ctx = self.map.write().unwrap_or_else(|e| e.into_inner());
            if *ctx.derp_map == derp_map {
                return false;
            }
            *ctx = Arc::new(MapContext { derp_map: Arc::new(derp_map), ..(**ctx).clone() });
        }
        self.hub.publish(events::Change::DerpMap);
        true
    }

    /// Swaps in new extra DNS records (a changed `dns.extra_records_path`)
    /// and tells every map session; returns whether they changed.
    pub fn set_extra_records(&self, records: Vec<DnsRecord>) -> bool {
        {
            let mut ctx = self.map.write().unwrap_or_else(|e| e.into_inner());
            if ctx.dns.extra_records == records {
                return false;
            }
            let dns = DnsConfig { extra_records: records, ..(*ctx.dns).clone() };
            *ctx = Arc::new(MapContext { dns: Arc::new(dns), ..(**ctx).clone() });
        }
        self.hub.publish(events::Change::Dns);
        true
    }

    pub fn flush(&self) -> Result<(), StateError> {
        Ok(self.store.flush()?)
    }

    /// Runs one mutation: `f` edits a copy of the snapshot through a [`Tx`];
    /// the store batch lands (flushed) before the new snapshot is swapped in
    /// and its change events go out. Either all of it happens or none.
    ///
    /// Every rule that decides whether a write may happen is checked inside
    /// `f`, against `tx`'s snapshot: writers are serialized, so what `f` sees
    /// is what the write lands on. A check against [`State::snapshot`] before
    /// calling `mutate` can be stale by the time the write runs.
    fn mutate<T, E: From<StateError>>(&self, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.store.is_broken() {
            self.recover_store(&mut w)?;
        }
        let mut tx = Tx::new((*self.snapshot()).clone(), w.next);
        let out = f(&mut tx)?;
        let (next_snap, next_ids, mut batch, changes) = tx.finish(&|id| self.shown_online(id));
        if next_ids != w.next {
            batch.set_next_ids(&next_ids);
        }
        self.store.commit(&batch).map_err(|e| E::from(e.into()))?;
        w.next = next_ids;
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next_snap);
        drop(w);
        for c in changes {
            self.hub.publish(c);
        }
        Ok(out)
    }
}

/// Whether a timestamp has passed. A clock that reads early (a router before
/// NTP) never expires anything too soon: what it reads as passed is surely
/// passed. Expiries that would be computed from such a clock are not
/// (`state::expiry`).
pub fn has_passed(at: i64, now: i64) -> bool {
    now >= at
}

#[cfg(test)]
mod tests;
