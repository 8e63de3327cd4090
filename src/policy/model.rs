//! The checked policy: every name it uses exists, every port and CIDR is
//! valid, every autogroup is allowed where it stands. `syntax` is the only
//! way to make one (the fields are private to this module tree), so a
//! `Policy` in hand is a valid policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::tailcfg::{PortRange, Prefix};

/// Capability name → its values (a JSON array as written), shared: a grant
/// may carry a large value, and every rule and compile refers to this one.
pub(super) type CapMap = Arc<BTreeMap<String, serde_json::Value>>;

/// What a source or destination names, resolved to the policy's own tables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Alias {
    /// `*`: every tailnet address (and, as a source, every approved subnet).
    Any,
    /// A user as written (`alice@example.com`, `alice@`).
    User(String),
    /// An index into [`Policy::groups`].
    Group(usize),
    /// An index into [`Policy::tags`].
    Tag(usize),
    /// An IP, a CIDR, or a `hosts` entry's.
    Prefix(Prefix),
    Member,
    Tagged,
    /// `autogroup:self`: the same user's own untagged devices.
    SelfDevices,
    Internet,
    DangerAll,
}

/// One `ip` entry of a grant (or an ACL destination's ports and `proto`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IpRule {
    /// IANA protocol numbers; empty means the client's default set.
    pub proto: Vec<u8>,
    /// Sorted, without overlaps (see `alias::normalize_ports`); shared by
    /// every destination the rule expands to.
    pub ports: Arc<[PortRange]>,
}

/// A grant; each ACL becomes one grant per destination (its ports differ).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Grant {
    /// Shared by the grants one ACL becomes (one per destination), so an
    /// ACL's sources are held, and resolved, once.
    pub src: Arc<[Alias]>,
    pub dst: Vec<Alias>,
    pub ip: Vec<IpRule>,
    /// Capability name → its values, passed on as written; `None` without
    /// `app`.
    pub app: Option<CapMap>,
    /// Tag indices of the routers the traffic must go through.
    pub via: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Group {
    pub name: String,
    /// Users as written.
    pub members: Vec<String>,
}

/// Who may own a tag or approve a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Owner {
    User(String),
    Group(usize),
    Tag(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct AutoApprovers {
    pub routes: Vec<(Prefix, Vec<Owner>)>,
    pub exit_node: Vec<Owner>,
}

/// Parsed and checked, not applied yet (said in a log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NodeAttr {
    pub target: Vec<Alias>,
    pub attr: Vec<String>,
    pub ip_pool: Vec<Prefix>,
}

/// Parsed and checked, not applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SshRule {
    pub check: bool,
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub users: Vec<String>,
}

/// The whole checked policy. Only `syntax` makes one (from text it has
/// checked), so holding a `Policy` means holding a valid one.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub(super) groups: Vec<Group>,
    /// `tagOwners`' keys: every tag the policy may use.
    pub(super) tags: Vec<String>,
    pub(super) tag_owners: Vec<Vec<Owner>>,
    pub(super) grants: Vec<Grant>,
    pub(super) auto_approvers: AutoApprovers,
    pub(super) node_attrs: Vec<NodeAttr>,
    pub(super) ssh: Vec<SshRule>,
    pub(super) tests: usize,
    pub(super) ssh_tests: usize,
    pub(super) randomize_client_port: bool,
}

impl Policy {
    /// The empty policy, which `syntax` fills as it checks.
    pub(super) fn empty() -> Policy {
        Policy {
            groups: Vec::new(),
            tags: Vec::new(),
            tag_owners: Vec::new(),
            grants: Vec::new(),
            auto_approvers: AutoApprovers::default(),
            node_attrs: Vec::new(),
            ssh: Vec::new(),
            tests: 0,
            ssh_tests: 0,
            randomize_client_port: false,
        }
    }

    /// The sections this build reads and checks but does not act on yet,
    /// for the log line that says so.
    pub fn not_applied(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.node_attrs.is_empty() {
            out.push("nodeAttrs");
        }
        if !self.ssh.is_empty() {
            out.push("ssh");
        }
        if self.tests > 0 {
            out.push("tests");
        }
        if self.ssh_tests > 0 {
            out.push("sshTests");
        }
        if self.randomize_client_port {
            out.push("randomizeClientPort");
        }
        out
    }

    /// How many rules the policy holds (ACL destinations count one each).
    pub fn rule_count(&self) -> usize {
        self.grants.len()
    }
}
