//! Per-source quotas for what anyone on the internet can make the server
//! hold: the key an address is counted under, counts per source with an
//! aggregate per IPv6 /56, a pool of places capped in total and per source,
//! and a capped, expiring table in which a source can only ever push out
//! its own entries.
//!
//! Pure: the caller passes the monotonic time in.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The address a source is counted under: IPv4 as it is (v4-mapped IPv6
/// too), IPv6 by its /64, since one subscriber gets a whole /64. `None` for
/// 127.0.0.1 and ::1: a reverse proxy on the same host forwards everyone
/// from there, so they are not capped per address (the proxy must be).
pub fn source_key(ip: IpAddr) -> Option<IpAddr> {
    let ip = match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6 == Ipv6Addr::LOCALHOST => ip,
            None => IpAddr::V6(prefix(v6, 4)),
        },
    };
    (ip != IpAddr::from(Ipv4Addr::LOCALHOST) && ip != IpAddr::from(Ipv6Addr::LOCALHOST)).then_some(ip)
}

/// The first `segments` 16-bit groups of `v6`, the rest zero.
fn prefix(v6: Ipv6Addr, segments: usize) -> Ipv6Addr {
    let mut s = v6.segments();
    s[segments..].fill(0);
    Ipv6Addr::from(s)
}

/// The wider block an IPv6 source is counted under as well: its /56, what
/// one subscriber's router is commonly delegated. Without it whoever holds
/// a /56 is 256 sources. `None` for IPv4 and the local proxy's address.
pub fn block_key(ip: IpAddr) -> Option<IpAddr> {
    match source_key(ip)? {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[3] &= 0xff00;
            Some(IpAddr::V6(prefix(Ipv6Addr::from(s), 4)))
        }
        IpAddr::V4(_) => None,
    }
}

/// How many times a source's cap its /56 may hold in all.
pub const BLOCK_FACTOR: usize = 2;

/// A counted group: a source, or the /56 block around IPv6 sources (kept
/// apart: a /56 and a /64 can have the same first address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Source(IpAddr),
    Block(IpAddr),
}

/// The groups `ip` counts in, each with the factor its cap is multiplied by.
fn groups(ip: IpAddr) -> impl Iterator<Item = (Group, usize)> {
    let source = source_key(ip).map(|s| (Group::Source(s), 1));
    let block = block_key(ip).map(|b| (Group::Block(b), BLOCK_FACTOR));
    source.into_iter().chain(block)
}

/// Counts per source, for caps that hold per source and, [`BLOCK_FACTOR`]
/// times over, per IPv6 /56. Only groups with something counted are kept,
/// so it is as large as what it counts. The local proxy's address counts
/// nowhere (see [`source_key`]).
#[derive(Debug, Default)]
pub struct PerSource {
    counts: HashMap<Group, usize>,
}

impl PerSource {
    /// Whether `n` more for `ip` stay within `cap` per source (and its /56's share).
    pub fn fits(&self, ip: IpAddr, n: usize, cap: usize) -> bool {
        groups(ip).all(|(g, factor)| self.counts.get(&g).copied().unwrap_or(0) + n <= cap.saturating_mul(factor))
    }

    pub fn add(&mut self, ip: IpAddr, n: usize) {
        if n == 0 {
            return;
        }
        for (g, _) in groups(ip) {
            *self.counts.entry(g).or_insert(0) += n;
        }
    }

    pub fn sub(&mut self, ip: IpAddr, n: usize) {
        for (g, _) in groups(ip) {
            if let Some(c) = self.counts.get_mut(&g) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    self.counts.remove(&g);
                }
            }
        }
    }

    /// What `ip`'s own source holds.
    pub fn of(&self, ip: IpAddr) -> usize {
        source_key(ip).and_then(|s| self.counts.get(&Group::Source(s)).copied()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Places (handshakes in flight, say) capped in total and per source.
#[derive(Debug)]
pub struct Places {
    total: usize,
    per_source: usize,
    taken: usize,
    by_source: PerSource,
}

impl Places {
    pub fn new(total: usize, per_source: usize) -> Places {
        Places { total, per_source, taken: 0, by_source: PerSource::default() }
    }

    /// Takes a place for `ip` if there is one in total and in its share.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        if self.taken >= self.total || !self.by_source.fits(ip, 1, self.per_source) {
            return false;
        }
        self.taken += 1;
        self.by_source.add(ip, 1);
        true
    }

    pub fn give_back(&mut self, ip: IpAddr) {
        self.taken = self.taken.saturating_sub(1);
        self.by_source.sub(ip, 1);
    }

    pub fn taken(&self) -> usize {
        self.taken
    }
}

/// Who an entry is charged to: the address it came from and the key
/// (machine key) it is for. Both are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    ip: Option<IpAddr>,
    /// The IPv6 /56 around `ip`.
    block: Option<IpAddr>,
    key: [u8; 32],
}

impl Source {
    pub fn new(ip: IpAddr, key: [u8; 32]) -> Source {
        Source { ip: source_key(ip), block: block_key(ip), key }
    }
}

/// How much a [`Capped`] table holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries at once, all sources together.
    pub total: usize,
    /// Entries one address (or IPv6 /64) may hold; its /56 holds
    /// [`BLOCK_FACTOR`] times as many.
    pub per_ip: usize,
    /// Entries one key may hold.
    pub per_key: usize,
    /// How long an entry lives.
    pub ttl: Duration,
}

/// The table is full of other sources' entries: the new one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many waiting at once")
    }
}

impl std::error::Error for Full {}

struct Entry<T> {
    created: Instant,
    source: Source,
    value: T,
}

/// An expiring table of entries by id, capped in total and per source.
/// A source at one of its caps pushes out its own oldest entry; when the
/// table is full, a source with entries gives up its own oldest, and a
/// source without any is refused. Nobody's entry is ever evicted by
/// someone else. (The /56 around IPv6 sources is one source too, at
/// [`BLOCK_FACTOR`] times the address's cap: its sources share it.)
pub struct Capped<T> {
    limits: Limits,
    entries: HashMap<String, Entry<T>>,
    /// Ids in insertion order (oldest first).
    order: VecDeque<String>,
}

impl<T> Capped<T> {
    pub fn new(limits: Limits) -> Capped<T> {
        Capped { limits, entries: HashMap::new(), order: VecDeque::new() }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(id) = self.order.front() {
            let live = self.entries.get(id).is_some_and(|e| now.saturating_duration_since(e.created) < self.limits.ttl);
            if live {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                self.entries.remove(&id);
            }
        }
    }

    fn oldest_where(&self, f: impl Fn(&Source) -> bool) -> Option<String> {
        self.order.iter().find(|id| self.entries.get(*id).is_some_and(|e| f(&e.source))).cloned()
    }

    fn count_where(&self, f: impl Fn(&Source) -> bool) -> usize {
        self.entries.values().filter(|e| f(&e.source)).count()
    }

    fn evict(&mut self, id: &str) -> Option<T> {
        self.order.retain(|i| i != id);
        self.entries.remove(id).map(|e| e.value)
    }

    /// Evicts the oldest entries `mine` selects until fewer than `cap` remain.
    fn make_room(&mut self, mine: impl Fn(&Source) -> bool + Copy, cap: usize, evicted: &mut Vec<T>) {
        while self.count_where(mine) >= cap.max(1) {
            let Some(old) = self.oldest_where(mine) else { break };
            evicted.extend(self.evict(&old));
        }
    }

    /// Adds `value` under `id` for `source`. Returns what the source had to
    /// give up for it (its own oldest entries), or [`Full`].
    pub fn insert(&mut self, id: String, source: Source, value: T, now: Instant) -> Result<Vec<T>, Full> {
        self.expire(now);
        let mut evicted = Vec::new();
        let (per_key, per_ip) = (self.limits.per_key, self.limits.per_ip);
        self.make_room(|s| s.key == source.key, per_key, &mut evicted);
        if source.ip.is_some() {
            self.make_room(|s| s.ip == source.ip, per_ip, &mut evicted);
        }
        if source.block.is_some() {
            self.make_room(|s| s.block == source.block, per_ip * BLOCK_FACTOR, &mut evicted);
        }
        if self.entries.len() >= self.limits.total {
            let mine = |s: &Source| s.key == source.key || (source.ip.is_some() && s.ip == source.ip);
            let Some(old) = self.oldest_where(mine) else { return Err(Full) };
            evicted.extend(self.evict(&old));
        }
        if let Some(old) = self.entries.insert(id.clone(), Entry { created: now, source, value }) {
            // Ids are random: a repeat replaces its own entry.
            evicted.push(old.value);
            self.order.retain(|i| *i != id);
        }
        self.order.push_back(id);
        Ok(evicted)
    }

    pub fn get(&mut self, id: &str, now: Instant) -> Option<&T> {
        self.expire(now);
        self.entries.get(id).map(|e| &e.value)
    }

    pub fn get_mut(&mut self, id: &str, now: Instant) -> Option<&mut T> {
        self.expire(now);
        self.entries.get_mut(id).map(|e| &mut e.value)
    }

    /// Takes the entry out (single use); `None` when absent or expired.
    pub fn take(&mut self, id: &str, now: Instant) -> Option<T> {
        self.expire(now);
        self.evict(id)
    }

    /// Live entries, oldest first, with their age.
    pub fn iter(&mut self, now: Instant) -> impl Iterator<Item = (&str, Duration, &T)> {
        self.expire(now);
        let entries = &self.entries;
        self.order.iter().filter_map(move |id| {
            entries.get(id).map(|e| (id.as_str(), now.saturating_duration_since(e.created), &e.value))
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { total: 10, per_ip: 4, per_key: 2, ttl: Duration::from_secs(60) };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key("::ffff:192.0.2.7".parse().unwrap()), Some(ip(7)));
        assert_eq!(source_key(ip(7)), Some(ip(7)));
        // A proxy on the same host is no one source.
        assert_eq!(source_key("127.0.0.1".parse().unwrap()), None);
        assert_eq!(source_key("::1".parse().unwrap()), None);
        assert_eq!(source_key("::ffff:127.0.0.1".parse().unwrap()), None);
        assert!(source_key("127.0.0.2".parse().unwrap()).is_some());
    }

    #[test]
    fn ipv6_blocks_are_their_56() {
        let a: IpAddr = "2001:db8:1:2aa:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2ff:9::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:300::1".parse().unwrap();
        assert_eq!(block_key(a), Some("2001:db8:1:200::".parse().unwrap()));
        assert_eq!(block_key(a), block_key(b));
        assert_ne!(block_key(a), block_key(c));
        assert_eq!(block_key(ip(7)), None);
        assert_eq!(block_key("::1".parse().unwrap()), None);
        assert_eq!(block_key("::ffff:192.0.2.7".parse().unwrap()), None);
    }

    #[test]
    fn a_56_holds_twice_a_64s_cap_and_its_64s_share_it() {
        let mut p = PerSource::default();
        let in_block = |n: u16| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 7, 0x100 + n, 1, 2, 3, 4));
        // One /64 up to its cap of 4.
        assert!(p.fits(in_block(1), 4, 4) && !p.fits(in_block(1), 5, 4));
        p.add(in_block(1), 4);
        assert!(!p.fits(in_block(1), 1, 4));
        // Its /56 holds 4 more, from any other /64 in it, and no more.
        p.add(in_block(2), 3);
        assert!(p.fits(in_block(3), 1, 4) && !p.fits(in_block(3), 2, 4));
        p.add(in_block(3), 1);
        assert!(!p.fits(in_block(200), 1, 4), "256 /64s are no way around the cap");
        // The next /56 and IPv4 addresses are not touched.
        assert!(p.fits("2001:db8:7:200::1".parse().unwrap(), 4, 4));
        assert!(p.fits(ip(1), 4, 4));
        assert_eq!(p.of(in_block(1)), 4);
        // Given back, the counts go, and nothing is kept for them.
        for n in [1, 2, 3] {
            p.sub(in_block(n), p.of(in_block(n)));
        }
        assert!(p.is_empty());
        // The local proxy counts nowhere.
        p.add("127.0.0.1".parse().unwrap(), 100);
        assert!(p.is_empty() && p.fits("127.0.0.1".parse().unwrap(), 1000, 1));
    }

    #[test]
    fn places_are_capped_in_total_and_per_source() {
        let mut p = Places::new(5, 2);
        assert!(p.take(ip(1)) && p.take(ip(1)) && !p.take(ip(1)));
        assert!(p.take(ip(2)) && p.take(ip(2)) && p.take(ip(3)));
        assert!(!p.take(ip(4)), "the total");
        p.give_back(ip(1));
        assert!(p.take(ip(4)) && !p.take(ip(1)));
        assert_eq!(p.taken(), 5);
    }

    #[test]
    fn a_56_is_one_source_of_a_capped_table_at_twice_the_cap() {
        let t = Instant::now();
        let mut c = Capped::new(LIMITS);
        c.insert("real".into(), Source::new(ip(1), [1; 32]), (), t).unwrap();
        // Ever new /64s of one /56, ever new keys.
        for i in 0..200u8 {
            let a = IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 9, i as u16, 0, 0, 0, 1));
            c.insert(format!("v{i}"), Source::new(a, [i; 32]), (), t).unwrap();
        }
        assert_eq!(c.len(), 1 + LIMITS.per_ip * BLOCK_FACTOR);
        assert!(c.get("real", t).is_some() && c.get("v199", t).is_some());
    }

    #[test]
    fn the_local_proxy_address_is_capped_per_key_only() {
        let t = Instant::now();
        let mut c = Capped::new(LIMITS);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..10u8 {
            c.insert(format!("p{i}"), Source::new(proxy, [i; 32]), (), t).unwrap();
        }
        assert_eq!(c.len(), 10, "ten devices behind the proxy, not {}", LIMITS.per_ip);
        assert_eq!(c.insert("x".into(), Source::new(proxy, [99; 32]), (), t), Err(Full));
    }

    #[test]
    fn a_source_at_its_cap_pushes_out_only_its_own_oldest() {
        let t = Instant::now();
        let mut c = Capped::new(LIMITS);
        // A real device waiting, from its own address.
        c.insert("real".into(), Source::new(ip(1), [1; 32]), 0, t).unwrap();
        // One address with ever new keys: stays at 4, evicting its own.
        for i in 0..100u8 {
            c.insert(format!("a{i}"), Source::new(ip(2), [i + 10; 32]), i as u32, t).unwrap();
        }
        assert_eq!(c.len(), 5);
        assert!(c.get("real", t).is_some());
        assert!(c.get("a99", t).is_some() && c.get("a95", t).is_none());
        // One key from ever new addresses: stays at 2.
        for i in 0..50u8 {
            c.insert(format!("k{i}"), Source::new(ip(100 + i), [200; 32]), 0, t).unwrap();
        }
        assert_eq!(c.len(), 7);
        assert!(c.get("real", t).is_some() && c.get("k49", t).is_some() && c.get("k47", t).is_none());
    }

    #[test]
    fn a_full_table_refuses_new_sources_and_keeps_everyone_else() {
        let t = Instant::now();
        let mut c = Capped::new(LIMITS);
        for i in 0..10u8 {
            c.insert(format!("e{i}"), Source::new(ip(i), [i; 32]), (), t).unwrap();
        }
        assert_eq!(c.insert("new".into(), Source::new(ip(50), [50; 32]), (), t), Err(Full));
        assert_eq!(c.len(), 10);
        // A source that holds an entry trades its own oldest.
        c.insert("e3b".into(), Source::new(ip(3), [99; 32]), (), t).unwrap();
        assert!(c.get("e3", t).is_none() && c.get("e3b", t).is_some() && c.get("e2", t).is_some());
        // Once entries expire there is room again.
        let later = t + Duration::from_secs(61);
        c.insert("new".into(), Source::new(ip(50), [50; 32]), (), later).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn entries_are_single_use_and_expire() {
        let t = Instant::now();
        let mut c = Capped::new(LIMITS);
        c.insert("a".into(), Source::new(ip(1), [1; 32]), 7, t).unwrap();
        c.insert("b".into(), Source::new(ip(1), [2; 32]), 8, t + Duration::from_secs(30)).unwrap();
        let ages: Vec<_> =
            c.iter(t + Duration::from_secs(40)).map(|(id, age, v)| (id.to_string(), age.as_secs(), *v)).collect();
        assert_eq!(ages, [("a".to_string(), 40, 7), ("b".to_string(), 10, 8)]);
        assert_eq!(c.take("a", t), Some(7));
        assert_eq!(c.take("a", t), None, "single use");
        assert_eq!(c.take("b", t + Duration::from_secs(90)), None, "expired");
        assert!(c.is_empty());
    }
}
