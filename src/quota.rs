//! Per-source quotas for what anyone on the internet can make the server
//! hold: the key an address is counted under, and a capped, expiring table
//! in which a source can only ever push out its own entries.
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
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    };
    (ip != IpAddr::from(Ipv4Addr::LOCALHOST) && ip != IpAddr::from(Ipv6Addr::LOCALHOST)).then_some(ip)
}

/// Who an entry is charged to: the address it came from and the key
/// (machine key) it is for. Both are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    ip: Option<IpAddr>,
    key: [u8; 32],
}

impl Source {
    pub fn new(ip: IpAddr, key: [u8; 32]) -> Source {
        Source { ip: source_key(ip), key }
    }
}

/// How much a [`Capped`] table holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries at once, all sources together.
    pub total: usize,
    /// Entries one address (or IPv6 /64) may hold.
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
/// someone else.
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
