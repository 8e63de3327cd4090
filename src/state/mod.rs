//! The in-memory picture of the tailnet and the one place it changes.
//!
//! Readers take an `Arc<Snapshot>` and never block writers. A mutation
//! validates against the current snapshot, writes a [`Batch`] to the store
//! (flushed), and only then swaps in the next snapshot: what a caller is told
//! succeeded is on flash. Mutations do blocking I/O; async callers run them in
//! `spawn_blocking`. Time comes in as a parameter, so the rules are testable.

pub mod events;
pub mod expiry;
pub mod ipalloc;
pub mod names;
pub mod presence;
pub mod register;
/// The randomness and key helpers moved to the leaf [`crate::secrets`]; this
/// path stays for callers not yet moved (`oidc::flow`, `control`'s
/// handshake, the pending-login code), which another change moves.
pub use crate::secrets;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::Span;
use crate::config::Prefixes;
use crate::store::{Batch, NextIds, Node, PreAuthKey, Store, StoreError, User};
use crate::tailcfg::{MachinePublic, NodePublic};
use events::{Change, Hub};
use presence::Presence;

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
    by_node_key: HashMap<NodePublic, u64>,
    by_machine_key: HashMap<MachinePublic, u64>,
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

    /// The node registered with this node key.
    pub fn node_by_key(&self, node_key: &NodePublic) -> Option<&Arc<Node>> {
        self.by_node_key.get(node_key).and_then(|id| self.nodes.get(id))
    }

    /// The node of the device with this machine key.
    pub fn node_by_machine(&self, machine_key: &MachinePublic) -> Option<&Arc<Node>> {
        self.by_machine_key.get(machine_key).and_then(|id| self.nodes.get(id))
    }

    fn used_ips(&self) -> BTreeSet<IpAddr> {
        self.nodes.values().flat_map(|n| n.ipv4.map(IpAddr::V4).into_iter().chain(n.ipv6.map(IpAddr::V6))).collect()
    }

    fn index(&mut self, n: &Node) {
        self.by_node_key.insert(n.node_key, n.id);
        // Nodes added by `debug create-node` have no machine.
        if let Some(m) = n.machine_key {
            self.by_machine_key.insert(m, n.id);
        }
    }

    fn unindex(&mut self, n: &Node) {
        if self.by_node_key.get(&n.node_key) == Some(&n.id) {
            self.by_node_key.remove(&n.node_key);
        }
        if let Some(m) = n.machine_key.filter(|m| self.by_machine_key.get(m) == Some(&n.id)) {
            self.by_machine_key.remove(&m);
        }
    }
}

/// One mutation in progress: the next snapshot, the id counters, the store
/// batch and the change events, kept in step by its methods.
pub struct Tx<'a> {
    pub snap: &'a mut Snapshot,
    ids: &'a mut NextIds,
    batch: &'a mut Batch,
    changes: &'a mut Vec<Change>,
}

impl Tx<'_> {
    pub fn put_user(&mut self, u: Arc<User>) {
        self.batch.put_user(&u);
        // Nodes carry their owner's profile: peers must hear of the change.
        let owned: Vec<u64> = self.snap.nodes.values().filter(|n| n.user_id == u.id).map(|n| n.id).collect();
        self.changes.extend(owned.into_iter().map(Change::NodeChanged));
        self.snap.users.insert(u.id, u);
    }

    pub fn remove_user(&mut self, id: u64) {
        self.batch.delete_user(id);
        self.snap.users.remove(&id);
    }

    pub fn put_node(&mut self, n: Arc<Node>) {
        self.batch.put_node(&n);
        if let Some(old) = self.snap.nodes.get(&n.id).cloned() {
            self.snap.unindex(&old);
        }
        self.snap.index(&n);
        self.changes.push(Change::NodeChanged(n.id));
        self.snap.nodes.insert(n.id, n);
    }

    pub fn remove_node(&mut self, id: u64) -> Option<Arc<Node>> {
        let n = self.snap.nodes.remove(&id)?;
        self.snap.unindex(&n);
        self.batch.delete_node(id);
        self.changes.push(Change::NodeRemoved(id));
        Some(n)
    }

    pub fn put_key(&mut self, k: Arc<PreAuthKey>) {
        self.batch.put_preauth_key(&k);
        self.snap.preauth_keys.insert(k.id, k);
    }

    pub fn remove_key(&mut self, id: u64) -> Option<Arc<PreAuthKey>> {
        let k = self.snap.preauth_keys.remove(&id)?;
        self.batch.delete_preauth_key(id);
        Some(k)
    }

    fn next_user_id(&mut self) -> u64 {
        let id = self.ids.user.max(1);
        self.ids.user = id + 1;
        id
    }

    fn next_node_id(&mut self) -> u64 {
        let id = self.ids.node.max(1);
        self.ids.node = id + 1;
        id
    }

    fn next_key_id(&mut self) -> u64 {
        let id = self.ids.preauth_key.max(1);
        self.ids.preauth_key = id + 1;
        id
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
}

impl Settings {
    pub fn new(prefixes: Prefixes) -> Self {
        Settings { prefixes, node_expiry: Span(0), max_nodes: 10_000, random: secrets::random_bytes }
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

/// A person as an identity provider vouched for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// `<issuer without trailing slash>/<sub>`: the one stable key.
    pub provider_id: String,
    pub username: String,
    pub display_name: String,
    /// Empty unless verified or `oidc.email_verified_required` is off.
    pub email: String,
    /// Whether the provider vouched for `email`. Only a verified email links
    /// a login to a user made with the CLI; an unverified one is merely
    /// stored on the login's own user.
    pub email_verified: bool,
    pub picture: String,
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
    settings: Settings,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held for the whole of a mutation: one writer at a time, in order.
    writer: Mutex<Writer>,
    pub hub: Arc<Hub>,
    presence: RwLock<HashMap<u64, Presence>>,
    pending: Mutex<register::PendingRegs>,
    expiry: expiry::Deferred,
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

fn not_found(what: &str, id: u64) -> StateError {
    StateError::NotFound(format!("no {what} with id {id}"))
}

impl State {
    /// Loads everything from `store`.
    pub fn load(store: Store, settings: Settings) -> Result<State, StateError> {
        let c = store.load()?;
        let mut snap = Snapshot::default();
        for u in c.users {
            snap.users.insert(u.id, Arc::new(u));
        }
        let expiry = expiry::Deferred::default();
        if c.nodes.iter().any(|n| n.expiry_deferred.is_some()) {
            expiry.note_deferred();
        }
        for n in c.nodes {
            snap.index(&n);
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
        Ok(State {
            store,
            settings,
            snapshot: RwLock::new(Arc::new(snap)),
            writer: Mutex::new(Writer { next }),
            hub: Arc::new(Hub::default()),
            presence: RwLock::new(HashMap::new()),
            pending: Mutex::new(register::PendingRegs::default()),
            expiry,
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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
        let mut next_snap = (*self.snapshot()).clone();
        let mut next_ids = w.next;
        let mut batch = Batch::new();
        let mut changes = Vec::new();
        let out = f(&mut Tx { snap: &mut next_snap, ids: &mut next_ids, batch: &mut batch, changes: &mut changes })?;
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

    pub fn create_user(&self, new: NewUser, now: i64) -> Result<Arc<User>, StateError> {
        names::check_username(&new.name).map_err(StateError::Invalid)?;
        self.mutate(|tx| {
            if tx.snap.user_by_name(&new.name).is_some() {
                return Err(StateError::Exists(format!("user {:?} already exists", new.name)));
            }
            let user = Arc::new(User {
                id: tx.next_user_id(),
                name: new.name,
                display_name: new.display_name,
                email: new.email,
                profile_pic_url: new.profile_pic_url,
                provider: String::new(),
                provider_id: String::new(),
                created_at: now,
            });
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    /// The user of an identity-provider login. Identities are matched by
    /// issuer + subject only, so two different logins are never one user.
    /// A user made with the CLI is taken over only when it was given the same
    /// email the provider verified: whoever can set an unverified email at
    /// the provider could otherwise claim anyone's account. A mere name
    /// clash makes a new user with a suffixed name (`alice-1`) instead.
    pub fn login_user(&self, id: &ExternalIdentity, now: i64) -> Result<Arc<User>, StateError> {
        self.mutate(|tx| {
            let existing =
                tx.snap.users.values().find(|u| u.provider == "oidc" && u.provider_id == id.provider_id).cloned();
            let claimable = || {
                tx.snap
                    .users
                    .values()
                    .find(|u| {
                        u.provider.is_empty()
                            && id.email_verified
                            && !id.email.is_empty()
                            && u.email.eq_ignore_ascii_case(&id.email)
                    })
                    .cloned()
            };
            let user = match existing.or_else(claimable) {
                Some(u) => {
                    let updated = User {
                        provider: "oidc".into(),
                        provider_id: id.provider_id.clone(),
                        display_name: if id.display_name.is_empty() {
                            u.display_name.clone()
                        } else {
                            id.display_name.clone()
                        },
                        email: if id.email.is_empty() { u.email.clone() } else { id.email.clone() },
                        profile_pic_url: if id.picture.is_empty() {
                            u.profile_pic_url.clone()
                        } else {
                            id.picture.clone()
                        },
                        ..(*u).clone()
                    };
                    if updated == *u {
                        return Ok(u);
                    }
                    Arc::new(updated)
                }
                None => {
                    let name = names::unique(&id.username, |n| tx.snap.user_by_name(n).is_some());
                    Arc::new(User {
                        id: tx.next_user_id(),
                        name,
                        display_name: id.display_name.clone(),
                        email: id.email.clone(),
                        profile_pic_url: id.picture.clone(),
                        provider: "oidc".into(),
                        provider_id: id.provider_id.clone(),
                        created_at: now,
                    })
                }
            };
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    pub fn rename_user(&self, id: u64, new_name: &str) -> Result<Arc<User>, StateError> {
        names::check_username(new_name).map_err(StateError::Invalid)?;
        self.mutate(|tx| {
            let old = tx.snap.users.get(&id).cloned().ok_or_else(|| not_found("user", id))?;
            if let Some(other) = tx.snap.user_by_name(new_name) {
                if other.id != id {
                    return Err(StateError::Exists(format!("user {new_name:?} already exists")));
                }
            }
            let user = Arc::new(User { name: new_name.to_string(), ..(*old).clone() });
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    /// Deletes a user and its pre-auth keys; refused while it still owns nodes.
    pub fn destroy_user(&self, id: u64) -> Result<Arc<User>, StateError> {
        self.mutate(|tx| {
            let user = tx.snap.users.get(&id).cloned().ok_or_else(|| not_found("user", id))?;
            let owned = tx.snap.nodes.values().filter(|n| n.user_id == id).count();
            if owned > 0 {
                return Err(StateError::InUse(format!(
                    "user {:?} still owns {owned} node(s); delete them first (tinyscale nodes list --user {})",
                    user.name, user.name
                )));
            }
            let keys: Vec<u64> =
                tx.snap.preauth_keys.values().filter(|k| k.user_id == Some(id)).map(|k| k.id).collect();
            for k in keys {
                tx.remove_key(k);
            }
            tx.remove_user(id);
            Ok(user)
        })
    }

    /// Makes a pre-auth key; returns the record and the whole key (shown once).
    pub fn create_preauth_key(&self, new: NewPreAuthKey, now: i64) -> Result<(Arc<PreAuthKey>, String), StateError> {
        check_tags(&new.tags)?;
        if new.user.is_none() && new.tags.is_empty() {
            return Err(StateError::Invalid("a pre-auth key needs a user (--user) or tags (--tags)".into()));
        }
        let key = secrets::new_key_from(secrets::AUTH_KEY_PREFIX, self.settings.random)?;
        self.mutate(|tx| {
            if let Some(u) = new.user {
                if !tx.snap.users.contains_key(&u) {
                    return Err(not_found("user", u));
                }
            }
            let rec = Arc::new(PreAuthKey {
                id: tx.next_key_id(),
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
            tx.put_key(rec.clone());
            Ok((rec, key.full))
        })
    }

    /// Expires a key now, on any clock (it stays listed until deleted).
    pub fn expire_preauth_key(&self, id: u64, now: i64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|tx| {
            let old = tx.snap.preauth_keys.get(&id).cloned().ok_or_else(|| not_found("pre-auth key", id))?;
            let rec =
                Arc::new(PreAuthKey { expiration: old.expiration.min(expiry::expired_now(now)), ..(*old).clone() });
            tx.put_key(rec.clone());
            Ok(rec)
        })
    }

    pub fn delete_preauth_key(&self, id: u64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|tx| tx.remove_key(id).ok_or_else(|| not_found("pre-auth key", id)))
    }

    /// Finds a pre-auth key by its prefix or its whole text.
    pub fn find_preauth_key(&self, text: &str) -> Option<Arc<PreAuthKey>> {
        let prefix = secrets::split_key(secrets::AUTH_KEY_PREFIX, text).map(|(p, _)| p).unwrap_or(text);
        let prefix = prefix.strip_prefix(secrets::AUTH_KEY_PREFIX).unwrap_or(prefix);
        self.snapshot().preauth_keys.values().find(|k| k.prefix == prefix).cloned()
    }

    pub fn rename_node(&self, id: u64, new_name: &str) -> Result<Arc<Node>, StateError> {
        names::check_given_name(new_name).map_err(StateError::Invalid)?;
        self.mutate(|tx| {
            let old = tx.snap.nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            if tx.snap.nodes.values().any(|n| n.id != id && n.given_name == new_name) {
                return Err(StateError::Exists(format!("another node is already named {new_name:?}")));
            }
            let node = Arc::new(Node { given_name: new_name.to_string(), ..(*old).clone() });
            tx.put_node(node.clone());
            Ok(node)
        })
    }

    /// Sets a node's expiry: `at`, or now (on any clock) when `None`.
    pub fn expire_node(&self, id: u64, at: Option<i64>, now: i64) -> Result<Arc<Node>, StateError> {
        let at = at.unwrap_or_else(|| expiry::expired_now(now));
        self.mutate(|tx| {
            let old = tx.snap.nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            let node = Arc::new(Node { expiry: Some(at), expiry_deferred: None, ..(*old).clone() });
            tx.put_node(node.clone());
            Ok(node)
        })
    }

    pub fn delete_node(&self, id: u64) -> Result<Arc<Node>, StateError> {
        let node = self.mutate(|tx| tx.remove_node(id).ok_or_else(|| not_found("node", id)))?;
        self.forget_presence(id);
        Ok(node)
    }

    fn forget_presence(&self, id: u64) {
        self.presence.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Adds a node directly, without a client: `tinyscale debug create-node`,
    /// for trying the node verbs and for tests. Addresses are allocated as for
    /// a real registration.
    pub fn create_node(&self, user_id: u64, hostname: &str, node_key: &str, now: i64) -> Result<Arc<Node>, StateError> {
        let key =
            crate::tailcfg::NodePublic::parse(&node_key.to_ascii_lowercase()).filter(|k| !k.is_zero()).ok_or_else(
                || StateError::Invalid(format!("{node_key:?} is not a node key (nodekey: and 64 hex digits)")),
            )?;
        self.mutate(|tx| {
            if !tx.snap.users.contains_key(&user_id) {
                return Err(not_found("user", user_id));
            }
            if tx.snap.node_by_key(&key).is_some() {
                return Err(StateError::Exists(format!("a node with key {key} already exists")));
            }
            let spec = register::NodeSpec {
                machine_key: None,
                node_key: key,
                user_id,
                hostname: hostname.to_string(),
                register_method: "cli",
                auth_key_id: None,
                tags: Vec::new(),
                ephemeral: false,
                expiry: expiry::Planned::Never,
            };
            self.new_node(tx, spec, now)
        })
    }

    /// Creates a node in `tx`: a fresh id, addresses from the pools and a
    /// unique DNS name derived from the hostname.
    fn new_node(&self, tx: &mut Tx, spec: register::NodeSpec, now: i64) -> Result<Arc<Node>, StateError> {
        if tx.snap.nodes.len() >= self.settings.max_nodes {
            return Err(StateError::PoolFull(format!(
                "the tailnet already has {} nodes, its limit (tuning.max_nodes)",
                self.settings.max_nodes
            )));
        }
        let used = tx.snap.used_ips();
        let prefixes = &self.settings.prefixes;
        let mut random = || {
            let mut b = [0u8; 16];
            // If the RNG fails the start point is 0: allocation stays correct, only less random.
            let _ = (self.settings.random)(&mut b);
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
        let base = names::dns_label(&spec.hostname);
        let given = names::unique(&base, |n| tx.snap.nodes.values().any(|o| o.given_name == n));
        let node = Arc::new(Node {
            id: tx.next_node_id(),
            machine_key: spec.machine_key,
            node_key: spec.node_key,
            user_id: spec.user_id,
            hostname: spec.hostname,
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
            expiry: spec.expiry.at(),
            expiry_deferred: spec.expiry.deferred(),
            last_seen: None,
            register_method: spec.register_method.into(),
            auth_key_id: spec.auth_key_id,
            tags: spec.tags,
            ephemeral: spec.ephemeral,
        });
        if node.expiry_deferred.is_some() {
            self.expiry.note_deferred();
        }
        tx.put_node(node.clone());
        Ok(node)
    }

    /// Runs `f` over the volatile state of every node.
    pub fn with_presence<R>(&self, f: impl FnOnce(&HashMap<u64, Presence>) -> R) -> R {
        f(&self.presence.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records what a map request reported and tells peers what changed.
    pub fn report(
        &self,
        id: u64,
        disco: crate::tailcfg::DiscoPublic,
        endpoints: Option<Vec<String>>,
        hostinfo: Option<Box<serde_json::value::RawValue>>,
        cap: u32,
    ) -> presence::Update {
        let u = {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            presence::apply(map.entry(id).or_default(), disco, endpoints, hostinfo, cap)
        };
        if u.hostinfo {
            self.hub.publish(Change::NodeChanged(id));
        } else if u.endpoints {
            self.hub.publish(Change::Endpoints(id));
        }
        u
    }

    /// A map stream opened; the first one makes the node online.
    pub fn stream_opened(&self, id: u64) {
        let first = {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            let p = map.entry(id).or_default();
            p.streams += 1;
            p.idle_since = None;
            p.streams == 1
        };
        if first {
            self.hub.publish(Change::Online(id, true));
        }
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
                let Some(n) = tx.snap.nodes.get(&id).cloned() else { continue };
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

    /// After the grace period: announce the node offline if it did not come back.
    pub fn announce_if_offline(&self, id: u64) -> bool {
        let offline = self.with_presence(|m| m.get(&id).is_some_and(|p| !p.online()));
        if offline {
            self.hub.publish(Change::Online(id, false));
        }
        offline
    }

    pub fn is_online(&self, id: u64) -> bool {
        self.with_presence(|m| m.get(&id).is_some_and(Presence::online))
    }

    /// Writes last-seen times that moved on by more than `min_step` seconds:
    /// called every few minutes and at shutdown, never per keep-alive.
    pub fn persist_last_seen(&self, now: i64, min_step: i64) -> Result<usize, StateError> {
        let seen: Vec<(u64, i64)> = self.with_presence(|m| {
            m.iter()
                .filter_map(|(id, p)| if p.online() { Some((*id, now)) } else { p.last_seen.map(|t| (*id, t)) })
                .collect()
        });
        if seen.is_empty() {
            return Ok(0);
        }
        self.mutate(|tx| {
            let mut n = 0;
            for (id, t) in &seen {
                let Some(old) = tx.snap.nodes.get(id).cloned() else { continue };
                if old.last_seen.is_some_and(|old| t - old < min_step) {
                    continue;
                }
                let node = Arc::new(Node { last_seen: Some(*t), ..(*old).clone() });
                // Last-seen is not news for peers: write it without an event.
                tx.batch.put_node(&node);
                tx.snap.nodes.insert(*id, node);
                n += 1;
            }
            Ok(n)
        })
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
