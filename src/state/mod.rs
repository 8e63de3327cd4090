//! The in-memory picture of the tailnet and the one place it changes.
//!
//! Readers take an `Arc<Snapshot>` and never block writers. A mutation
//! validates against the current snapshot, writes a [`Batch`] to the store
//! (flushed), and only then swaps in the next snapshot: what a caller is told
//! succeeded is on flash. Mutations do blocking I/O; async callers run them in
//! `spawn_blocking`. Time comes in as a parameter, so the rules are testable.

pub mod ipalloc;
pub mod names;
pub mod secrets;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::clock;
use crate::config::Prefixes;
use crate::store::{Batch, NextIds, Node, PreAuthKey, Store, StoreError, User};

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

/// Everything durable, as one immutable value.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub users: BTreeMap<u64, Arc<User>>,
    pub nodes: BTreeMap<u64, Arc<Node>>,
    pub preauth_keys: BTreeMap<u64, Arc<PreAuthKey>>,
}

impl Snapshot {
    pub fn user_by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.users.values().find(|u| u.name == name)
    }

    /// A user named by id (all digits) or by name.
    pub fn find_user(&self, id_or_name: &str) -> Option<&Arc<User>> {
        match id_or_name.parse::<u64>() {
            Ok(id) => self.users.get(&id).or_else(|| self.user_by_name(id_or_name)),
            Err(_) => self.user_by_name(id_or_name),
        }
    }

    fn used_ips(&self) -> BTreeSet<IpAddr> {
        self.nodes.values().flat_map(|n| n.ipv4.map(IpAddr::V4).into_iter().chain(n.ipv6.map(IpAddr::V6))).collect()
    }
}

/// What a new pre-auth key should be.
#[derive(Debug, Clone)]
pub struct NewPreAuthKey {
    pub user: Option<u64>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub expiration: i64,
}

/// What a new user should be.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub profile_pic_url: String,
}

struct Writer {
    next: NextIds,
}

pub struct State {
    store: Store,
    prefixes: Prefixes,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held for the whole of a mutation: one writer at a time, in order.
    writer: Mutex<Writer>,
}

fn check_tags(tags: &[String]) -> Result<(), StateError> {
    for t in tags {
        let name = t.strip_prefix("tag:").unwrap_or("");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(StateError::Invalid(format!("tag {t:?} must look like tag:name (letters, digits, '-', '_')")));
        }
    }
    Ok(())
}

impl State {
    /// Loads everything from `store`.
    pub fn load(store: Store, prefixes: Prefixes) -> Result<State, StateError> {
        let c = store.load()?;
        let mut snap = Snapshot::default();
        for u in c.users {
            snap.users.insert(u.id, Arc::new(u));
        }
        for n in c.nodes {
            snap.nodes.insert(n.id, Arc::new(n));
        }
        for k in c.preauth_keys {
            snap.preauth_keys.insert(k.id, Arc::new(k));
        }
        // Counters never fall behind what exists, even if a record outlived a counter write.
        let mut next = c.next_ids;
        next.user = next.user.max(snap.users.keys().max().map_or(1, |m| m + 1));
        next.node = next.node.max(snap.nodes.keys().max().map_or(1, |m| m + 1));
        next.preauth_key = next.preauth_key.max(snap.preauth_keys.keys().max().map_or(1, |m| m + 1));
        next.api_key = next.api_key.max(c.api_keys.iter().map(|k| k.id + 1).max().unwrap_or(1));
        Ok(State { store, prefixes, snapshot: RwLock::new(Arc::new(snap)), writer: Mutex::new(Writer { next }) })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn flush(&self) -> Result<(), StateError> {
        Ok(self.store.flush()?)
    }

    /// Runs one mutation: `f` sees the current snapshot and the id counters,
    /// fills a batch and edits a copy of the snapshot; both land or neither.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut Snapshot, &mut NextIds, &mut Batch) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next_snap = (*self.snapshot()).clone();
        let mut next_ids = w.next;
        let mut batch = Batch::new();
        let out = f(&mut next_snap, &mut next_ids, &mut batch)?;
        if next_ids != w.next {
            batch.set_next_ids(&next_ids);
        }
        self.store.commit(&batch)?;
        w.next = next_ids;
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next_snap);
        Ok(out)
    }

    pub fn create_user(&self, new: NewUser, now: i64) -> Result<Arc<User>, StateError> {
        names::check_username(&new.name).map_err(StateError::Invalid)?;
        self.mutate(|snap, ids, batch| {
            if snap.user_by_name(&new.name).is_some() {
                return Err(StateError::Exists(format!("user {:?} already exists", new.name)));
            }
            let user = Arc::new(User {
                id: ids.user.max(1),
                name: new.name,
                display_name: new.display_name,
                email: new.email,
                profile_pic_url: new.profile_pic_url,
                provider: String::new(),
                provider_id: String::new(),
                created_at: now,
            });
            ids.user = user.id + 1;
            batch.put_user(&user);
            snap.users.insert(user.id, user.clone());
            Ok(user)
        })
    }

    pub fn rename_user(&self, id: u64, new_name: &str) -> Result<Arc<User>, StateError> {
        names::check_username(new_name).map_err(StateError::Invalid)?;
        self.mutate(|snap, _, batch| {
            let old = snap.users.get(&id).ok_or_else(|| StateError::NotFound(format!("no user with id {id}")))?;
            if let Some(other) = snap.user_by_name(new_name) {
                if other.id != id {
                    return Err(StateError::Exists(format!("user {new_name:?} already exists")));
                }
            }
            let user = Arc::new(User { name: new_name.to_string(), ..(**old).clone() });
            batch.put_user(&user);
            snap.users.insert(id, user.clone());
            Ok(user)
        })
    }

    /// Deletes a user and its pre-auth keys; refused while it still owns nodes.
    pub fn destroy_user(&self, id: u64) -> Result<Arc<User>, StateError> {
        self.mutate(|snap, _, batch| {
            let user =
                snap.users.get(&id).cloned().ok_or_else(|| StateError::NotFound(format!("no user with id {id}")))?;
            let owned = snap.nodes.values().filter(|n| n.user_id == id).count();
            if owned > 0 {
                return Err(StateError::InUse(format!(
                    "user {:?} still owns {owned} node(s); delete them first (tinyscale nodes list --user {})",
                    user.name, user.name
                )));
            }
            let keys: Vec<u64> = snap.preauth_keys.values().filter(|k| k.user_id == Some(id)).map(|k| k.id).collect();
            for k in keys {
                batch.delete_preauth_key(k);
                snap.preauth_keys.remove(&k);
            }
            batch.delete_user(id);
            snap.users.remove(&id);
            Ok(user)
        })
    }

    /// Makes a pre-auth key; returns the record and the whole key (shown once).
    pub fn create_preauth_key(&self, new: NewPreAuthKey, now: i64) -> Result<(Arc<PreAuthKey>, String), StateError> {
        check_tags(&new.tags)?;
        if new.user.is_none() && new.tags.is_empty() {
            return Err(StateError::Invalid("a pre-auth key needs a user (--user) or tags (--tags)".into()));
        }
        let key = secrets::new_key(secrets::AUTH_KEY_PREFIX)?;
        self.mutate(|snap, ids, batch| {
            if let Some(u) = new.user {
                if !snap.users.contains_key(&u) {
                    return Err(StateError::NotFound(format!("no user with id {u}")));
                }
            }
            let rec = Arc::new(PreAuthKey {
                id: ids.preauth_key.max(1),
                prefix: key.prefix,
                hash: key.hash,
                user_id: new.user,
                reusable: new.reusable,
                ephemeral: new.ephemeral,
                used: false,
                tags: new.tags,
                created_at: now,
                expiration: new.expiration,
            });
            ids.preauth_key = rec.id + 1;
            batch.put_preauth_key(&rec);
            snap.preauth_keys.insert(rec.id, rec.clone());
            Ok((rec, key.full))
        })
    }

    /// Expires a key now (it stays listed until deleted).
    pub fn expire_preauth_key(&self, id: u64, now: i64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|snap, _, batch| {
            let old = snap
                .preauth_keys
                .get(&id)
                .ok_or_else(|| StateError::NotFound(format!("no pre-auth key with id {id}")))?;
            let rec = Arc::new(PreAuthKey { expiration: old.expiration.min(now), ..(**old).clone() });
            batch.put_preauth_key(&rec);
            snap.preauth_keys.insert(id, rec.clone());
            Ok(rec)
        })
    }

    pub fn delete_preauth_key(&self, id: u64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|snap, _, batch| {
            let rec = snap
                .preauth_keys
                .remove(&id)
                .ok_or_else(|| StateError::NotFound(format!("no pre-auth key with id {id}")))?;
            batch.delete_preauth_key(id);
            Ok(rec)
        })
    }

    /// Finds a pre-auth key by its prefix or its whole text.
    pub fn find_preauth_key(&self, text: &str) -> Option<Arc<PreAuthKey>> {
        let prefix = secrets::split_key(secrets::AUTH_KEY_PREFIX, text).map(|(p, _)| p).unwrap_or(text);
        let prefix = prefix.strip_prefix(secrets::AUTH_KEY_PREFIX).unwrap_or(prefix);
        self.snapshot().preauth_keys.values().find(|k| k.prefix == prefix).cloned()
    }

    pub fn rename_node(&self, id: u64, new_name: &str) -> Result<Arc<Node>, StateError> {
        names::check_given_name(new_name).map_err(StateError::Invalid)?;
        self.mutate(|snap, _, batch| {
            let old = snap.nodes.get(&id).ok_or_else(|| StateError::NotFound(format!("no node with id {id}")))?;
            if snap.nodes.values().any(|n| n.id != id && n.given_name == new_name) {
                return Err(StateError::Exists(format!("another node is already named {new_name:?}")));
            }
            let node = Arc::new(Node { given_name: new_name.to_string(), ..(**old).clone() });
            batch.put_node(&node);
            snap.nodes.insert(id, node.clone());
            Ok(node)
        })
    }

    /// Sets a node's expiry (now, unless `at` says otherwise).
    pub fn expire_node(&self, id: u64, at: i64) -> Result<Arc<Node>, StateError> {
        self.mutate(|snap, _, batch| {
            let old = snap.nodes.get(&id).ok_or_else(|| StateError::NotFound(format!("no node with id {id}")))?;
            let node = Arc::new(Node { expiry: Some(at), ..(**old).clone() });
            batch.put_node(&node);
            snap.nodes.insert(id, node.clone());
            Ok(node)
        })
    }

    pub fn delete_node(&self, id: u64) -> Result<Arc<Node>, StateError> {
        self.mutate(|snap, _, batch| {
            let node = snap.nodes.remove(&id).ok_or_else(|| StateError::NotFound(format!("no node with id {id}")))?;
            batch.delete_node(id);
            Ok(node)
        })
    }

    /// Adds a node directly, without a client: `tinyscale debug create-node`,
    /// for trying the node verbs and for tests. Addresses are allocated as for
    /// a real registration.
    pub fn create_node(&self, user_id: u64, hostname: &str, node_key: &str, now: i64) -> Result<Arc<Node>, StateError> {
        let hex = node_key.strip_prefix("nodekey:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::Invalid(format!("{node_key:?} is not a node key (nodekey: and 64 hex digits)")));
        }
        let node_key = node_key.to_ascii_lowercase();
        let prefixes = self.prefixes.clone();
        self.mutate(|snap, ids, batch| {
            if !snap.users.contains_key(&user_id) {
                return Err(StateError::NotFound(format!("no user with id {user_id}")));
            }
            if snap.nodes.values().any(|n| n.node_key == node_key) {
                return Err(StateError::Exists(format!("a node with key {node_key} already exists")));
            }
            let used = snap.used_ips();
            let mut random = || {
                let mut b = [0u8; 16];
                // Falls back to sequential-like behaviour if the RNG fails; allocation stays correct.
                let _ = secrets::random_bytes(&mut b);
                u128::from_le_bytes(b)
            };
            let mut alloc = |p: &Option<crate::tailcfg::Prefix>| -> Result<Option<IpAddr>, StateError> {
                p.as_ref()
                    .map(|p| ipalloc::allocate(p, prefixes.allocation, &used, &mut random))
                    .transpose()
                    .map_err(|e| StateError::PoolFull(e.to_string()))
            };
            let v4 = alloc(&prefixes.v4)?;
            let v6 = alloc(&prefixes.v6)?;
            let base = names::dns_label(hostname);
            let given = names::unique(&base, |n| snap.nodes.values().any(|o| o.given_name == n));
            let node = Arc::new(Node {
                id: ids.node.max(1),
                machine_key: format!("mkey:{}", "0".repeat(64)),
                node_key,
                user_id,
                hostname: hostname.to_string(),
                given_name: given,
                ipv4: v4.and_then(|ip| match ip {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                }),
                ipv6: v6.and_then(|ip| match ip {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => None,
                }),
                created_at: now,
                expiry: None,
                last_seen: None,
                register_method: "cli".into(),
                auth_key_id: None,
                tags: Vec::new(),
                ephemeral: false,
            });
            ids.node = node.id + 1;
            batch.put_node(&node);
            snap.nodes.insert(node.id, node.clone());
            Ok(node)
        })
    }
}

/// Whether a timestamp has passed. A clock still in 1970 (a router before NTP)
/// expires nothing.
pub fn has_passed(at: i64, now: i64) -> bool {
    clock::clock_is_sane(now) && now >= at
}

#[cfg(test)]
mod tests;
