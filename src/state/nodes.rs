//! Nodes as the admin changes them (rename, expire, delete, create without a
//! device) and the making of a new node, which registration uses too.

use std::net::IpAddr;
use std::sync::Arc;

use super::{expiry, ipalloc, names, not_found, register, Node, State, StateError, Tx};

impl State {
    pub fn rename_node(&self, id: u64, new_name: &str) -> Result<Arc<Node>, StateError> {
        names::check_given_name(new_name).map_err(StateError::Invalid)?;
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            if tx.snap().nodes.values().any(|n| n.id != id && n.given_name == new_name) {
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
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            let node = Arc::new(Node { expiry: Some(at), expiry_deferred: None, ..(*old).clone() });
            tx.put_node(node.clone());
            Ok(node)
        })
    }

    /// Takes a node's expiry away: it never expires (Headscale's `disableExpiry`).
    pub fn never_expire_node(&self, id: u64) -> Result<Arc<Node>, StateError> {
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            let node = Arc::new(Node { expiry: None, expiry_deferred: None, ..(*old).clone() });
            tx.put_node(node.clone());
            Ok(node)
        })
    }

    pub fn delete_node(&self, id: u64) -> Result<Arc<Node>, StateError> {
        let node = self.mutate(|tx| tx.remove_node(id).ok_or_else(|| not_found("node", id)))?;
        self.forget_presence(id);
        Ok(node)
    }

    /// Adds a node directly, without a client: `tinyscale debug create-node`,
    /// for trying the node verbs and for tests. Addresses are allocated as for
    /// a real registration.
    pub fn create_node(&self, user_id: u64, hostname: &str, node_key: &str, now: i64) -> Result<Arc<Node>, StateError> {
        let key =
            crate::tailcfg::NodePublic::parse(&node_key.to_ascii_lowercase()).filter(|k| !k.is_zero()).ok_or_else(
                || StateError::Invalid(format!("{node_key:?} is not a node key (nodekey: and 64 hex digits)")),
            )?;
        if hostname.is_empty() || hostname.len() > super::pending::MAX_HOSTNAME {
            return Err(StateError::Invalid(format!("a hostname is 1 to {} bytes", super::pending::MAX_HOSTNAME)));
        }
        self.mutate(|tx| {
            if !tx.snap().users.contains_key(&user_id) {
                return Err(not_found("user", user_id));
            }
            if tx.snap().node_by_key(&key).is_some() {
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
    pub(super) fn new_node(&self, tx: &mut Tx, spec: register::NodeSpec, now: i64) -> Result<Arc<Node>, StateError> {
        if tx.snap().nodes.len() >= self.settings.max_nodes {
            return Err(StateError::PoolFull(format!(
                "the tailnet already has {} nodes, its limit (tuning.max_nodes)",
                self.settings.max_nodes
            )));
        }
        let used = tx.snap().used_ips();
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
        let given = names::unique(&base, |n| tx.snap().nodes.values().any(|o| o.given_name == n));
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
            announced_routes: Vec::new(),
            approved_routes: Vec::new(),
        });
        if node.expiry_deferred.is_some() {
            self.expiry.note_deferred();
        }
        tx.put_node(node.clone());
        Ok(node)
    }
}
