//! The tailnet as the compiler sees it: each node's addresses, owner, tags
//! and routes, with the policy's `autoApprovers` applied to what it
//! announces.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::model::{Owner, Policy};
use crate::tailcfg::Prefix;

/// A user as the tailnet knows them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserRef {
    pub id: u64,
    pub name: String,
    pub email: Option<String>,
}

/// One node, as the policy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: u64,
    pub hostname: String,
    /// The owner of an untagged node; a tagged node is owned by its tags.
    pub user: Option<UserRef>,
    pub tags: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// What the node announces (Hostinfo.RoutableIPs).
    pub routable_ips: Vec<Prefix>,
    /// Approved by hand; `autoApprovers` may approve more of `routable_ips`.
    pub approved_routes: Vec<Prefix>,
    /// The subnet routes this node serves as the primary router (the
    /// election is the caller's).
    pub primary_routes: Vec<Prefix>,
}

/// A node's facts after the policy is applied to its routes.
#[derive(Clone, Debug)]
pub(super) struct Facts {
    pub id: u64,
    pub ips: Vec<IpAddr>,
    pub tagged: bool,
    /// Policy tag ids the node holds (tags the policy does not declare
    /// match nothing).
    pub tags: Vec<usize>,
    /// Index into the users table, for untagged nodes with an owner.
    pub user: Option<usize>,
    /// Hand and automatic approvals.
    pub approved: Vec<Prefix>,
    /// Announced, approved, not an exit route.
    pub subnet: Vec<Prefix>,
    /// Announced and approved `0.0.0.0/0` and `::/0`.
    pub exit: Vec<Prefix>,
    /// The given primaries that the node may serve.
    pub primary: Vec<Prefix>,
}

pub(super) fn is_exit_route(p: &Prefix) -> bool {
    p.prefix_len() == 0
}

/// The users of the tailnet (those owning a node) and how a policy's user
/// tokens name them.
pub(super) struct Users {
    pub list: Vec<UserRef>,
    at: HashMap<u64, usize>,
    emails: HashSet<String>,
}

impl Users {
    pub fn of(nodes: &[NodeInfo]) -> Users {
        let mut at = HashMap::new();
        let mut list = Vec::new();
        for u in nodes.iter().filter_map(|n| n.user.as_ref()) {
            at.entry(u.id).or_insert_with(|| {
                list.push(u.clone());
                list.len() - 1
            });
        }
        let emails = list.iter().filter_map(|u| u.email.clone()).collect();
        Users { list, at, emails }
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.at.get(&id).copied()
    }

    /// The users a token names: `alice@example.com` by email (or, when no
    /// user has that email, by name), `alice@` by name, as Headscale does;
    /// `user:*@example.com` every user with an email at that domain.
    pub fn named(&self, token: &str) -> Vec<usize> {
        if let Some(domain) = token.strip_prefix("user:*@") {
            return (0..self.list.len())
                .filter(|&i| {
                    self.list[i].email.as_deref().and_then(|e| e.rsplit_once('@')).is_some_and(|(_, d)| d == domain)
                })
                .collect();
        }
        let trimmed = token.strip_suffix('@').unwrap_or(token);
        let by_email = self.emails.contains(trimmed);
        (0..self.list.len())
            .filter(|&i| {
                let u = &self.list[i];
                if by_email {
                    u.email.as_deref() == Some(trimmed)
                } else {
                    u.name == trimmed
                }
            })
            .collect()
    }
}

/// Every node's facts, in the order given.
pub(super) fn facts(policy: &Policy, nodes: &[NodeInfo], users: &Users) -> Vec<Facts> {
    let tag_ids: HashMap<&str, usize> = policy.tags.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let user_of =
        |n: &NodeInfo| if n.tags.is_empty() { n.user.as_ref().and_then(|u| users.index_of(u.id)) } else { None };
    let mut out: Vec<Facts> = nodes
        .iter()
        .map(|n| Facts {
            id: n.id,
            ips: n.ipv4.map(IpAddr::V4).into_iter().chain(n.ipv6.map(IpAddr::V6)).collect(),
            tagged: !n.tags.is_empty(),
            tags: n.tags.iter().filter_map(|t| tag_ids.get(t.as_str()).copied()).collect(),
            user: user_of(n),
            approved: Vec::new(),
            subnet: Vec::new(),
            exit: Vec::new(),
            primary: Vec::new(),
        })
        .collect();
    let owner_users: Vec<Vec<usize>> =
        policy.groups.iter().map(|g| g.members.iter().flat_map(|m| users.named(m)).collect()).collect();
    let may_approve = |f: &Facts, owners: &[Owner]| {
        owners.iter().any(|o| match o {
            Owner::Tag(t) => f.tags.contains(t),
            Owner::User(u) => f.user.is_some_and(|me| users.named(u).contains(&me)),
            Owner::Group(g) => f.user.is_some_and(|me| owner_users[*g].contains(&me)),
        })
    };
    // Each prefix has one primary router; a prefix claimed by several
    // nodes goes to the first of them.
    let mut claimed: HashSet<Prefix> = HashSet::new();
    for (f, n) in out.iter_mut().zip(nodes) {
        let mut approved: Vec<Prefix> = n.approved_routes.iter().map(Prefix::masked).collect();
        for r in &n.routable_ips {
            let r = r.masked();
            let auto = if is_exit_route(&r) {
                may_approve(f, &policy.auto_approvers.exit_node)
            } else {
                policy.auto_approvers.routes.iter().any(|(p, owners)| p.covers(&r) && may_approve(f, owners))
            };
            if auto && !approved.contains(&r) {
                approved.push(r);
            }
        }
        for r in &n.routable_ips {
            let r = r.masked();
            if !approved.contains(&r) {
                continue;
            }
            let list = if is_exit_route(&r) { &mut f.exit } else { &mut f.subnet };
            if !list.contains(&r) {
                list.push(r);
            }
        }
        f.primary = n
            .primary_routes
            .iter()
            .map(Prefix::masked)
            .filter(|p| f.subnet.contains(p) && claimed.insert(*p))
            .collect();
        f.approved = approved;
    }
    out
}
