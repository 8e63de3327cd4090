//! IP prefixes (`100.64.0.0/10`), as the config and the netmap write them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with a prefix length. `addr` may carry host bits (see [`Prefix::masked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError(pub String);

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PrefixError {}

impl Prefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = Self::bits_of(&addr);
        if len > max {
            return Err(PrefixError(format!("prefix length /{len} is longer than {max} bits")));
        }
        Ok(Prefix { addr, len })
    }

    fn bits_of(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
    fn bits(&self) -> u8 {
        Self::bits_of(&self.addr)
    }

    /// The address as a number in the low bits of a u128.
    pub fn to_u128(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// The inverse of [`Prefix::to_u128`] for this prefix's family.
    pub fn from_u128(&self, n: u128) -> IpAddr {
        match self.addr {
            // Truncation is the point: a v4 prefix's numbers fit in 32 bits.
            IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        }
    }

    fn mask(&self) -> u128 {
        let host_bits = (self.bits() - self.len) as u32;
        let all: u128 = if self.bits() == 32 { u32::MAX as u128 } else { u128::MAX };
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits).wrapping_sub(1))
        }
    }

    /// First address of the prefix (the network address).
    pub fn first(&self) -> u128 {
        Self::to_u128(self.addr) & self.mask()
    }

    /// Last address of the prefix (the broadcast address for v4).
    pub fn last(&self) -> u128 {
        let host_bits = (self.bits() - self.len) as u32;
        if host_bits >= 128 {
            u128::MAX
        } else {
            self.first() | (1u128 << host_bits).wrapping_sub(1)
        }
    }

    /// The same prefix with host bits cleared.
    pub fn masked(&self) -> Prefix {
        Prefix { addr: self.from_u128(self.first()), len: self.len }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && {
            let n = Self::to_u128(ip);
            n >= self.first() && n <= self.last()
        }
    }

    /// Whether `other` lies wholly inside `self`.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.is_ipv4() == self.is_ipv4() && other.len >= self.len && self.contains(other.addr)
    }

    /// Whether the two share an address (one covers the other, for CIDRs).
    pub fn overlaps(&self, other: &Prefix) -> bool {
        other.is_ipv4() == self.is_ipv4() && self.first() <= other.last() && other.first() <= self.last()
    }

    /// A single-address prefix (`/32` or `/128`), as netmaps list node addresses.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix { addr, len: Self::bits_of(&addr) }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or_else(|| {
            PrefixError(format!("{s:?} is not a prefix (expected address/length, e.g. 100.64.0.0/10)"))
        })?;
        let addr: IpAddr = a.parse().map_err(|_| PrefixError(format!("{a:?} is not an IP address")))?;
        let len: u8 = l.parse().map_err(|_| PrefixError(format!("{l:?} is not a prefix length")))?;
        Prefix::new(addr, len)
    }
}

/// As its text (`100.64.0.0/10`), the form Tailscale's JSON uses.
impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From its text; host bits are kept (see [`Prefix::masked`]).
impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_bounds() {
        let p: Prefix = "100.64.0.0/10".parse().unwrap();
        assert_eq!(p.from_u128(p.first()).to_string(), "100.64.0.0");
        assert_eq!(p.from_u128(p.last()).to_string(), "100.127.255.255");
        assert!(p.contains("100.100.100.100".parse().unwrap()));
        assert!(!p.contains("100.128.0.1".parse().unwrap()));
        assert!(!p.contains("fd7a::1".parse().unwrap()));
        let v6: Prefix = "fd7a:115c:a1e0::/48".parse().unwrap();
        assert_eq!(v6.from_u128(v6.last()).to_string(), "fd7a:115c:a1e0:ffff:ffff:ffff:ffff:ffff");
        assert!(v6.covers(&"fd7a:115c:a1e0:ab::/64".parse().unwrap()));
        assert!(!v6.covers(&"fd7a:115c::/32".parse().unwrap()));
    }

    #[test]
    fn full_and_zero_lengths() {
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.last(), u32::MAX as u128);
        let one: Prefix = "100.64.0.7/32".parse().unwrap();
        assert_eq!(one.first(), one.last());
        let all6: Prefix = "::/0".parse().unwrap();
        assert_eq!(all6.last(), u128::MAX);
        assert_eq!("100.64.0.9/24".parse::<Prefix>().unwrap().masked().to_string(), "100.64.0.0/24");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["100.64.0.0", "100.64.0.0/33", "fd7a::/129", "banana/8", "100.64.0.0/x", ""] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }
}
