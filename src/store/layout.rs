//! How records map to keys in the one sled tree.
//!
//! One tree, one prefix byte per table: every change is a single atomic
//! transaction on that tree, followed by one flush. `m` holds metadata (schema
//! version, id counters) and `P` the policy text.

use std::net::IpAddr;

pub const USERS: u8 = b'u';
pub const NODES: u8 = b'n';
pub const PREAUTH_KEYS: u8 = b'k';
pub const API_KEYS: u8 = b'a';
pub const PENDING: u8 = b'p';
/// Schema 2: node address → owning node id, so no address is ever given twice.
pub const IPS: u8 = b'i';

pub const SCHEMA_VERSION_KEY: &[u8] = b"mschema_version";
pub const NEXT_IDS_KEY: &[u8] = b"mnext_ids";
pub const POLICY_KEY: &[u8] = b"Pcurrent";

pub fn id_key(table: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = table;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn str_key(table: u8, s: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + s.len());
    k.push(table);
    k.extend_from_slice(s.as_bytes());
    k
}

pub fn ip_key(ip: IpAddr) -> Vec<u8> {
    let mut k = vec![IPS];
    match ip {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k
}
