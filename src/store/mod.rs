//! Durable state on flash: a narrow interface over sled.
//!
//! Nothing outside this module knows the store is sled. The state layer hands
//! over a [`Batch`] of typed changes; [`Store::commit`] applies it atomically and
//! flushes before returning, so a change the CLI or a client was told about
//! survives kill -9. Tuned for routers (docs/embedded.md §9): a 1 MiB cache, no
//! background flusher, and nothing volatile (endpoints, online state) ever written.

mod layout;
mod migrations;
pub mod records;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::RwLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use layout::*;
pub use migrations::CURRENT_SCHEMA;
pub use records::{ApiKey, NextIds, Node, Pending, PreAuthKey, User};

#[derive(Debug)]
pub enum StoreError {
    /// Another process (a running tinyscale) holds the store.
    Locked {
        path: PathBuf,
    },
    Open {
        path: PathBuf,
        reason: String,
    },
    /// Written by a newer tinyscale; refusing protects its data.
    SchemaTooNew {
        found: u32,
        supported: u32,
    },
    Migration {
        to: u32,
        reason: String,
    },
    Corrupt {
        what: String,
        reason: String,
    },
    /// Two nodes claimed one address; the change was refused whole.
    AddressTaken {
        ip: IpAddr,
        owner: u64,
    },
    /// The flash is full; the change is not acknowledged.
    Full(String),
    /// A write or flush failed; the change is not acknowledged.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { path } => write!(
                f,
                "the store at {} is in use by another process (is tinyscale already running?)",
                path.display()
            ),
            StoreError::Open { path, reason } => write!(f, "cannot open the store at {}: {reason}", path.display()),
            StoreError::SchemaTooNew { found, supported } => write!(
                f,
                "the store has schema version {found}, newer than this tinyscale understands ({supported}); upgrade tinyscale"
            ),
            StoreError::Migration { to, reason } => write!(f, "migrating the store to schema {to} failed: {reason}"),
            StoreError::Corrupt { what, reason } => write!(f, "the store holds an unreadable {what}: {reason}"),
            StoreError::AddressTaken { ip, owner } => write!(f, "address {ip} already belongs to node {owner}"),
            StoreError::Full(e) => write!(f, "the flash is full, nothing was written ({e}); free some space"),
            StoreError::Io(e) => write!(f, "writing the store failed: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Whether sled failed for lack of space (it re-wraps OS errors, keeping the kind).
fn is_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

/// sled reports another holder of its file lock only in its message.
fn is_locked(e: &sled::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

fn io_err(e: sled::Error) -> StoreError {
    if is_full(&e) {
        StoreError::Full("no space left on device".into())
    } else {
        StoreError::Io(e.to_string())
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs with string keys: serializing them cannot fail.
    serde_json::to_vec(v).expect("store records always serialize")
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    PutNode { id: u64, value: Vec<u8>, ips: Vec<IpAddr> },
    DeleteNode { id: u64 },
}

/// A set of changes that lands whole or not at all.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

fn node_ips(n: &Node) -> Vec<IpAddr> {
    n.ipv4.map(IpAddr::V4).into_iter().chain(n.ipv6.map(IpAddr::V6)).collect()
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn put_user(&mut self, u: &User) {
        self.ops.push(Op::Put { key: id_key(USERS, u.id).to_vec(), value: encode(u) });
    }
    pub fn delete_user(&mut self, id: u64) {
        self.ops.push(Op::Delete { key: id_key(USERS, id).to_vec() });
    }
    pub fn put_node(&mut self, n: &Node) {
        self.ops.push(Op::PutNode { id: n.id, value: encode(n), ips: node_ips(n) });
    }
    pub fn delete_node(&mut self, id: u64) {
        self.ops.push(Op::DeleteNode { id });
    }
    pub fn put_preauth_key(&mut self, k: &PreAuthKey) {
        self.ops.push(Op::Put { key: id_key(PREAUTH_KEYS, k.id).to_vec(), value: encode(k) });
    }
    pub fn delete_preauth_key(&mut self, id: u64) {
        self.ops.push(Op::Delete { key: id_key(PREAUTH_KEYS, id).to_vec() });
    }
    pub fn put_api_key(&mut self, k: &ApiKey) {
        self.ops.push(Op::Put { key: id_key(API_KEYS, k.id).to_vec(), value: encode(k) });
    }
    pub fn delete_api_key(&mut self, id: u64) {
        self.ops.push(Op::Delete { key: id_key(API_KEYS, id).to_vec() });
    }
    pub fn put_pending(&mut self, p: &Pending) {
        self.ops.push(Op::Put { key: str_key(PENDING, &p.id), value: encode(p) });
    }
    pub fn delete_pending(&mut self, id: &str) {
        self.ops.push(Op::Delete { key: str_key(PENDING, id) });
    }
    pub fn set_policy(&mut self, text: &str) {
        self.ops.push(Op::Put { key: POLICY_KEY.to_vec(), value: text.as_bytes().to_vec() });
    }
    pub fn set_next_ids(&mut self, ids: &NextIds) {
        self.ops.push(Op::Put { key: NEXT_IDS_KEY.to_vec(), value: encode(ids) });
    }
}

/// Everything the store holds, as read at start-up.
#[derive(Debug, Default, Clone)]
pub struct Contents {
    pub users: Vec<User>,
    pub nodes: Vec<Node>,
    pub preauth_keys: Vec<PreAuthKey>,
    pub api_keys: Vec<ApiKey>,
    pub pending: Vec<Pending>,
    pub policy: Option<String>,
    pub next_ids: NextIds,
}

pub struct Store {
    /// `None` only for the moment of a reopen: sled's file lock must be
    /// released before the store can be opened again.
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
    cache_capacity: u64,
    /// A write or flush failed. sled then keeps failing every later write,
    /// even once there is room again, until the store is reopened.
    broken: AtomicBool,
    /// Non-empty commits since it was opened (wrapping): what tests count flash writes by.
    commits: AtomicU32,
}

/// How long `Store::open` waits for the file lock of a store this process just closed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled releases its file lock when the last reference to its files goes, and a write it
/// handed to its I/O thread pool keeps one a moment after the `Db` is dropped (seen when a
/// store is reopened in the same process under qemu). Another process holding the lock
/// keeps it for longer than this wait and is still reported as `Locked`.
fn open_waiting_for_lock(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(e) if is_locked(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity)
        // No background flusher: every acknowledged change is flushed by commit().
        .flush_every_ms(None);
    open_waiting_for_lock(&config).map_err(|e| {
        let reason = e.to_string();
        if is_locked(&e) {
            StoreError::Locked { path: path.to_path_buf() }
        } else if is_full(&e) {
            // sled writes on open; nothing acknowledged is lost, it just needs room.
            let reason = format!("{reason}; the flash is full: free some space and start again");
            StoreError::Open { path: path.to_path_buf(), reason }
        } else {
            StoreError::Open { path: path.to_path_buf(), reason }
        }
    })
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)
                .map_err(|e| StoreError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
        }
        let db = open_db(path, cache_capacity)?;
        migrations::run(&db)?;
        Ok(Store {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cache_capacity,
            broken: AtomicBool::new(false),
            commits: AtomicU32::new(0),
        })
    }

    /// The open database. A clone is cheap (sled's handle is reference-counted)
    /// and is dropped right after use, so that a reopen can take the file lock.
    fn db(&self) -> Result<sled::Db, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Io("the store is being reopened".into()))
    }

    /// Whether a write failed since the store was (re)opened: the caller must
    /// [`Store::reopen`] it, and re-read what it holds, before writing again.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Closes and opens the store again after a failed write (a full flash).
    /// What the failed batch left on flash is whatever sled's recovery makes
    /// of it, all of it or none: the caller re-reads the contents to know.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The old handle, and the error sled keeps in it, goes first: sled holds
        // its file lock until the last reference is dropped.
        drop(slot.take());
        let db = open_db(&self.path, self.cache_capacity)?;
        *slot = Some(db);
        self.broken.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrations::version(&self.db()?)
    }

    fn scan<T: DeserializeOwned>(&self, table: u8, what: &str) -> Result<Vec<T>, StoreError> {
        self.db()?
            .scan_prefix([table])
            .map(|kv| {
                let (_, v) = kv.map_err(io_err)?;
                decode(what, &v)
            })
            .collect()
    }

    pub fn load(&self) -> Result<Contents, StoreError> {
        let db = self.db()?;
        let policy = db
            .get(POLICY_KEY)
            .map_err(io_err)?
            .map(|v| {
                String::from_utf8(v.to_vec())
                    .map_err(|e| StoreError::Corrupt { what: "policy".into(), reason: e.to_string() })
            })
            .transpose()?;
        let next_ids = match db.get(NEXT_IDS_KEY).map_err(io_err)? {
            Some(v) => decode("id counter", &v)?,
            None => NextIds::default(),
        };
        Ok(Contents {
            users: self.scan(USERS, "user")?,
            nodes: self.scan(NODES, "node")?,
            preauth_keys: self.scan(PREAUTH_KEYS, "pre-auth key")?,
            api_keys: self.scan(API_KEYS, "API key")?,
            pending: self.scan(PENDING, "pending registration")?,
            policy,
            next_ids,
        })
    }

    /// Applies `batch` atomically and flushes it to flash before returning.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError as Abort, TransactionError};
        if batch.is_empty() {
            return Ok(());
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let db = self.db()?;
        let result = db.transaction(|tx| {
            for op in &batch.ops {
                match op {
                    Op::Put { key, value } => {
                        tx.insert(key.as_slice(), value.as_slice())?;
                    }
                    Op::Delete { key } => {
                        tx.remove(key.as_slice())?;
                    }
                    Op::DeleteNode { id } => {
                        if let Some(old) = tx.remove(&id_key(NODES, *id))? {
                            release_ips(tx, *id, &old)?;
                        }
                    }
                    Op::PutNode { id, value, ips } => {
                        if let Some(old) = tx.insert(&id_key(NODES, *id), value.as_slice())? {
                            release_ips(tx, *id, &old)?;
                        }
                        for ip in ips {
                            let k = ip_key(*ip);
                            if let Some(owner) = tx.get(&k)? {
                                let owner = u64_of(&owner);
                                if owner != *id {
                                    return Err(Abort::Abort(StoreError::AddressTaken { ip: *ip, owner }));
                                }
                            }
                            tx.insert(k, &id.to_be_bytes())?;
                        }
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(self.failed(e)),
        }
        db.flush().map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// A storage error: sled is poisoned from now on, so the store must be reopened.
    fn failed(&self, e: sled::Error) -> StoreError {
        self.broken.store(true, Ordering::SeqCst);
        io_err(e)
    }

    /// How many non-empty commits (flash writes) were asked of this store.
    pub fn commits(&self) -> u32 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Flushes anything outstanding (at shutdown; commits flush already).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db()?.flush().map(|_| ()).map_err(|e| self.failed(e))
    }
}

fn u64_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// Drops the address index entries a node's previous record held.
fn release_ips(
    tx: &sled::transaction::TransactionalTree,
    id: u64,
    old: &[u8],
) -> Result<(), sled::transaction::ConflictableTransactionError<StoreError>> {
    // An old record that does not decode holds no addresses we can name.
    let Ok(old) = serde_json::from_slice::<Node>(old) else { return Ok(()) };
    for ip in node_ips(&old) {
        let k = ip_key(ip);
        if tx.get(&k)?.is_some_and(|o| u64_of(&o) == id) {
            tx.remove(k)?;
        }
    }
    Ok(())
}

fn create_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if p.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

#[cfg(test)]
mod tests;
