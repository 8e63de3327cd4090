//! The snapshot: everything durable as one immutable value, with the
//! indexes lookups need. Readers share it as an `Arc`; a mutation edits a
//! copy through a [`super::Tx`]. It is built from records alone (no store),
//! so the mapper's tests need none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::register::TAGGED_DEVICES;
use super::{ApiKey, Node, PreAuthKey, User};
use crate::policy::{Compiled, NodeInfo, Policy, UserRef};
use crate::tailcfg::{MachinePublic, NodePublic, Prefix};

/// What "no policy" means once routes serve: every node reaches every other
/// and every route (Tailscale's default policy), compiled like any policy
/// so routes reach `AllowedIPs` and `PrimaryRoutes` by the same rules.
const ALLOW_ALL: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

fn allow_all() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    // Invariant: ALLOW_ALL is a constant valid policy (tested in state::routes).
    POLICY.get_or_init(|| Arc::new(Policy::parse(ALLOW_ALL).expect("the allow-all policy parses"))).clone()
}

/// Everything durable, as one immutable value.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub users: BTreeMap<u64, Arc<User>>,
    pub nodes: BTreeMap<u64, Arc<Node>>,
    pub preauth_keys: BTreeMap<u64, Arc<PreAuthKey>>,
    /// API keys (hashed): a few, found by their prefix.
    pub api_keys: BTreeMap<u64, Arc<ApiKey>>,
    /// The tailnet policy; `None`: every node reaches every other.
    pub policy: Option<Arc<Policy>>,
    /// The policy compiled for these nodes, kept in step by `Tx::finish`.
    /// Map sessions diff the one they last sent against it. Without a
    /// policy it is `None` (everyone reaches everyone, nothing to compile)
    /// until a route serves; then the allow-all policy is compiled, since
    /// routes reach peers only through a compiled policy.
    pub access: Option<Arc<Compiled>>,
    /// The primary router of each served subnet route, elected by
    /// `state::routes` from who is online: RAM only, never on flash.
    pub primaries: Arc<BTreeMap<Prefix, u64>>,
    /// The text the policy was read from (`policy get`).
    pub policy_text: Option<Arc<str>>,
    /// The nodes `access` was compiled for, to tell whether it must be again.
    compiled_for: Arc<[NodeInfo]>,
    compiled_users: Arc<[UserRef]>,
    by_node_key: HashMap<NodePublic, u64>,
    by_machine_key: HashMap<MachinePublic, u64>,
}

impl Snapshot {
    /// A snapshot of these records, indexed.
    pub fn from_records(
        users: impl IntoIterator<Item = User>,
        nodes: impl IntoIterator<Item = Node>,
        preauth_keys: impl IntoIterator<Item = PreAuthKey>,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        for u in users {
            snap.users.insert(u.id, Arc::new(u));
        }
        for n in nodes {
            snap.index(&n);
            snap.nodes.insert(n.id, Arc::new(n));
        }
        for k in preauth_keys {
            snap.preauth_keys.insert(k.id, Arc::new(k));
        }
        snap
    }

    /// The nodes as the policy sees them: owners, tags, addresses, the
    /// routes they announce, the approved ones and those they are primary
    /// for. What `autoApprovers` look at (`Tx::auto_approve`), which store
    /// what they approve; the compiled policy is given [`Snapshot::served_nodes`].
    pub fn policy_nodes(&self) -> Vec<NodeInfo> {
        let mut primary: BTreeMap<u64, Vec<Prefix>> = BTreeMap::new();
        for (p, id) in self.primaries.iter() {
            primary.entry(*id).or_default().push(*p);
        }
        self.nodes
            .values()
            .map(|n| NodeInfo {
                id: n.id,
                hostname: n.hostname.clone(),
                user: (n.user_id != TAGGED_DEVICES && n.tags.is_empty())
                    .then(|| self.users.get(&n.user_id))
                    .flatten()
                    .map(|u| Snapshot::user_ref(u)),
                tags: n.tags.clone(),
                ipv4: n.ipv4,
                ipv6: n.ipv6,
                routable_ips: n.announced_routes.clone(),
                approved_routes: n.approved_routes.clone(),
                primary_routes: primary.remove(&n.id).unwrap_or_default(),
            })
            .collect()
    }

    /// [`Snapshot::policy_nodes`] announcing only their approved routes:
    /// what the policy is compiled for. Approvals, autoApprovers' included,
    /// are stored when they are made, so the compile must not approve again
    /// what an admin un-approved (review 12: an exit route un-approved while
    /// `autoApprovers.exitNode` covered its node stayed in peers'
    /// `AllowedIPs`). A change to routes nobody approved compiles nothing.
    pub fn served_nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = self.policy_nodes();
        for n in &mut nodes {
            let approved = &n.approved_routes;
            n.routable_ips.retain(|r| approved.contains(r));
        }
        nodes
    }

    /// Whether any node serves a route (announced and approved).
    pub fn serves_routes(&self) -> bool {
        self.nodes.values().any(|n| n.announced_routes.iter().any(|r| n.approved_routes.contains(r)))
    }

    /// A user as the policy names users.
    pub fn user_ref(u: &User) -> UserRef {
        UserRef { id: u.id, name: u.name.clone(), email: (!u.email.is_empty()).then(|| u.email.clone()) }
    }

    /// This snapshot under `policy`, compiled (for tests and tools: the
    /// live state sets it through `Tx::set_policy`).
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>) -> Snapshot {
        self.policy = policy;
        self.recompile(true);
        self
    }

    /// Compiles the policy again for the nodes as they are now: always
    /// after a new policy, otherwise only if what it reads of them changed
    /// or of the users changed (a new endpoint or Hostinfo leaves `access`
    /// as it was, so sessions have nothing to diff).
    pub(super) fn recompile(&mut self, policy_changed: bool) {
        let policy = match &self.policy {
            Some(p) => p.clone(),
            None if self.serves_routes() => allow_all(),
            None => {
                self.access = None;
                return;
            }
        };
        let nodes = self.served_nodes();
        // Users without a node count too: a token that fits two users names neither.
        let users: Vec<UserRef> = self.users.values().map(|u| Snapshot::user_ref(u)).collect();
        if !policy_changed && self.access.is_some() && *self.compiled_for == *nodes && *self.compiled_users == *users {
            return;
        }
        self.access = Some(Arc::new(policy.compile_with_users(&nodes, &users)));
        self.compiled_for = nodes.into();
        self.compiled_users = users.into();
    }

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

    pub(super) fn used_ips(&self) -> BTreeSet<IpAddr> {
        self.nodes.values().flat_map(|n| n.ipv4.map(IpAddr::V4).into_iter().chain(n.ipv6.map(IpAddr::V6))).collect()
    }

    pub(super) fn index(&mut self, n: &Node) {
        self.by_node_key.insert(n.node_key, n.id);
        // Nodes added by `debug create-node` have no machine.
        if let Some(m) = n.machine_key {
            self.by_machine_key.insert(m, n.id);
        }
    }

    pub(super) fn unindex(&mut self, n: &Node) {
        if self.by_node_key.get(&n.node_key) == Some(&n.id) {
            self.by_node_key.remove(&n.node_key);
        }
        if let Some(m) = n.machine_key.filter(|m| self.by_machine_key.get(m) == Some(&n.id)) {
            self.by_machine_key.remove(&m);
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("users", &self.users.len())
            .field("nodes", &self.nodes.len())
            .field("preauth_keys", &self.preauth_keys.len())
            .field("policy", &self.policy.is_some())
            .finish()
    }
}
