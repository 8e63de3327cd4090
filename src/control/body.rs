//! Request bodies inside Noise, which anyone with a machine key (any random
//! key will do) can send: each path has a small limit, decided before a byte
//! is read; every body in flight holds its bytes from one budget shared by
//! all connections, and a request that finds its share spent is refused at
//! once (503, the client retries); a body must be complete within
//! [`BODY_DEADLINE`].
//!
//! Machines without a node may use only part of the budget, so keyless
//! clients cannot stall the map requests of registered ones, and one source
//! address only a smaller part, so one attacker cannot stall everyone's
//! registrations.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::StatusCode;

use crate::quota::source_key;

/// Bytes of request bodies all connections together may hold while they arrive.
pub const BODY_BUDGET: usize = 4 << 20;
/// Of it, what machines without a node may hold, and what one source address may.
const UNKNOWN_SHARE: usize = BODY_BUDGET / 2;
const SOURCE_SHARE: usize = BODY_BUDGET / 4;
/// From the request's headers to the end of its body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// A RegisterRequest is 1–3 KB, mostly its Hostinfo (kept up to 16 KiB):
/// the limit leaves room for a Hostinfo 4 times that.
const MAX_REGISTER: usize = 64 * 1024;
/// A MapRequest is the same Hostinfo plus endpoints and a few flags.
const MAX_MAP: usize = 64 * 1024;

// Each share holds a dozen or more of the largest bodies; the whole is small on a 64 MB router.
const _: () = assert!(SOURCE_SHARE / MAX_MAP >= 16 && SOURCE_SHARE / MAX_REGISTER >= 16 && BODY_BUDGET <= 8 << 20);

/// The largest body `path` may carry; `None` for paths tinyscale does not serve.
pub fn limit(path: &str) -> Option<usize> {
    match path {
        "/machine/register" => Some(MAX_REGISTER),
        "/machine/map" => Some(MAX_MAP),
        _ => None,
    }
}

/// How much of the budget a body takes: its declared length, or the path's
/// limit when it declares none. `None`: it declares more than the limit.
pub fn reservation(declared: Option<u64>, limit: usize) -> Option<usize> {
    match declared {
        Some(n) if n > limit as u64 => None,
        Some(n) => Some(n as usize),
        None => Some(limit),
    }
}

/// Who a body is charged to.
#[derive(Debug, Clone, Copy)]
pub struct Payer {
    pub from: IpAddr,
    /// The machine has a node.
    pub known: bool,
}

/// The budget's shares in use. Pure rules.
#[derive(Debug, Default)]
pub struct Shares {
    total: usize,
    unknown: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Shares {
    /// Takes `bytes` for `payer` if every share it falls under has room.
    pub fn take(&mut self, bytes: usize, payer: Payer) -> bool {
        let source = source_key(payer.from);
        let of_source = source.and_then(|s| self.by_source.get(&s).copied()).unwrap_or(0);
        if self.total + bytes > BODY_BUDGET
            || (!payer.known && self.unknown + bytes > UNKNOWN_SHARE)
            || (source.is_some() && of_source + bytes > SOURCE_SHARE)
        {
            return false;
        }
        self.total += bytes;
        if !payer.known {
            self.unknown += bytes;
        }
        if let Some(s) = source.filter(|_| bytes > 0) {
            self.by_source.insert(s, of_source + bytes);
        }
        true
    }

    pub fn give_back(&mut self, bytes: usize, payer: Payer) {
        self.total = self.total.saturating_sub(bytes);
        if !payer.known {
            self.unknown = self.unknown.saturating_sub(bytes);
        }
        let Some(source) = source_key(payer.from) else { return };
        if let Some(n) = self.by_source.get_mut(&source) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }
}

/// The budget every connection draws from.
#[derive(Default)]
pub struct Budget {
    shares: Mutex<Shares>,
}

impl Budget {
    fn shares(&self) -> std::sync::MutexGuard<'_, Shares> {
        self.shares.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(self: &Arc<Self>, bytes: usize, payer: Payer) -> Option<Lease> {
        self.shares().take(bytes, payer).then(|| Lease { budget: self.clone(), bytes, payer })
    }
}

/// Bytes taken from the budget; given back when dropped.
struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
    payer: Payer,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.shares().give_back(self.bytes, self.payer);
    }
}

/// A body read whole, holding its part of the budget until dropped.
pub struct Held {
    pub bytes: Vec<u8>,
    _lease: Lease,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    /// The budget is spent: retry later.
    Busy,
    Slow,
    /// The client reset the stream or the connection broke.
    Broken,
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Slow => StatusCode::REQUEST_TIMEOUT,
            Refused::Broken => StatusCode::BAD_REQUEST,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refused::TooLarge => "request body too large",
            Refused::Busy => "server busy; retry",
            Refused::Slow => "request body too slow",
            Refused::Broken => "request body broken",
        }
    }
}

/// Reads `body` (at most `limit` bytes) within the deadline, out of `budget`.
pub async fn read(budget: &Arc<Budget>, mut body: Incoming, limit: usize, payer: Payer) -> Result<Held, Refused> {
    let want = reservation(body.size_hint().exact(), limit).ok_or(Refused::TooLarge)?;
    let lease = budget.lease(want, payer).ok_or(Refused::Busy)?;
    let collect = async {
        let mut bytes = Vec::with_capacity(want);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Refused::Broken)?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > want {
                    return Err(Refused::TooLarge);
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(BODY_DEADLINE, collect).await.map_err(|_| Refused::Slow)??;
    Ok(Held { bytes, _lease: lease })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_known_before_the_body() {
        assert_eq!(limit("/machine/register"), Some(MAX_REGISTER));
        assert_eq!(limit("/machine/nope"), None);
        assert_eq!(reservation(Some(3000), MAX_MAP), Some(3000));
        assert_eq!(reservation(None, MAX_MAP), Some(MAX_MAP));
        assert_eq!(reservation(Some(MAX_MAP as u64 + 1), MAX_MAP), None);
        assert_eq!(reservation(Some(u64::MAX), MAX_MAP), None);
    }

    #[test]
    fn keyless_clients_and_single_sources_get_only_their_share() {
        let mut s = Shares::default();
        let stranger = |n: u8| Payer { from: IpAddr::from([203, 0, 113, n]), known: false };
        let node = |n: u8| Payer { from: IpAddr::from([198, 51, 100, n]), known: true };
        // One source: a quarter of the budget, then no more.
        let mut held = 0;
        while s.take(MAX_REGISTER, stranger(1)) {
            held += MAX_REGISTER;
        }
        assert_eq!(held, SOURCE_SHARE);
        // Keyless sources together: half.
        for n in 2..20 {
            while s.take(MAX_REGISTER, stranger(n)) {}
        }
        assert_eq!(s.unknown, UNKNOWN_SHARE);
        assert!(!s.take(1, stranger(99)));
        // Registered machines still have the rest.
        assert!(s.take(3000, node(1)));
        s.give_back(3000, node(1));
        // Given back, it can be taken again; a source with nothing left is forgotten.
        s.give_back(MAX_REGISTER, stranger(1));
        assert!(s.take(MAX_REGISTER, stranger(99)));
        assert!(s.take(0, stranger(200)) && !s.by_source.contains_key(&IpAddr::from([203, 0, 113, 200])));
    }
}
