//! `policy simulate`: a policy applied to a tailnet described in a file
//! (the `topology` of ../shared/fixtures/policy), answered in the shape of
//! those fixtures' `expect`: each node's filter and the peers it sees.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Compiled, NodeInfo, Policy, UserRef};
use crate::tailcfg::{FilterRule, Prefix};

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub users: Vec<TopologyUser>,
    pub nodes: BTreeMap<String, TopologyNode>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TopologyUser {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TopologyNode {
    #[serde(default)]
    pub hostname: Option<String>,
    /// A user's name (from `users`); tagged nodes have none.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Option<std::net::Ipv6Addr>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub routable_ips: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub approved_routes: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub primary_routes: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// What one node gets.
#[derive(Serialize, Debug, Clone)]
pub struct NodeView {
    pub filter: Vec<FilterRule>,
    pub peers: BTreeMap<String, PeerView>,
}

#[derive(Serialize, Debug, Clone)]
pub struct PeerView {
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<Prefix>,
    #[serde(rename = "PrimaryRoutes")]
    pub primary_routes: Vec<Prefix>,
}

/// A topology that does not describe a tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyError {
    UnknownUser { node: String, user: String },
    BadPrefix { node: String, prefix: String },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::UnknownUser { node, user } => write!(f, "node {node:?}: no user {user:?} in users"),
            TopologyError::BadPrefix { node, prefix } => write!(f, "node {node:?}: {prefix:?} is not a CIDR"),
        }
    }
}

impl std::error::Error for TopologyError {}

impl Topology {
    /// The nodes, with ids 1, 2, ... in the order of their names.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, TopologyError> {
        let mut out = Vec::new();
        for (i, (name, n)) in self.nodes.iter().enumerate() {
            let user = match &n.user {
                Some(u) if n.tags.is_empty() => {
                    let found = self
                        .users
                        .iter()
                        .find(|x| &x.name == u)
                        .ok_or_else(|| TopologyError::UnknownUser { node: name.clone(), user: u.clone() })?;
                    Some(UserRef { id: found.id, name: found.name.clone(), email: found.email.clone() })
                }
                _ => None,
            };
            let prefixes = |list: &[String]| -> Result<Vec<Prefix>, TopologyError> {
                list.iter()
                    .map(|p| p.parse().map_err(|_| TopologyError::BadPrefix { node: name.clone(), prefix: p.clone() }))
                    .collect()
            };
            out.push(NodeInfo {
                id: i as u64 + 1,
                hostname: n.hostname.clone().unwrap_or_else(|| name.clone()),
                user,
                tags: n.tags.clone(),
                ipv4: n.ipv4,
                ipv6: n.ipv6,
                routable_ips: prefixes(&n.routable_ips)?,
                approved_routes: prefixes(&n.approved_routes)?,
                primary_routes: prefixes(&n.primary_routes)?,
            });
        }
        Ok(out)
    }
}

/// Every node's filter and peers, by node name.
pub fn simulate(policy: &Policy, topology: &Topology) -> Result<BTreeMap<String, NodeView>, TopologyError> {
    let nodes = topology.nodes()?;
    let users: Vec<UserRef> =
        topology.users.iter().map(|u| UserRef { id: u.id, name: u.name.clone(), email: u.email.clone() }).collect();
    let compiled: Compiled = policy.compile_with_users(&nodes, &users);
    let names: Vec<&String> = topology.nodes.keys().collect();
    let mut out = BTreeMap::new();
    for (n, name) in nodes.iter().zip(&names) {
        let mut peers = BTreeMap::new();
        for (p, peer_name) in nodes.iter().zip(&names) {
            if compiled.sees(n.id, p.id) {
                peers.insert(
                    (*peer_name).clone(),
                    PeerView {
                        allowed_ips: compiled.allowed_ips(n.id, p.id),
                        primary_routes: compiled.primary_routes(n.id, p.id),
                    },
                );
            }
        }
        out.insert((*name).clone(), NodeView { filter: compiled.filter(n.id), peers });
    }
    Ok(out)
}
