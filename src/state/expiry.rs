//! Expiries on a clock that may read too early.
//!
//! A router without a real-time clock boots with a wrong time (1970, or the
//! firmware's date) until NTP answers; `clock::clock_is_sane` says whether
//! the time is at least the build time. Two rules keep expiries right on such
//! a clock:
//!
//! - An expiry made "now" (`nodes expire`, `preauthkeys expire`, a client
//!   logging out) records `now` when the clock is sane and
//!   [`clock::LONG_AGO`] when it is not: the wrong reading could come back
//!   after a reboot, the earliest time cannot.
//! - A default expiry (`node.expiry`) is `now + node.expiry`, which is
//!   unknown while the clock is wrong. The node then records the span
//!   (`expiry_deferred`, on flash, so a restart keeps it) and this module
//!   counts it on the monotonic clock from when it first saw it:
//!   [`crate::state::State::settle_expiries`], called every few seconds,
//!   turns it into a wall time as soon as the clock is sane, or expires the
//!   node (`LONG_AGO`) if the span runs out first. A restart before NTP
//!   starts the count again, so such a node lives at most `node.expiry` plus
//!   the time tinyscale was down, never less.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Node, State, StateError};
use crate::clock::{self, Span};

/// The expiry a registration gives a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    Never,
    At(i64),
    /// This long after registering, counted once the clock can be read.
    Deferred(u64),
}

impl Planned {
    /// `now + span`, or deferred while the clock reads before the build time.
    pub fn of(span: Span, now: i64) -> Planned {
        if span.is_zero() {
            Planned::Never
        } else if clock::clock_is_sane(now) {
            Planned::At(now.saturating_add(span.secs() as i64))
        } else {
            Planned::Deferred(span.secs())
        }
    }

    pub fn at(self) -> Option<i64> {
        match self {
            Planned::At(t) => Some(t),
            _ => None,
        }
    }

    pub fn deferred(self) -> Option<u64> {
        match self {
            Planned::Deferred(s) => Some(s),
            _ => None,
        }
    }
}

/// What an expiry made "now" records.
pub fn expired_now(now: i64) -> i64 {
    if clock::clock_is_sane(now) {
        now
    } else {
        clock::LONG_AGO
    }
}

/// Deferred expiries being counted: node id → monotonic second it was first seen.
#[derive(Default)]
pub struct Deferred {
    any: AtomicBool,
    since: Mutex<HashMap<u64, u64>>,
}

impl Deferred {
    pub(super) fn note_deferred(&self) {
        self.any.store(true, Ordering::Relaxed);
    }
}

impl State {
    /// Turns deferred expiries into wall times once the clock is sane, or
    /// expires the nodes whose span ran out before that. `now` is the wall
    /// clock, `mono` seconds on a monotonic clock. Returns how many nodes
    /// changed. Cheap when nothing is deferred.
    pub fn settle_expiries(&self, now: i64, mono: u64) -> Result<usize, StateError> {
        if !self.expiry.any.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let sane = clock::clock_is_sane(now);
        let (changed, left) = self.mutate(|tx| {
            let mut since = self.expiry.since.lock().unwrap_or_else(|e| e.into_inner());
            let pending: Vec<Arc<Node>> =
                tx.snap().nodes.values().filter(|n| n.expiry_deferred.is_some()).cloned().collect();
            since.retain(|id, _| pending.iter().any(|n| n.id == *id));
            let mut changed = 0;
            for n in &pending {
                let span = n.expiry_deferred.unwrap_or(0);
                let counted = mono.saturating_sub(*since.entry(n.id).or_insert(mono));
                let left = span as i64 - counted as i64;
                let expiry = match (sane, left > 0) {
                    (true, _) => now.saturating_add(left),
                    (false, false) => clock::LONG_AGO,
                    (false, true) => continue,
                };
                tx.put_node(Arc::new(Node { expiry: Some(expiry), expiry_deferred: None, ..(**n).clone() }));
                since.remove(&n.id);
                changed += 1;
            }
            Ok::<_, StateError>((changed, pending.len() - changed))
        })?;
        if left == 0 {
            self.expiry.any.store(false, Ordering::Relaxed);
        }
        Ok(changed)
    }
}
