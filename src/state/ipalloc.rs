//! Address allocation from the configured prefixes. Pure: the caller passes
//! the addresses in use and, for the random strategy, a source of randomness.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::Allocation;
use crate::tailcfg::Prefix;

/// Addresses inside Tailscale's ranges that clients use for themselves.
const RESERVED: &[&str] = &[
    "100.100.100.100/32",                       // Quad-100: the in-client DNS and service address
    "100.115.92.0/23",                          // ChromeOS VMs
    "fd7a:115c:a1e0::53/128",                   // Quad-100 over IPv6
    "fd7a:115c:a1e0:b1a::/64",                  // 4via6
    "fd7a:115c:a1e0:ab12:4843:cd96:6200::/104", // 4to6
    "fd7a:115c:a1e0:efe3::/64",                 // ephemeral
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFull {
    pub prefix: Prefix,
}

impl std::fmt::Display for PoolFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no free address left in {} (delete a node or widen the prefix)", self.prefix)
    }
}

/// The end of the reserved range containing `n`, if any.
fn reserved_end(prefix: &Prefix, n: u128) -> Option<u128> {
    let ip = prefix.from_u128(n);
    RESERVED.iter().filter_map(|r| r.parse::<Prefix>().ok()).find(|r| r.contains(ip)).map(|r| r.last())
}

/// Picks a free address in `prefix`: the lowest free one (`Sequential`, which
/// reuses addresses of deleted nodes) or one from a random starting point.
/// The network and last addresses and Tailscale's reserved ones are never given.
pub fn allocate(
    prefix: &Prefix,
    strategy: Allocation,
    used: &BTreeSet<IpAddr>,
    random: &mut dyn FnMut() -> u128,
) -> Result<IpAddr, PoolFull> {
    let full = || PoolFull { prefix: *prefix };
    let (lo, hi) = (prefix.first() + 1, prefix.last().saturating_sub(1));
    if hi < lo {
        return Err(full());
    }
    let start = match strategy {
        Allocation::Sequential => lo,
        Allocation::Random => lo + random() % (hi - lo + 1),
    };
    // Visit every candidate once, upwards from `start`, wrapping to `lo`.
    let span = hi - lo + 1;
    let (mut c, mut visited) = (start, 0u128);
    while visited < span {
        let step = match reserved_end(prefix, c) {
            Some(end) => end.min(hi) - c + 1,
            None if used.contains(&prefix.from_u128(c)) => 1,
            None => return Ok(prefix.from_u128(c)),
        };
        visited += step;
        c = if c + step > hi { lo } else { c + step };
    }
    Err(full())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }
    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }
    fn seq(prefix: &str, used: &[&str]) -> Result<String, PoolFull> {
        allocate(&p(prefix), Allocation::Sequential, &set(used), &mut || 0).map(|ip| ip.to_string())
    }

    #[test]
    fn sequential_fills_from_the_bottom_and_reuses_holes() {
        assert_eq!(seq("100.64.0.0/10", &[]).unwrap(), "100.64.0.1");
        assert_eq!(seq("100.64.0.0/10", &["100.64.0.1", "100.64.0.2"]).unwrap(), "100.64.0.3");
        // The address of a deleted node is given again.
        assert_eq!(seq("100.64.0.0/10", &["100.64.0.1", "100.64.0.3"]).unwrap(), "100.64.0.2");
        assert_eq!(seq("fd7a:115c:a1e0::/48", &[]).unwrap(), "fd7a:115c:a1e0::1");
    }

    #[test]
    fn a_full_pool_is_a_clean_error() {
        // /30: .0 network, .3 last, so two usable.
        assert_eq!(seq("100.64.0.0/30", &["100.64.0.1"]).unwrap(), "100.64.0.2");
        let e = seq("100.64.0.0/30", &["100.64.0.1", "100.64.0.2"]).unwrap_err();
        assert_eq!(e.to_string(), "no free address left in 100.64.0.0/30 (delete a node or widen the prefix)");
        assert!(seq("100.64.0.0/31", &[]).is_err());
        assert!(seq("100.64.0.7/32", &[]).is_err());
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        assert_eq!(seq("100.100.100.100/30", &["100.100.100.99"]).unwrap(), "100.100.100.101");
        assert!(seq("100.100.100.100/30", &["100.100.100.101", "100.100.100.102"]).is_err());
        assert_eq!(seq("100.115.92.0/22", &[]).unwrap(), "100.115.94.0");
        assert_eq!(
            seq("fd7a:115c:a1e0::50/125", &["fd7a:115c:a1e0::51", "fd7a:115c:a1e0::52"]).unwrap(),
            "fd7a:115c:a1e0::54"
        );
    }

    #[test]
    fn random_wraps_and_detects_a_full_pool() {
        let pre = p("100.64.0.0/29"); // usable .1 ..= .6
        let mut used = set(&[]);
        let mut r = 4u128;
        for _ in 0..6 {
            let ip = allocate(&pre, Allocation::Random, &used, &mut || r).unwrap();
            assert!(used.insert(ip), "{ip} given twice");
            r = r * 7 + 3;
        }
        assert_eq!(used.len(), 6);
        assert!(allocate(&pre, Allocation::Random, &used, &mut || 2).is_err());
        // Starting beyond the last free address wraps to the bottom.
        let used = set(&["100.64.0.4", "100.64.0.5", "100.64.0.6"]);
        assert_eq!(allocate(&pre, Allocation::Random, &used, &mut || 3).unwrap().to_string(), "100.64.0.1");
    }
}
