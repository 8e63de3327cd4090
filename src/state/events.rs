//! Change events and their fan-out to map sessions.
//!
//! Every mutation publishes a typed [`Change`]; each map session holds a
//! [`Subscription`] with a bounded queue. A session that falls behind is not
//! allowed to grow memory: its queue is dropped and it is told to send one
//! fresh full map instead.

use std::collections::{HashMap, VecDeque};
// No AtomicU64: 32-bit MIPS has no 64-bit atomics (docs/embedded.md §4.4).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Changes a session may hold before it is coalesced into a full map.
pub const QUEUE_CAP: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A node was added, or changed in a way only the whole node object
    /// carries (name, key, addresses, expiry, tags, Hostinfo, owner).
    NodeChanged(u64),
    NodeRemoved(u64),
    /// Endpoints, disco key or home DERP region: a patch suffices.
    Endpoints(u64),
    Online(u64, bool),
    /// The DERP map changed (a `derp.urls` refresh).
    DerpMap,
    /// The DNS config changed (the extra records file).
    Dns,
    /// The policy changed: each session diffs what it compiles to.
    Policy,
    /// Anything may have changed (the store was read again): a full map.
    Everything,
}

struct Slot {
    node_id: u64,
    queue: Mutex<VecDeque<Change>>,
    overflowed: AtomicBool,
    notify: Notify,
}

#[derive(Default)]
pub struct Hub {
    slots: Mutex<HashMap<usize, Arc<Slot>>>,
    next: AtomicUsize,
}

/// What a session takes from its queue.
#[derive(Debug, Default)]
pub struct Pending {
    pub changes: Vec<Change>,
    /// The queue overflowed: send a full map.
    pub resync: bool,
}

pub struct Subscription {
    hub: Arc<Hub>,
    id: usize,
    slot: Arc<Slot>,
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, node_id: u64) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            node_id,
            queue: Mutex::new(VecDeque::new()),
            overflowed: AtomicBool::new(false),
            notify: Notify::new(),
        });
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).insert(id, slot.clone());
        Subscription { hub: self.clone(), id, slot }
    }

    /// Hands `change` to every session.
    pub fn publish(&self, change: Change) {
        self.publish_except(change, None)
    }

    /// Hands `change` to every session but `known`'s, which has it already
    /// (a map stream's own report, in the full map it just sent).
    pub fn publish_except(&self, change: Change, known: Option<&Subscription>) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for s in slots {
            if known.is_some_and(|k| Arc::ptr_eq(&k.slot, &s)) {
                continue;
            }
            let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() < QUEUE_CAP {
                q.push_back(change);
            } else {
                q.clear();
                s.overflowed.store(true, Ordering::Relaxed);
            }
            drop(q);
            s.notify.notify_one();
        }
    }

    /// Open sessions of `node_id`.
    pub fn sessions_of(&self, node_id: u64) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|s| s.node_id == node_id).count()
    }

    pub fn session_count(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Subscription {
    pub fn node_id(&self) -> u64 {
        self.slot.node_id
    }

    /// Waits until something was published since the last [`Subscription::take`].
    pub async fn changed(&self) {
        self.slot.notify.notified().await
    }

    pub fn take(&self) -> Pending {
        let mut q = self.slot.queue.lock().unwrap_or_else(|e| e.into_inner());
        Pending { changes: q.drain(..).collect(), resync: self.slot.overflowed.swap(false, Ordering::Relaxed) }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_and_overflow() {
        let hub = Arc::new(Hub::default());
        let a = hub.subscribe(1);
        let b = hub.subscribe(2);
        hub.publish(Change::NodeChanged(3));
        assert_eq!(a.take().changes, [Change::NodeChanged(3)]);
        for i in 0..(QUEUE_CAP as u64 + 5) {
            hub.publish(Change::Endpoints(i));
        }
        let p = b.take();
        assert!(p.resync, "an overflowing queue asks for a full map");
        assert!(p.changes.len() < QUEUE_CAP, "and holds no more than its cap");
        assert_eq!(hub.sessions_of(2), 1);
        drop(b);
        assert_eq!(hub.sessions_of(2), 0);
        assert_eq!(hub.session_count(), 1);
    }

    #[tokio::test]
    async fn a_publish_before_waiting_is_not_lost() {
        let hub = Arc::new(Hub::default());
        let a = hub.subscribe(1);
        hub.publish(Change::Everything);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed()).await.unwrap();
        assert_eq!(a.take().changes, [Change::Everything]);
    }
}
