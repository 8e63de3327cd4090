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

/// The users of the tailnet and how a policy's user tokens name them.
///
/// Every user counts, not only those owning a node: a token names whom it
/// names whether or not they have a device, so it never falls through to
/// someone else (`alice@example.com` to a user *named* so, while the user
/// with that email has no node yet).
pub(super) struct Users {
    pub list: Vec<UserRef>,
    at: HashMap<u64, usize>,
    by_email: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Users {
    /// The nodes' owners and `others` (users without a node, or all users),
    /// each once by id.
    pub fn of(nodes: &[NodeInfo], others: &[UserRef]) -> Users {
        let mut at = HashMap::new();
        let mut list = Vec::new();
        for u in nodes.iter().filter_map(|n| n.user.as_ref()).chain(others) {
            at.entry(u.id).or_insert_with(|| {
                list.push(u.clone());
                list.len() - 1
            });
        }
        let mut by_email: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, u) in list.iter().enumerate() {
            if let Some(e) = &u.email {
                by_email.entry(e.clone()).or_default().push(i);
            }
            by_name.entry(u.name.clone()).or_default().push(i);
        }
        Users { list, at, by_email, by_name }
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.at.get(&id).copied()
    }

    /// The user a token names: `alice@example.com` by email or by name,
    /// `alice@` by name, as Headscale does; none when the token fits more
    /// than one user (two with that name, or one by email and another by
    /// name), since granting either would be a guess. `user:*@example.com`
    /// is every user with an email at that domain.
    pub fn named(&self, token: &str) -> Vec<usize> {
        if let Some(domain) = token.strip_prefix("user:*@") {
            return (0..self.list.len())
                .filter(|&i| {
                    self.list[i].email.as_deref().and_then(|e| e.rsplit_once('@')).is_some_and(|(_, d)| d == domain)
                })
                .collect();
        }
        let trimmed = token.strip_suffix('@').unwrap_or(token);
        let mut found: Vec<usize> =
            [&self.by_email, &self.by_name].iter().filter_map(|m| m.get(trimmed)).flatten().copied().collect();
        found.sort_unstable();
        found.dedup();
        if found.len() > 1 {
            found.clear();
        }
        found
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
        // Sets beside the lists: a node may announce many routes, and each
        // is checked against the others (the lists keep the given order).
        let mut approved: Vec<Prefix> = Vec::new();
        let mut is_approved: HashSet<Prefix> = HashSet::new();
        for r in n.approved_routes.iter().map(Prefix::masked) {
            if is_approved.insert(r) {
                approved.push(r);
            }
        }
        for r in &n.routable_ips {
            let r = r.masked();
            if is_approved.contains(&r) {
                continue;
            }
            let auto = if is_exit_route(&r) {
                may_approve(f, &policy.auto_approvers.exit_node)
            } else {
                policy.auto_approvers.routes.iter().any(|(p, owners)| p.covers(&r) && may_approve(f, owners))
            };
            if auto {
                is_approved.insert(r);
                approved.push(r);
            }
        }
        let mut listed: HashSet<Prefix> = HashSet::new();
        for r in &n.routable_ips {
            let r = r.masked();
            if is_approved.contains(&r) && listed.insert(r) {
                if is_exit_route(&r) { &mut f.exit } else { &mut f.subnet }.push(r);
            }
        }
        f.primary = n
            .primary_routes
            .iter()
            .map(Prefix::masked)
            .filter(|p| !is_exit_route(p) && listed.contains(p) && claimed.insert(*p))
            .collect();
        f.approved = approved;
    }
    out
}

impl Policy {
    /// Each node's approved routes (in the order given) with `autoApprovers`
    /// applied to what it announces: what the server persists, so an
    /// automatic approval stays when the policy changes, as in Headscale.
    /// Only the nodes' facts: nothing is compiled.
    pub fn approved_routes(&self, nodes: &[NodeInfo], users: &[UserRef]) -> Vec<Vec<Prefix>> {
        let users = Users::of(nodes, users);
        facts(self, nodes, &users).into_iter().map(|f| f.approved).collect()
    }
}
