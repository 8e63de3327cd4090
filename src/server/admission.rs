//! Who gets a connection. One cap (`tuning.max_connections`) is shared by
//! every listener, the relay's TLS one included. Long-lived connections
//! (upgraded to Noise or DERP) may fill only part of it, so `/health`, `/key`
//! and the login pages stay answerable when they are all taken; machines
//! without a node (any random key is one) only part of that, so they cannot
//! keep the tailnet's own devices out. Per source address (IPv6 by /64, and
//! twice that per /56: `quota::PerSource`) open connections are capped, so
//! are those not yet upgraded (a stalled request holds its connection for
//! up to a minute: `http::SHORT_LIFETIME`) and those of machines without a
//! node; new ones are rated: each connection carries at most one expensive
//! handshake (TLS, Noise or DERP; a refused upgrade closes the connection),
//! so the rate bounds those. 127.0.0.1 and ::1 (a reverse proxy on the same
//! host) are not capped per address (`quota::source_key`).
//!
//! The rules (`Table`) are pure and take the monotonic time; `Admission` is
//! their shared, locked home and hands out guards that give the place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::quota::{source_key, PerSource};

/// How the cap is shared.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    /// Of `total`, how many may be upgraded (Noise, DERP) at once.
    pub long_lived: usize,
    /// Of `long_lived`, how many Noise connections of machines without a node.
    pub keyless: usize,
    /// Connections one source may hold open.
    pub per_source: usize,
    /// One new connection per `interval` from a source, after a burst of `burst`.
    pub interval: Duration,
    pub burst: u32,
}

/// A household behind one NAT: every device holds a Noise and a DERP
/// connection, and all of them reconnect at once after a router restart.
const MIN_PER_SOURCE: usize = 32;
/// Connections one source may have open that are not upgraded yet: real
/// requests take milliseconds, but 20 handshakes a second from a household
/// on a loaded router may each take most of a second to be upgraded.
pub const SHORT_PER_SOURCE: usize = 16;
/// Noise connections of machines without a node one source may hold: as
/// many as the logins it may have waiting (`state::pending::PENDING_PER_IP`).
pub const KEYLESS_PER_SOURCE: usize = 8;
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
        let long_lived = total - headroom;
        Limits {
            total,
            long_lived,
            // Half: the tailnet's devices always have the other half.
            keyless: (long_lived / 2).max(1),
            per_source: (total / 4).max(MIN_PER_SOURCE),
            interval: INTERVAL,
            burst: BURST,
        }
    }
}

/// Why a connection was turned away, or not let stay after an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// This source holds its share.
    SourceFull,
    /// This source holds its share of connections not upgraded yet.
    SourceBusy,
    /// This source opens connections too fast.
    TooFast,
    /// Too many sources are remembered right now (a flood from many addresses).
    TooManySources,
    /// Every long-lived place is taken.
    LongLivedFull,
    /// Machines without a node hold their share (in all, or from this source).
    KeylessFull,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "all connections are taken",
            Refusal::SourceFull => "this address holds its share of connections",
            Refusal::SourceBusy => "this address holds its share of unfinished requests",
            Refusal::TooFast => "this address opens connections too fast",
            Refusal::TooManySources => "too many addresses at once",
            Refusal::LongLivedFull => "every long-lived connection is taken",
            Refusal::KeylessFull => "too many machines without a node are connected",
        })
    }
}

/// The counts behind the caps.
pub struct Table {
    limits: Limits,
    open: usize,
    long_lived: usize,
    keyless: usize,
    /// When a source's next connection is due (GCRA's theoretical arrival
    /// time); forgotten once past.
    due: HashMap<IpAddr, Instant>,
    open_by: PerSource,
    /// Connections not upgraded (yet): every one starts so.
    short_by: PerSource,
    keyless_by: PerSource,
}

impl Table {
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            open: 0,
            long_lived: 0,
            keyless: 0,
            due: HashMap::new(),
            open_by: PerSource::default(),
            short_by: PerSource::default(),
            keyless_by: PerSource::default(),
        }
    }

    /// Counts a new connection from `ip`, or says why not. It counts as not
    /// upgraded until [`Table::upgraded`].
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.open >= self.limits.total {
            return Err(Refusal::Full);
        }
        let Some(key) = source_key(ip) else {
            self.open += 1;
            return Ok(());
        };
        if !self.due.contains_key(&key) && self.due.len() >= self.limits.total + EXTRA_SOURCES {
            self.due.retain(|_, due| *due > now);
            if self.due.len() >= self.limits.total + EXTRA_SOURCES {
                return Err(Refusal::TooManySources);
            }
        }
        let l = self.limits;
        if !self.open_by.fits(ip, 1, l.per_source) {
            return Err(Refusal::SourceFull);
        }
        if !self.short_by.fits(ip, 1, SHORT_PER_SOURCE) {
            return Err(Refusal::SourceBusy);
        }
        // Allowed while the due time is at most a burst ahead of now.
        let due = self.due.get(&key).copied().unwrap_or(now);
        if due > now + l.interval * l.burst.saturating_sub(1) {
            return Err(Refusal::TooFast);
        }
        self.due.insert(key, due.max(now) + l.interval);
        self.open_by.add(ip, 1);
        self.short_by.add(ip, 1);
        self.open += 1;
        Ok(())
    }

    /// A connection from `ip` is upgraded: it no longer counts as unfinished.
    pub fn upgraded(&mut self, ip: IpAddr) {
        self.short_by.sub(ip, 1);
    }

    /// A connection from `ip` ended; `short`: it was never upgraded.
    pub fn release(&mut self, ip: IpAddr, short: bool, now: Instant) {
        self.open = self.open.saturating_sub(1);
        self.open_by.sub(ip, 1);
        if short {
            self.short_by.sub(ip, 1);
        }
        if let Some(key) = source_key(ip) {
            if self.due.get(&key).is_some_and(|due| *due <= now) {
                self.due.remove(&key);
            }
        }
    }

    /// A connection from `ip` asks to become long-lived; `keyless`: it is
    /// the Noise connection of a machine without a node.
    pub fn take_long_lived(&mut self, ip: IpAddr, keyless: bool) -> Result<(), Refusal> {
        if self.long_lived >= self.limits.long_lived {
            return Err(Refusal::LongLivedFull);
        }
        if keyless {
            if self.keyless >= self.limits.keyless || !self.keyless_by.fits(ip, 1, KEYLESS_PER_SOURCE) {
                return Err(Refusal::KeylessFull);
            }
            self.keyless += 1;
            self.keyless_by.add(ip, 1);
        }
        self.long_lived += 1;
        Ok(())
    }

    pub fn release_long_lived(&mut self, ip: IpAddr, keyless: bool) {
        self.long_lived = self.long_lived.saturating_sub(1);
        if keyless {
            self.keyless = self.keyless.saturating_sub(1);
            self.keyless_by.sub(ip, 1);
        }
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
        Ok(Slot { admission: self.clone(), ip, state: Mutex::default() })
    }
}

#[derive(Default)]
struct SlotState {
    upgraded: bool,
    /// The long-lived place it holds: `Some(keyless)`.
    long_lived: Option<bool>,
}

/// One connection's place, and what it became; all given back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The right to stay connected after an upgrade, if the shares allow;
    /// `keyless` as in [`Table::take_long_lived`]. Held until the slot drops.
    pub fn long_lived(&self, keyless: bool) -> Result<(), Refusal> {
        let mut st = self.state();
        if st.long_lived.is_some() {
            return Ok(());
        }
        self.admission.table().take_long_lived(self.ip, keyless)?;
        st.long_lived = Some(keyless);
        Ok(())
    }

    /// The upgraded stream is in hand: the connection waits on HTTP/1 no more.
    pub fn upgraded(&self) {
        let mut st = self.state();
        if !st.upgraded {
            st.upgraded = true;
            self.admission.table().upgraded(self.ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let st = std::mem::take(&mut *self.state());
        let mut table = self.admission.table();
        if let Some(keyless) = st.long_lived {
            table.release_long_lived(self.ip, keyless);
        }
        table.release(self.ip, !st.upgraded, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// Admits a connection from `ip` at `now` and upgrades it at once.
    fn upgraded(table: &mut Table, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        table.admit(ip, now)?;
        table.upgraded(ip);
        Ok(())
    }

    #[test]
    fn the_shares_of_a_small_and_a_large_cap() {
        let small = Limits::for_max(64);
        assert_eq!((small.long_lived, small.keyless, small.per_source), (60, 30, 32));
        let large = Limits::for_max(2048);
        assert_eq!((large.long_lived, large.keyless, large.per_source), (1984, 992, 512));
        let tiny = Limits::for_max(1);
        assert_eq!((tiny.total, tiny.long_lived, tiny.keyless), (1, 1, 1));
    }

    #[test]
    fn one_address_holds_32_and_no_more() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        for i in 0..32 {
            // Paced like a household reconnecting: well within the rate.
            upgraded(&mut table, ip(1), t + Duration::from_millis(50 * i)).unwrap();
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(table.admit(ip(1), later), Err(Refusal::SourceFull));
        assert_eq!(table.admit(ip(2), later), Ok(()), "other addresses still get in");
        table.release(ip(1), false, later);
        assert_eq!(table.admit(ip(1), later), Ok(()));
    }

    #[test]
    fn unfinished_connections_are_few_per_address() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        // Stalled requests (never upgraded): 8 from one address, then no more.
        for _ in 0..SHORT_PER_SOURCE {
            table.admit(ip(1), t).unwrap();
        }
        assert_eq!(table.admit(ip(1), t), Err(Refusal::SourceBusy));
        assert_eq!(table.admit(ip(2), t), Ok(()), "another address gets in");
        // Once one is upgraded, the address may open another.
        table.upgraded(ip(1));
        assert_eq!(table.admit(ip(1), t), Ok(()));
        assert_eq!(table.admit(ip(1), t), Err(Refusal::SourceBusy));
        // A stalled one that ends gives its place back; an upgraded one
        // that ends gives back only its connection.
        table.release(ip(1), true, t);
        assert_eq!(table.admit(ip(1), t), Ok(()));
        table.release(ip(1), false, t);
        assert_eq!(table.admit(ip(1), t), Err(Refusal::SourceBusy));
        // An IPv6 /56 holds twice an address's share, whatever its /64s.
        let v6 = |n: u16| IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 5, n, 0, 0, 0, 1));
        let held = (0..64).filter(|n| table.admit(v6(*n), t).is_ok()).count();
        assert_eq!(held, 2 * SHORT_PER_SOURCE);
    }

    #[test]
    fn twenty_handshakes_a_second_pass_and_a_flood_does_not() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(2048));
        // 20 a second for a minute, each connection closed after its handshake.
        for i in 0..1200u64 {
            let now = t + Duration::from_millis(50 * i);
            assert_eq!(table.admit(ip(1), now), Ok(()), "handshake {i}");
            table.release(ip(1), true, now);
        }
        // A burst of 50 passes at once; the flood behind it does not.
        let t2 = t + Duration::from_secs(120);
        let passed =
            (0..200).filter(|_| table.admit(ip(3), t2).map(|_| table.release(ip(3), true, t2)).is_ok()).count();
        assert_eq!(passed, BURST as usize);
        // A second later the rate allows 25 more.
        let t3 = t2 + Duration::from_secs(1);
        let passed =
            (0..200).filter(|_| table.admit(ip(3), t3).map(|_| table.release(ip(3), true, t3)).is_ok()).count();
        assert_eq!(passed, 25);
    }

    #[test]
    fn the_long_lived_share_leaves_headroom() {
        let t = Instant::now();
        let mut table = Table::new(Limits::for_max(64));
        for i in 0..64u8 {
            upgraded(&mut table, ip(i / 8), t).unwrap();
        }
        assert_eq!(table.admit(ip(200), t), Err(Refusal::Full));
        let taken = (0..64).filter(|i| table.take_long_lived(ip(*i as u8 / 8), false).is_ok()).count();
        assert_eq!(taken, 60, "4 places stay for short requests");
        assert_eq!(table.take_long_lived(ip(1), false), Err(Refusal::LongLivedFull));
        table.release_long_lived(ip(1), false);
        assert_eq!(table.take_long_lived(ip(1), false), Ok(()));
    }

    #[test]
    fn machines_without_a_node_hold_half_the_long_lived_share_and_8_per_address() {
        let mut table = Table::new(Limits::for_max(64));
        // One address: 8 keyless connections, then no more; a node's connection still gets in.
        for _ in 0..KEYLESS_PER_SOURCE {
            table.take_long_lived(ip(1), true).unwrap();
        }
        assert_eq!(table.take_long_lived(ip(1), true), Err(Refusal::KeylessFull));
        assert_eq!(table.take_long_lived(ip(1), false), Ok(()));
        // Many addresses: half of the 60 long-lived places in all.
        let more =
            (2..20u8).map(|n| (0..8).filter(|_| table.take_long_lived(ip(n), true).is_ok()).count()).sum::<usize>();
        assert_eq!(KEYLESS_PER_SOURCE + more, 30);
        // The tailnet's devices have the rest.
        let known = (0..64).filter(|_| table.take_long_lived(ip(100), false).is_ok()).count();
        assert_eq!(1 + known + 30, 60);
        assert_eq!(table.take_long_lived(ip(100), false), Err(Refusal::LongLivedFull));
        // A device leaving frees no place for a keyless machine; a keyless one leaving does.
        table.release_long_lived(ip(100), false);
        assert_eq!(table.take_long_lived(ip(200), true), Err(Refusal::KeylessFull));
        table.release_long_lived(ip(5), true);
        assert_eq!(table.take_long_lived(ip(200), true), Ok(()));
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
        assert!(table.due.is_empty() && table.open_by.is_empty() && table.short_by.is_empty());
        table.release(proxy, true, t);
        assert_eq!(table.admit(proxy, t), Ok(()));
    }

    #[test]
    fn forgotten_sources_keep_the_table_small() {
        let t = Instant::now();
        let limits = Limits { total: 4, long_lived: 4, keyless: 2, per_source: 2, interval: INTERVAL, burst: 2 };
        let mut table = Table::new(limits);
        for i in 0..(4 + EXTRA_SOURCES) {
            let a = IpAddr::from((i as u32 + 1).to_be_bytes());
            table.admit(a, t).unwrap();
            table.release(a, true, t);
        }
        // Each still has a due time ahead: remembered, and the table is full.
        let fresh = IpAddr::from([203, 0, 113, 1]);
        assert_eq!(table.admit(fresh, t), Err(Refusal::TooManySources));
        // Once their due times pass they are forgotten.
        assert_eq!(table.admit(fresh, t + Duration::from_secs(1)), Ok(()));
        assert!(table.due.len() <= 1);
        assert!(table.open_by.of(fresh) == 1 && table.short_by.of(fresh) == 1);
    }
}
