//! One mutation in progress. Its fields are private: every write goes
//! through a method that keeps the next snapshot, the store batch and the
//! change events in step.

use std::sync::Arc;

use super::events::Change;
use super::{ApiKey, Node, PreAuthKey, Snapshot, User};
use crate::policy::Policy;
use crate::store::{Batch, NextIds};

/// One mutation in progress: the next snapshot, the id counters, the store
/// batch and the change events, kept in step by its methods.
pub struct Tx {
    snap: Snapshot,
    ids: NextIds,
    batch: Batch,
    changes: Vec<Change>,
    /// `autoApprovers` look again at this commit: a new policy, a new
    /// announcement, a new owner or tags. Not at every write, so routes the
    /// admin un-approved stay so until one of those happens.
    review_routes: bool,
}

impl Tx {
    pub(super) fn new(snap: Snapshot, ids: NextIds) -> Tx {
        Tx { snap, ids, batch: Batch::new(), changes: Vec::new(), review_routes: false }
    }

    /// The next snapshot, the id counters, what to commit, what to publish.
    /// The policy is compiled again when a node or the policy changed.
    pub(super) fn finish(mut self, online: &dyn Fn(u64) -> bool) -> (Snapshot, NextIds, Batch, Vec<Change>) {
        // autoApprovers first: what they approve is stored in this same
        // commit; then the primaries for the routes as they are now; then
        // the policy is compiled with both, once.
        if self.review_routes {
            self.auto_approve();
        }
        self.elect(online);
        // Recompiled only when what the policy reads changed (checked there):
        // an unchanged `access` is what tells sessions there is nothing to diff.
        self.snap.recompile(self.changes.contains(&Change::Policy));
        (self.snap, self.ids, self.batch, self.changes)
    }

    /// Replaces the policy (`None`: allow-all again) whose text is `text`;
    /// with `persist` the text is stored too (database mode).
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>, text: Arc<str>, persist: bool) {
        if persist {
            self.batch.set_policy(&text);
        }
        self.snap.policy = policy;
        self.snap.policy_text = Some(text);
        self.changes.push(Change::Policy);
        self.review_routes = true;
    }

    /// New primary routers (RAM only: nothing to store); `touched`: the
    /// routers whose role changed, news to their peers.
    pub(super) fn set_primaries(
        &mut self,
        primaries: std::collections::BTreeMap<crate::tailcfg::Prefix, u64>,
        touched: impl IntoIterator<Item = u64>,
    ) {
        self.snap.primaries = Arc::new(primaries);
        for id in touched {
            if self.snap.nodes.contains_key(&id) && !self.changes.contains(&Change::NodeChanged(id)) {
                self.changes.push(Change::NodeChanged(id));
            }
        }
    }

    /// Has `autoApprovers` look at this commit's nodes (see `review_routes`).
    pub fn review_routes(&mut self) {
        self.review_routes = true;
    }

    /// The snapshot as this transaction has it so far: what every rule that
    /// decides whether a write may happen checks.
    pub fn snap(&self) -> &Snapshot {
        &self.snap
    }
    pub fn put_user(&mut self, u: Arc<User>) {
        self.batch.put_user(&u);
        // Nodes carry their owner's profile: peers must hear of the change.
        let owned: Vec<u64> = self.snap.nodes.values().filter(|n| n.user_id == u.id).map(|n| n.id).collect();
        self.changes.extend(owned.into_iter().map(Change::NodeChanged));
        self.snap.users.insert(u.id, u);
    }

    pub fn remove_user(&mut self, id: u64) {
        self.batch.delete_user(id);
        self.snap.users.remove(&id);
    }

    pub fn put_node(&mut self, n: Arc<Node>) {
        self.batch.put_node(&n);
        if let Some(old) = self.snap.nodes.get(&n.id).cloned() {
            self.snap.unindex(&old);
        }
        self.snap.index(&n);
        self.changes.push(Change::NodeChanged(n.id));
        self.snap.nodes.insert(n.id, n);
    }

    /// Writes `n` without telling anyone: for what peers need not hear of
    /// (last-seen times).
    pub fn touch_node(&mut self, n: Arc<Node>) {
        self.batch.put_node(&n);
        if let Some(old) = self.snap.nodes.get(&n.id).cloned() {
            self.snap.unindex(&old);
        }
        self.snap.index(&n);
        self.snap.nodes.insert(n.id, n);
    }

    pub fn remove_node(&mut self, id: u64) -> Option<Arc<Node>> {
        let n = self.snap.nodes.remove(&id)?;
        self.snap.unindex(&n);
        self.batch.delete_node(id);
        self.changes.push(Change::NodeRemoved(id));
        Some(n)
    }

    pub fn put_key(&mut self, k: Arc<PreAuthKey>) {
        self.batch.put_preauth_key(&k);
        self.snap.preauth_keys.insert(k.id, k);
    }

    pub fn remove_key(&mut self, id: u64) -> Option<Arc<PreAuthKey>> {
        let k = self.snap.preauth_keys.remove(&id)?;
        self.batch.delete_preauth_key(id);
        Some(k)
    }

    pub fn put_api_key(&mut self, k: Arc<ApiKey>) {
        self.batch.put_api_key(&k);
        self.snap.api_keys.insert(k.id, k);
    }

    pub fn remove_api_key(&mut self, id: u64) -> Option<Arc<ApiKey>> {
        let k = self.snap.api_keys.remove(&id)?;
        self.batch.delete_api_key(id);
        Some(k)
    }

    pub(super) fn next_api_key_id(&mut self) -> u64 {
        let id = self.ids.api_key.max(1);
        self.ids.api_key = id + 1;
        id
    }

    pub(super) fn next_user_id(&mut self) -> u64 {
        let id = self.ids.user.max(1);
        self.ids.user = id + 1;
        id
    }

    pub(super) fn next_node_id(&mut self) -> u64 {
        let id = self.ids.node.max(1);
        self.ids.node = id + 1;
        id
    }

    pub(super) fn next_key_id(&mut self) -> u64 {
        let id = self.ids.preauth_key.max(1);
        self.ids.preauth_key = id + 1;
        id
    }
}
