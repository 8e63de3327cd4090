//! Who gets a connection. One cap (`tuning.max_connections`) is shared by
//! every listener, the relay's TLS one included. Long-lived connections
//! (upgraded to Noise or DERP) may fill only part of it, so `/health`, `/key`
//! and the login pages stay answerable when they are all taken. Per source
//! address (IPv6 by /64) open connections are capped and new ones are rated:
//! each connection carries at most one expensive handshake (TLS, Noise or
//! DERP; a refused upgrade closes the connection), so the rate bounds those.
//! 127.0.0.1 and ::1 (a reverse proxy on the same host) are not capped per
//! address (`quota::source_key`).
//!
//! The rules (`Table`) are pure and take the monotonic time; `Admission` is
//! their shared, locked home and hands out guards that give the place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::quota::source_key;

/// How the cap is shared.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    /// Of `total`, how many may be upgraded (Noise, DERP) at once.
    pub long_lived: usize,
    /// Connections one source may hold open.
    pub per_source: usize,
    /// One new connection per `interval` from a source, after a burst of `burst`.
    pub interval: Duration,
    pub burst: u32,
}

/// A household behind one NAT: every device holds a Noise and a DERP
/// connection, and all of them reconnect at once after a router restart.
const MIN_PER_SOURCE: usize = 32;
/// 25 new connections a second per source, 50 at once.
const INTERVAL: Duration = Duration::from_millis(40);
const BURST: u32 = 50;
/// Sources remembered beyond those with open connections.
const EXTRA_SOURCES: usize = 4096;

impl Limits {
    pub fn for_max(total: usize) -> Limits {
        let total = total.max(1);
        // A sixteenth (4 to 64) for short requests: they last milliseconds.
        let headroom = (total / 16).clamp(4, 64).min(total / 2);
        Limits {
            total,
            long_lived: total - headroom,
            per_source: (total / 4).max(MIN_PER_SOURCE),
            interval: INTERVAL,
            burst: BURST,
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// This source holds its share.
    SourceFull,
    /// This source opens connections too fast.
    TooFast,
    /// Too many sources are remembered right now (a flood from many addresses).
    TooManySources,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "all connections are taken",
            Refusal::SourceFull => "this address holds its share of connections",
            Refusal::TooFast => "this address opens connections too fast",
            Refusal::TooManySources => "too many addresses at once",
        })
    }
}

struct Source {
    open: usize,
    /// When the next connection is due (GCRA's theoretical arrival time).
    due: Instant,
}

/// The counts behind the caps.
pub struct Table {
    limits: Limits,
    open: usize,
    long_lived: usize,
    sources: HashMap<IpAddr, Source>,
}

impl Table {
    pub fn new(limits: Limits) -> Table {
        Table { limits, open: 0, long_lived: 0, sources: HashMap::new() }
    }

    fn forget_idle(&mut self, now: Instant) {
        self.sources.retain(|_, s| s.open > 0 || s.due > now);
    }

    /// Counts a new connection from `ip`, or says why not.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.open >= self.limits.total {
            return Err(Refusal::Full);
        }
        let Some(key) = source_key(ip) else {
            self.open += 1;
            return Ok(());
        };
        if !self.sources.contains_key(&key) && self.sources.len() >= self.limits.total + EXTRA_SOURCES {
            self.forget_idle(now);
            if self.sources.len() >= self.limits.total + EXTRA_SOURCES {
                return Err(Refusal::TooManySources);
            }
        }
        let l = self.limits;
        let s = self.sources.entry(key).or_insert(Source { open: 0, due: now });
        if s.open >= l.per_source {
            return Err(Refusal::SourceFull);
        }
        // Allowed while the due time is at most a burst ahead of now.
        let tolerance = l.interval * l.burst.saturating_sub(1);
        if s.due > now + tolerance {
            return Err(Refusal::TooFast);
        }
        s.due = s.due.max(now) + l.interval;
        s.open += 1;
        self.open += 1;
        Ok(())
    }

    /// A connection from `ip` ended.
    pub fn release(&mut self, ip: IpAddr, now: Instant) {
        self.open = self.open.saturating_sub(1);
        let Some(key) = source_key(ip) else { return };
        if let Some(s) = self.sources.get_mut(&key) {
            s.open = s.open.saturating_sub(1);
            if s.open == 0 && s.due <= now {
                self.sources.remove(&key);
            }
        }
    }

    /// A connection asks to become long-lived.
    pub fn take_long_lived(&mut self) -> bool {
        if self.long_lived >= self.limits.long_lived {
            return false;
        }
        self.long_lived += 1;
        true
    }

    pub fn release_long_lived(&mut self) {
        self.long_lived = self.long_lived.saturating_sub(1);
    }
}

/// The one table every listener admits through.
pub struct Admission {
    table: Mutex<Table>,
}

impl Admission {
    pub fn new(max_connections: usize) -> Arc<Admission> {
        Arc::new(Admission { table: Mutex::new(Table::new(Limits::for_max(max_connections))) })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, Refusal> {
        self.table().admit(ip, now)?;
        Ok(Slot { admission: self.clone(), ip })
    }
}

/// One connection's place; given back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Slot {
    /// The right to stay connected after an upgrade, if the share allows.
    pub fn long_lived(&self) -> Option<LongLived> {
        self.admission.table().take_long_lived().then(|| LongLived { admission: self.admission.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.table().release(self.ip, Instant::now());
    }
}

/// An upgraded connection's place in the long-lived share.
pub struct LongLived {
    admission: Arc<Admission>,
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.admission.table().release_long_lived();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn the_shares_of_a_small_and_a_large_cap() {
        let small = Limits::for_max(64);
        assert_eq!((small.long_lived, small.per_source), (60, 32));
        let large = Limits::for_max(2048);
        assert_eq!((large.long_lived, large.per_source), (1984, 512));
        let tiny = Limits::for_max(1);
        assert_eq!((tiny.total, tiny.long_lived), (1, 1));
    }

    #[test]
    fn one_address_holds_32_and_no_more() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        for i in 0..32 {
            // Paced like a household reconnecting: well within the rate.
            table.admit(ip(1), t + Duration::from_millis(50 * i)).unwrap();
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(table.admit(ip(1), later), Err(Refusal::SourceFull));
        assert_eq!(table.admit(ip(2), later), Ok(()), "other addresses still get in");
        table.release(ip(1), later);
        assert_eq!(table.admit(ip(1), later), Ok(()));
    }

    #[test]
    fn twenty_handshakes_a_second_pass_and_a_flood_does_not() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(2048));
        // 20 a second for a minute, each connection closed after its handshake.
        for i in 0..1200u64 {
            let now = t + Duration::from_millis(50 * i);
            assert_eq!(table.admit(ip(1), now), Ok(()), "handshake {i}");
            table.release(ip(1), now);
        }
        // A burst of 50 passes at once; the flood behind it does not.
        let t2 = t + Duration::from_secs(120);
        let passed = (0..200).filter(|_| table.admit(ip(3), t2).map(|_| table.release(ip(3), t2)).is_ok()).count();
        assert_eq!(passed, BURST as usize);
        // A second later the rate allows 25 more.
        let t3 = t2 + Duration::from_secs(1);
        let passed = (0..200).filter(|_| table.admit(ip(3), t3).map(|_| table.release(ip(3), t3)).is_ok()).count();
        assert_eq!(passed, 25);
    }

    #[test]
    fn the_long_lived_share_leaves_headroom() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        for i in 0..64u8 {
            table.admit(ip(i / 8), t).unwrap();
        }
        assert_eq!(table.admit(ip(200), t), Err(Refusal::Full));
        let upgraded = (0..64).filter(|_| table.take_long_lived()).count();
        assert_eq!(upgraded, 60, "4 places stay for short requests");
        table.release_long_lived();
        assert!(table.take_long_lived());
    }

    #[test]
    fn a_proxy_on_the_same_host_is_no_one_source() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..64 {
            table.admit(proxy, t).unwrap();
        }
        assert_eq!(table.admit(proxy, t), Err(Refusal::Full), "the total still holds");
        assert!(table.sources.is_empty());
        table.release(proxy, t);
        assert_eq!(table.admit(proxy, t), Ok(()));
    }

    #[test]
    fn forgotten_sources_keep_the_table_small() {
        let t = Instant::now();
        let mut table = Table::new(Limits { total: 4, long_lived: 4, per_source: 2, interval: INTERVAL, burst: 2 });
        for i in 0..(4 + EXTRA_SOURCES) {
            let a = IpAddr::from((i as u32 + 1).to_be_bytes());
            table.admit(a, t).unwrap();
            table.release(a, t);
        }
        // Each still has a due time ahead: remembered, and the table is full.
        let fresh = IpAddr::from([203, 0, 113, 1]);
        assert_eq!(table.admit(fresh, t), Err(Refusal::TooManySources));
        // Once their due times pass they are forgotten.
        assert_eq!(table.admit(fresh, t + Duration::from_secs(1)), Ok(()));
        assert!(table.sources.len() <= 1);
    }
}
