//! A client's picture of its network map, built from MapResponses the way
//! Tailscale's control client builds it (control/controlclient/map.go,
//! `updateStateFromResponse` and `updatePeersStateFromResponse`, v1.90):
//!
//! - a non-empty `Peers` replaces every peer; an empty or absent one says
//!   nothing, and then `PeersRemoved`, `PeersChanged`, `OnlineChange` and
//!   `PeersChangedPatch` apply in that order, patches only to known peers
//!   (`DERPRegion` and `Cap` only when not zero);
//! - `Node`, `DERPMap`, `DNSConfig` replace what was there when present,
//!   `Domain` when not empty; `UserProfiles` add up; `PacketFilters` sets
//!   its named chunks (`null` deletes one, `"*"` clears all first) and a
//!   legacy `PacketFilter` replaces them all as `"base"`; the filter is the
//!   chunks joined in key order;
//! - every node is "upgraded" on arrival: the legacy `DERP` string becomes
//!   `HomeDERP` and goes.
//!
//! It works on the JSON a client receives, so it sees exactly the wire form.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::tailcfg::MapResponse;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct View {
    pub node: Option<Value>,
    pub peers: BTreeMap<u64, Value>,
    pub derp_map: Option<Value>,
    pub dns: Option<Value>,
    pub domain: String,
    pub packet_filters: BTreeMap<String, Value>,
    pub user_profiles: BTreeMap<u64, Value>,
}

/// `upgradeNode`: `DERP: "127.3.3.40:<region>"` becomes `HomeDERP` when that is unset.
fn upgrade(mut n: Value) -> Value {
    if let Some(o) = n.as_object_mut() {
        if let Some(Value::String(legacy)) = o.remove("DERP") {
            let home = o.get("HomeDERP").and_then(Value::as_i64).unwrap_or(0);
            let region = legacy.strip_prefix("127.3.3.40:").and_then(|r| r.parse::<i64>().ok());
            if let (0, Some(r)) = (home, region) {
                o.insert("HomeDERP".into(), r.into());
            }
        }
    }
    n
}

fn id_of(n: &Value) -> u64 {
    n["ID"].as_u64().expect("a node has an ID")
}

impl View {
    /// The view a fresh session has after its first map.
    pub fn of(first: &MapResponse) -> View {
        let mut v = View::default();
        v.apply(first);
        v
    }

    pub fn apply(&mut self, resp: &MapResponse) {
        let j = serde_json::to_value(resp).expect("a MapResponse serializes");
        let field = |k: &str| j.get(k).filter(|v| !v.is_null());
        let peers: Vec<Value> = field("Peers").and_then(Value::as_array).cloned().unwrap_or_default();
        if !peers.is_empty() {
            self.peers = peers.into_iter().map(|n| (id_of(&n), upgrade(n))).collect();
        } else {
            for id in field("PeersRemoved").and_then(Value::as_array).into_iter().flatten() {
                self.peers.remove(&id.as_u64().expect("a removed id"));
            }
            for n in field("PeersChanged").and_then(Value::as_array).into_iter().flatten() {
                self.peers.insert(id_of(n), upgrade(n.clone()));
            }
            for (id, on) in field("OnlineChange").and_then(Value::as_object).into_iter().flatten() {
                if let Some(p) = id.parse::<u64>().ok().and_then(|id| self.peers.get_mut(&id)) {
                    p["Online"] = on.clone();
                }
            }
            for pc in field("PeersChangedPatch").and_then(Value::as_array).into_iter().flatten() {
                let Some(p) = pc["NodeID"].as_u64().and_then(|id| self.peers.get_mut(&id)) else { continue };
                let o = p.as_object_mut().expect("a node is an object");
                for (patch, node) in [("DERPRegion", "HomeDERP"), ("Cap", "Cap")] {
                    if let Some(v) = pc.get(patch).filter(|v| v.as_i64() != Some(0)) {
                        o.insert(node.into(), v.clone());
                    }
                }
                for k in ["Endpoints", "Key", "DiscoKey", "Online", "LastSeen", "KeyExpiry"] {
                    if let Some(v) = pc.get(k) {
                        o.insert(k.into(), v.clone());
                    }
                }
            }
        }
        if let Some(n) = field("Node") {
            self.node = Some(upgrade(n.clone()));
        }
        for up in field("UserProfiles").and_then(Value::as_array).into_iter().flatten() {
            self.user_profiles.insert(up["ID"].as_u64().expect("a profile ID"), up.clone());
        }
        if let Some(m) = field("DERPMap") {
            self.derp_map = Some(m.clone());
        }
        if let Some(chunks) = field("PacketFilters").and_then(Value::as_object) {
            if chunks.get("*").is_some_and(Value::is_null) {
                self.packet_filters.clear();
            }
            for (k, v) in chunks.iter().filter(|(k, _)| *k != "*") {
                if v.is_null() {
                    self.packet_filters.remove(k);
                } else {
                    self.packet_filters.insert(k.clone(), v.clone());
                }
            }
        } else if let Some(f) = field("PacketFilter") {
            self.packet_filters = BTreeMap::from([("base".to_string(), f.clone())]);
        }
        if let Some(d) = field("DNSConfig") {
            self.dns = Some(d.clone());
        }
        if let Some(d) = field("Domain").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            self.domain = d.to_string();
        }
    }

    /// What two views must agree on. Left out, because the client does not
    /// take them from these messages: its own node's volatile fields (it
    /// reports them itself; the server sends them to peers only), `LastSeen`
    /// of a peer that is online (unused while online, and a patch cannot
    /// clear it), an empty `Endpoints` (Go's nil and empty are one), and
    /// profiles of users no node in the view belongs to (the client keeps
    /// old ones).
    pub fn comparable(&self) -> Value {
        let strip = |n: &Value, keys: &[&str]| -> Value {
            let mut o: Map<String, Value> = n.as_object().cloned().unwrap_or_default();
            for k in keys {
                o.remove(*k);
            }
            if o.get("Online") == Some(&Value::Bool(true)) {
                o.remove("LastSeen");
            }
            if o.get("Endpoints").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                o.remove("Endpoints");
            }
            Value::Object(o)
        };
        let node =
            self.node.as_ref().map(|n| strip(n, &["Endpoints", "DiscoKey", "HomeDERP", "Online", "LastSeen", "Cap"]));
        let peers: BTreeMap<String, Value> = self.peers.iter().map(|(id, n)| (id.to_string(), strip(n, &[]))).collect();
        let users: BTreeSet<u64> =
            self.node.iter().chain(self.peers.values()).filter_map(|n| n["User"].as_u64()).collect();
        let profiles: Vec<&Value> = users.iter().filter_map(|u| self.user_profiles.get(u)).collect();
        let filter: Vec<&Value> =
            self.packet_filters.values().flat_map(|c| c.as_array().into_iter().flatten()).collect();
        serde_json::json!({
            "Node": node, "Peers": peers, "DERPMap": self.derp_map, "DNSConfig": self.dns,
            "Domain": self.domain, "PacketFilter": filter, "UserProfiles": profiles,
        })
    }
}
