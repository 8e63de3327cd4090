//! Sets of IP addresses as sorted, merged ranges: what an alias resolves to,
//! and the text forms Tailscale's control plane writes for them (a bare
//! address, a CIDR where a range is exactly one, else `first-last`).

use std::net::IpAddr;

use crate::tailcfg::Prefix;

/// Inclusive ranges of one family, sorted and merged (no two touch).
type Ranges = Vec<(u128, u128)>;

#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub(super) struct IpSet {
    v4: Ranges,
    v6: Ranges,
}

const V4_MAX: u128 = u32::MAX as u128;

fn bounds(p: &Prefix) -> (u128, u128) {
    (p.first(), p.last())
}

/// Sorts and merges overlapping or adjacent ranges in place.
fn normalize(v: &mut Ranges) {
    v.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(v.len());
    for &(a, b) in v.iter() {
        match out.last_mut() {
            // `b0 == u128::MAX` cannot be extended further; `+ 1` would overflow.
            Some((_, b0)) if *b0 == u128::MAX || a <= *b0 + 1 => *b0 = (*b0).max(b),
            _ => out.push((a, b)),
        }
    }
    *v = out;
}

/// The index of the first range that ends at or after `x`.
fn first_ending_at_or_after(v: &Ranges, x: u128) -> usize {
    v.partition_point(|&(_, b)| b < x)
}

fn overlaps(v: &Ranges, a: u128, b: u128) -> bool {
    let i = first_ending_at_or_after(v, a);
    v.get(i).is_some_and(|&(s, _)| s <= b)
}

fn covers(v: &Ranges, a: u128, b: u128) -> bool {
    let i = first_ending_at_or_after(v, a);
    v.get(i).is_some_and(|&(s, e)| s <= a && e >= b)
}

impl IpSet {
    pub fn new() -> IpSet {
        IpSet::default()
    }

    fn family(&self, v4: bool) -> &Ranges {
        if v4 {
            &self.v4
        } else {
            &self.v6
        }
    }

    /// A set of the given prefixes.
    pub fn of_prefixes<'a>(prefixes: impl IntoIterator<Item = &'a Prefix>) -> IpSet {
        let mut s = IpSet::new();
        for p in prefixes {
            let r = bounds(p);
            if p.is_ipv4() {
                s.v4.push(r)
            } else {
                s.v6.push(r)
            }
        }
        normalize(&mut s.v4);
        normalize(&mut s.v6);
        s
    }

    /// A set of single addresses.
    pub fn of_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> IpSet {
        let mut s = IpSet::new();
        for a in addrs {
            let n = Prefix::to_u128(a);
            if a.is_ipv4() {
                s.v4.push((n, n))
            } else {
                s.v6.push((n, n))
            }
        }
        normalize(&mut s.v4);
        normalize(&mut s.v6);
        s
    }

    /// Both families whole: `autogroup:danger-all`, and a filter's `*`.
    pub fn everything() -> IpSet {
        IpSet { v4: vec![(0, V4_MAX)], v6: vec![(0, u128::MAX)] }
    }

    pub fn union(&self, other: &IpSet) -> IpSet {
        let mut v4 = self.v4.clone();
        v4.extend_from_slice(&other.v4);
        let mut v6 = self.v6.clone();
        v6.extend_from_slice(&other.v6);
        normalize(&mut v4);
        normalize(&mut v6);
        IpSet { v4, v6 }
    }

    /// Adds every set at once (one sort instead of one per set).
    pub fn union_all<'a>(sets: impl IntoIterator<Item = &'a IpSet>) -> IpSet {
        let mut out = IpSet::new();
        for s in sets {
            out.v4.extend_from_slice(&s.v4);
            out.v6.extend_from_slice(&s.v6);
        }
        normalize(&mut out.v4);
        normalize(&mut out.v6);
        out
    }

    pub fn without(&self, p: &Prefix) -> IpSet {
        let (a, b) = bounds(p);
        let cut = |v: &Ranges| -> Ranges {
            let mut out = Vec::with_capacity(v.len() + 1);
            for &(s, e) in v {
                if e < a || s > b {
                    out.push((s, e));
                    continue;
                }
                if s < a {
                    out.push((s, a - 1));
                }
                if e > b {
                    out.push((b + 1, e));
                }
            }
            out
        };
        let mut out = self.clone();
        if p.is_ipv4() {
            out.v4 = cut(&self.v4);
        } else {
            out.v6 = cut(&self.v6);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let n = Prefix::to_u128(ip);
        covers(self.family(ip.is_ipv4()), n, n)
    }

    pub fn overlaps_prefix(&self, p: &Prefix) -> bool {
        let (a, b) = bounds(p);
        overlaps(self.family(p.is_ipv4()), a, b)
    }

    pub fn covers_prefix(&self, p: &Prefix) -> bool {
        let (a, b) = bounds(p);
        covers(self.family(p.is_ipv4()), a, b)
    }

    pub fn overlaps(&self, other: &IpSet) -> bool {
        other.v4.iter().any(|&(a, b)| overlaps(&self.v4, a, b))
            || other.v6.iter().any(|&(a, b)| overlaps(&self.v6, a, b))
    }

    /// Whether every address of `self` is in `other`.
    pub fn is_subset_of(&self, other: &IpSet) -> bool {
        self.v4.iter().all(|&(a, b)| covers(&other.v4, a, b)) && self.v6.iter().all(|&(a, b)| covers(&other.v6, a, b))
    }

    /// The text forms, IPv4 first, each range as Tailscale writes it.
    pub fn strings(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.v4.len() + self.v6.len());
        for (v4, ranges) in [(true, &self.v4), (false, &self.v6)] {
            for &(a, b) in ranges {
                out.push(range_text(v4, a, b));
            }
        }
        out
    }

    /// The fewest CIDRs covering exactly the set, IPv4 first.
    pub fn prefixes(&self) -> Vec<Prefix> {
        let mut out = Vec::new();
        for (v4, ranges) in [(true, &self.v4), (false, &self.v6)] {
            for &(a, b) in ranges {
                range_prefixes(v4, a, b, &mut out);
            }
        }
        out
    }
}

fn bits(v4: bool) -> u32 {
    if v4 {
        32
    } else {
        128
    }
}

fn addr(v4: bool, n: u128) -> IpAddr {
    if v4 {
        // A v4 range's numbers fit in 32 bits (they came from to_u128 of a v4 address).
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

fn prefix(v4: bool, n: u128, len: u32) -> Prefix {
    // len <= bits(v4) by construction in the callers.
    Prefix::new(addr(v4, n), len as u8).unwrap_or_else(|_| Prefix::host(addr(v4, n)))
}

/// The prefix length if `[a, b]` is exactly one CIDR block.
fn exact_prefix(v4: bool, a: u128, b: u128) -> Option<u32> {
    let width = bits(v4);
    let max = if v4 { V4_MAX } else { u128::MAX };
    if a == 0 && b == max {
        return Some(0);
    }
    let size = b.wrapping_sub(a).wrapping_add(1);
    (size.is_power_of_two() && a & (size - 1) == 0).then(|| width - size.trailing_zeros())
}

fn range_text(v4: bool, a: u128, b: u128) -> String {
    if a == b {
        return addr(v4, a).to_string();
    }
    match exact_prefix(v4, a, b) {
        Some(len) => format!("{}/{len}", addr(v4, a)),
        None => format!("{}-{}", addr(v4, a), addr(v4, b)),
    }
}

fn range_prefixes(v4: bool, mut a: u128, b: u128, out: &mut Vec<Prefix>) {
    let width = bits(v4);
    if let Some(len) = exact_prefix(v4, a, b) {
        out.push(prefix(v4, a, len));
        return;
    }
    loop {
        // The largest block that starts at `a` (alignment) and ends by `b`.
        let align = if a == 0 { width } else { a.trailing_zeros().min(width) };
        let span = b - a;
        // floor(log2(span + 1)) without overflowing at span == u128::MAX
        // (ruled out above: a whole family is an exact prefix).
        let fit = 127 - (span + 1).leading_zeros();
        let k = align.min(fit);
        out.push(prefix(v4, a, width - k));
        let end = a + ((1u128 << k) - 1);
        if end >= b {
            return;
        }
        a = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn text_forms_follow_tailscale() {
        let wildcard =
            IpSet::of_prefixes(&[p("100.64.0.0/10"), p("fd7a:115c:a1e0::/48")]).without(&p("100.115.92.0/23"));
        assert_eq!(
            wildcard.strings(),
            ["100.64.0.0-100.115.91.255", "100.115.94.0-100.127.255.255", "fd7a:115c:a1e0::/48"]
        );
        let s = IpSet::of_addrs(["100.64.0.1".parse().unwrap(), "fd7a:115c:a1e0::1".parse().unwrap()]);
        assert_eq!(s.strings(), ["100.64.0.1", "fd7a:115c:a1e0::1"]);
        assert_eq!(IpSet::everything().strings(), ["0.0.0.0/0", "::/0"]);
        let pair = IpSet::of_addrs(["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()]);
        assert_eq!(pair.strings(), ["10.0.0.2/31"]);
    }

    #[test]
    fn prefixes_cover_ranges_exactly() {
        let wildcard = IpSet::of_prefixes(&[p("100.64.0.0/10")]).without(&p("100.115.92.0/23"));
        let ps = wildcard.prefixes();
        assert_eq!(IpSet::of_prefixes(&ps), wildcard);
        assert!(ps.iter().all(|x| x.masked() == *x));
        assert_eq!(IpSet::everything().prefixes(), [p("0.0.0.0/0"), p("::/0")]);
        let odd = IpSet::of_addrs(["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(odd.prefixes(), [p("10.0.0.1/32"), p("10.0.0.2/32")]);
    }

    /// Random sets of both families: the CIDRs cover each set exactly, and
    /// every text form reads back as what it stands for.
    #[test]
    fn prefixes_and_texts_round_trip() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut ps = Vec::new();
            for _ in 0..(next() % 6 + 1) {
                let v4 = next() % 2 == 0;
                let (bits, addr): (u8, std::net::IpAddr) = if v4 {
                    (32, std::net::Ipv4Addr::from(next() as u32).into())
                } else {
                    (128, std::net::Ipv6Addr::from(((next() as u128) << 64) | next() as u128).into())
                };
                ps.push(Prefix::new(addr, (next() % (bits as u64 + 1)) as u8).unwrap().masked());
            }
            let mut set = IpSet::of_prefixes(&ps);
            if next() % 2 == 0 {
                set = set.without(&ps[0].masked());
            }
            let back = IpSet::of_prefixes(&set.prefixes());
            assert_eq!(back, set, "{ps:?}");
            for t in set.strings() {
                let part = match t.split_once('-') {
                    Some((a, b)) => {
                        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
                        assert!(a < b, "{t}");
                        IpSet::of_addrs([a, b])
                    }
                    None if t.contains('/') => IpSet::of_prefixes(&[p(&t)]),
                    None => IpSet::of_addrs([t.parse().unwrap()]),
                };
                assert!(part.is_subset_of(&set), "{t} in {:?}", set.strings());
            }
        }
    }

    #[test]
    fn membership_and_overlap() {
        let s = IpSet::of_prefixes(&[p("10.0.0.0/8"), p("192.168.1.0/24")]);
        assert!(s.contains("10.1.2.3".parse().unwrap()));
        assert!(!s.contains("11.0.0.0".parse().unwrap()));
        assert!(s.overlaps_prefix(&p("10.33.0.0/16")));
        assert!(s.overlaps_prefix(&p("0.0.0.0/0")));
        assert!(!s.overlaps_prefix(&p("::/0")));
        assert!(s.covers_prefix(&p("10.33.0.0/16")));
        assert!(!s.covers_prefix(&p("192.168.0.0/16")));
        assert!(IpSet::of_prefixes(&[p("10.33.0.0/16")]).is_subset_of(&s));
        assert!(!s.is_subset_of(&IpSet::of_prefixes(&[p("10.0.0.0/8")])));
        let edge = IpSet::of_prefixes(&[p("::/0")]).without(&p("::/1"));
        assert_eq!(edge.strings(), ["8000::/1"]);
    }
}
