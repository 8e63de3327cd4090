//! Schema versions and the append-only list of steps between them.
//!
//! Each step takes the store from version `n - 1` to `n` in one transaction
//! that also records `n`, so a crash mid-migration leaves the older version
//! intact. Steps are never edited once released; new ones are appended.
//!
//! - 1: users, nodes, pre-auth keys, API keys, pending registrations, policy
//!   and id counters, one table prefix each.
//! - 2: an address index (address → node id) that makes the store itself
//!   refuse a second node with an address already given.

use std::net::IpAddr;

use super::layout::*;
use super::{decode, io_err, node_ips, Node, StoreError};

pub const CURRENT_SCHEMA: u32 = 2;

/// Key/value pairs a step writes.
type Writes = Vec<(Vec<u8>, Vec<u8>)>;
type Step = fn(&sled::Db) -> Result<Writes, String>;

/// STEPS[i] migrates from version i to i + 1; each returns the entries to write.
const STEPS: [Step; CURRENT_SCHEMA as usize] = [initial_layout, address_index];

fn initial_layout(_: &sled::Db) -> Result<Writes, String> {
    Ok(Vec::new())
}

fn address_index(db: &sled::Db) -> Result<Writes, String> {
    let mut owners: std::collections::BTreeMap<IpAddr, u64> = Default::default();
    let mut out = Vec::new();
    for kv in db.scan_prefix([NODES]) {
        let (_, v) = kv.map_err(|e| e.to_string())?;
        let node: Node = decode("node", &v).map_err(|e| e.to_string())?;
        for ip in node_ips(&node) {
            if let Some(other) = owners.insert(ip, node.id) {
                return Err(format!(
                    "nodes {other} and {} share the address {ip}; delete one of them with an older tinyscale first",
                    node.id
                ));
            }
            out.push((ip_key(ip), node.id.to_be_bytes().to_vec()));
        }
    }
    Ok(out)
}

pub fn version(db: &sled::Db) -> Result<u32, StoreError> {
    match db.get(SCHEMA_VERSION_KEY).map_err(io_err)? {
        Some(v) if v.len() == 4 => Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        Some(_) => Err(StoreError::Corrupt { what: "schema version".into(), reason: "not 4 bytes".into() }),
        None if db.is_empty() => Ok(0),
        None => Err(StoreError::Corrupt {
            what: "store".into(),
            reason: "it has data but no schema version; it was not written by tinyscale".into(),
        }),
    }
}

/// Brings the store to [`CURRENT_SCHEMA`], one step at a time.
pub fn run(db: &sled::Db) -> Result<(), StoreError> {
    let mut v = version(db)?;
    let fresh = v == 0;
    if v > CURRENT_SCHEMA {
        return Err(StoreError::SchemaTooNew { found: v, supported: CURRENT_SCHEMA });
    }
    while v < CURRENT_SCHEMA {
        let to = v + 1;
        let writes = STEPS[v as usize](db).map_err(|reason| StoreError::Migration { to, reason })?;
        let mut batch = sled::Batch::default();
        for (k, val) in writes {
            batch.insert(k, val);
        }
        batch.insert(SCHEMA_VERSION_KEY, &to.to_be_bytes());
        db.apply_batch(batch).map_err(io_err)?;
        db.flush().map_err(io_err)?;
        if !fresh {
            log::info!("store migrated to schema {to}");
        }
        v = to;
    }
    Ok(())
}
