//! The small languages inside a policy's strings: aliases (`tag:x`,
//! `group:y`, `alice@`, `10.0.0.0/8`, `autogroup:member`, `*`, a host name),
//! `alias:ports` destinations, port lists and ranges, and protocols.
//! Pure text to tokens; whether a name exists is `syntax`'s business.

use std::net::IpAddr;

use crate::tailcfg::{PortRange, Prefix};

/// An alias as written, before its name is looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token {
    Any,
    /// An email, or a user name with a trailing `@`, as Headscale accepts.
    User(String),
    Group(String),
    Tag(String),
    AutoGroup(String),
    Host(String),
    Prefix(Prefix),
}

/// Parses one alias (already trimmed).
pub(super) fn token(s: &str) -> Result<Token, String> {
    if let Some(p) = ip_or_prefix(s) {
        return no_host_bits(s, p).map(Token::Prefix);
    }
    if s == "*" {
        return Ok(Token::Any);
    }
    if s.contains('@') {
        return Ok(Token::User(s.to_string()));
    }
    if let Some(rest) = s.strip_prefix("group:") {
        return if rest.is_empty() {
            Err("a group needs a name after \"group:\"".into())
        } else {
            Ok(Token::Group(s.into()))
        };
    }
    if s.starts_with("tag:") {
        return Ok(Token::Tag(s.into()));
    }
    if s.starts_with("autogroup:") {
        return Ok(Token::AutoGroup(s.into()));
    }
    if s.is_empty() {
        return Err("an empty alias".into());
    }
    if !s.contains(':') && !s.contains('/') && !s.chars().any(char::is_whitespace) {
        return Ok(Token::Host(s.into()));
    }
    if s.contains('/') {
        return Err(format!("{s:?} is not a valid CIDR"));
    }
    Err(format!("{s:?} is not a user, group:, tag:, autogroup:, host name, IP or CIDR"))
}

/// An address (as a /32 or /128) or a CIDR; `None` if `s` is neither.
pub(super) fn ip_or_prefix(s: &str) -> Option<Prefix> {
    if s.contains('/') {
        let (a, len) = s.split_once('/')?;
        // Go's netip refuses "/08"; a length is plain digits.
        if len.is_empty()
            || len.len() > 3
            || !len.bytes().all(|b| b.is_ascii_digit())
            || (len.len() > 1 && len.starts_with('0'))
        {
            return None;
        }
        let addr: IpAddr = a.parse().ok()?;
        Prefix::new(addr, len.parse().ok()?).ok()
    } else {
        s.parse::<IpAddr>().ok().map(Prefix::host)
    }
}

/// Refuses a CIDR with bits set past its length (`100.64.0.2/8`): it stands
/// for the whole /8, which is seldom what was meant, and Go's netip keeps
/// the address as written, so the writer would not learn of the widening.
pub(super) fn no_host_bits(s: &str, p: Prefix) -> Result<Prefix, String> {
    if p == p.masked() {
        return Ok(p);
    }
    Err(format!(
        "{s:?} has bits set past its /{}: write {} for the network, or {} alone for one address",
        p.prefix_len(),
        p.masked(),
        p.addr()
    ))
}

/// Splits `alias:ports` at the last colon; `[v6]:port` and `[v6]/len:port`
/// are accepted too.
pub(super) fn split_host_port(input: &str) -> Result<(String, String), String> {
    let Some(rest) = input.strip_prefix('[') else {
        let (h, p) = split_at_last_colon(input)?;
        return Ok((h.to_string(), p.to_string()));
    };
    let close = rest.find(']').ok_or("square brackets are only valid around IPv6 addresses")?;
    let host = &rest[..close];
    if !matches!(host.parse::<IpAddr>(), Ok(IpAddr::V6(_))) {
        return Err(format!("square brackets are only valid around IPv6 addresses: {host:?}"));
    }
    let after = &rest[close + 1..];
    if !after.starts_with(':') && !after.starts_with('/') {
        return Err(format!("square brackets are only valid around IPv6 addresses: {input:?}"));
    }
    // Without the brackets the last colon still separates the ports: ports
    // never contain one.
    let bare = format!("{host}{after}");
    let (h, p) = split_at_last_colon(&bare)?;
    Ok((h.to_string(), p.to_string()))
}

fn split_at_last_colon(s: &str) -> Result<(&str, &str), String> {
    match s.rfind(':') {
        None => Err("a destination must be written alias:ports (e.g. tag:server:22 or host:*)".into()),
        Some(0) => Err("a destination cannot start with ':'".into()),
        Some(i) if i == s.len() - 1 => Err("a destination cannot end with ':' (add the ports, or *)".into()),
        Some(i) => Ok((&s[..i], &s[i + 1..])),
    }
}

pub(super) const ALL_PORTS: PortRange = PortRange { first: 0, last: 65535 };

/// Parses `*`, `22`, `80,443`, `8000-8999` (and lists of them). Errors use
/// Tailscale's words (`invalid first integer`, ...), without the context.
pub(super) fn ports(def: &str) -> Result<Vec<PortRange>, String> {
    if def == "*" {
        return Ok(vec![ALL_PORTS]);
    }
    let mut out = Vec::new();
    for part in def.split(',') {
        if let Some((first, last)) = part.split_once('-') {
            // Exactly `first-last`: `--80--90--` is a typo, not a range.
            if first.is_empty() || last.is_empty() || last.contains('-') {
                return Err("invalid port range format".into());
            }
            let (first, last) = (port(first)?, port(last)?);
            if first > last {
                return Err("invalid port range: first port is greater than last port".into());
            }
            out.push(PortRange { first, last });
        } else {
            let p = port(part)?;
            if p < 1 {
                return Err("first port must be >0, or use '*' for wildcard".into());
            }
            out.push(PortRange { first: p, last: p });
        }
    }
    Ok(out)
}

/// Sorted, with overlapping and adjacent ranges joined: the same ports,
/// each listed once, so a rule written `22,22,22,...` expands to one entry
/// per destination, not thousands.
pub(super) fn normalize_ports(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => last.last = last.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

fn port(s: &str) -> Result<u16, String> {
    // Go's Atoi takes an optional sign; a number too big for u16 is out of range.
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if s.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
            "port number out of range".into()
        } else {
            "invalid first integer".into()
        });
    }
    digits.parse::<u16>().map_err(|_| "port number out of range".to_string())
}

/// IANA protocol numbers of the names Tailscale knows.
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("fc", 133),
];

/// A protocol name or number as the filter's `IPProto` (empty: the
/// client's default of TCP, UDP and ICMP).
pub(super) fn protocol(s: &str) -> Result<Vec<u8>, String> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(&(_, n)) = PROTOCOLS.iter().find(|(name, _)| *name == lower) {
        return Ok(vec![n]);
    }
    if lower == "*" {
        return Err(
            "proto name \"*\" not known; use protocol number 0-255 or protocol name (icmp, tcp, udp, etc.)".into()
        );
    }
    if lower.bytes().all(|b| b.is_ascii_digit()) {
        if lower.starts_with('0') {
            return Err(format!("leading 0 not permitted in protocol number: {s:?}"));
        }
        return match lower.parse::<u16>() {
            Ok(n @ 1..=255) => Ok(vec![n as u8]),
            _ => Err(format!("protocol number out of range (0-255): {s}")),
        };
    }
    Err(format!("invalid protocol number: {s:?} must be a known protocol name or valid protocol number 0-255"))
}

/// Whether specific ports make sense for these protocols (TCP, UDP, SCTP,
/// or the default set).
pub(super) fn has_ports(proto: &[u8]) -> bool {
    proto.is_empty() || matches!(proto, [6] | [17] | [132])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        assert_eq!(token("*"), Ok(Token::Any));
        assert_eq!(token("alice@"), Ok(Token::User("alice@".into())));
        assert_eq!(token("odin@example.com"), Ok(Token::User("odin@example.com".into())));
        assert_eq!(token("tag:server"), Ok(Token::Tag("tag:server".into())));
        assert_eq!(token("group:a"), Ok(Token::Group("group:a".into())));
        assert_eq!(token("autogroup:self"), Ok(Token::AutoGroup("autogroup:self".into())));
        assert_eq!(token("nas"), Ok(Token::Host("nas".into())));
        assert_eq!(token("100.64.0.1"), Ok(Token::Prefix("100.64.0.1/32".parse().unwrap())));
        assert_eq!(token("fd00:1::/64"), Ok(Token::Prefix("fd00:1::/64".parse().unwrap())));
        assert!(token("10.0.0.0/33").unwrap_err().contains("not a valid CIDR"));
        assert!(token("10.0.0.0/08").is_err());
        assert!(token("a:b").is_err());
        assert!(token("").is_err());
    }

    #[test]
    fn destinations() {
        let split = |s: &str| split_host_port(s).map(|(a, b)| format!("{a} {b}"));
        assert_eq!(split("tag:server:22"), Ok("tag:server 22".into()));
        assert_eq!(split("fd00:1::/64:443"), Ok("fd00:1::/64 443".into()));
        assert_eq!(split("[fd7a::1]:80"), Ok("fd7a::1 80".into()));
        assert_eq!(split("[fd7a::1]/128:80,443"), Ok("fd7a::1/128 80,443".into()));
        assert!(split_host_port("[10.0.0.1]:80").is_err());
        assert!(split_host_port("nas").is_err());
        assert!(split_host_port("nas:").is_err());
    }

    #[test]
    fn port_lists() {
        assert_eq!(ports("*"), Ok(vec![ALL_PORTS]));
        assert_eq!(ports("22,80-443"), Ok(vec![PortRange { first: 22, last: 22 }, PortRange { first: 80, last: 443 }]));
        assert_eq!(ports("ssh").unwrap_err(), "invalid first integer");
        assert_eq!(ports("0").unwrap_err(), "first port must be >0, or use '*' for wildcard");
        assert_eq!(ports("70000").unwrap_err(), "port number out of range");
        assert!(ports("443-80").is_err());
        assert!(ports("1-2-3").is_err());
        assert_eq!(ports("--80--90--").unwrap_err(), "invalid port range format");
        assert_eq!(ports("80-").unwrap_err(), "invalid port range format");
        assert!(ports("").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol("tcp"), Ok(vec![6]));
        assert_eq!(protocol("UDP"), Ok(vec![17]));
        assert_eq!(protocol("58"), Ok(vec![58]));
        assert_eq!(protocol(""), Ok(vec![]));
        assert!(protocol("*").is_err());
        assert!(protocol("07").is_err());
        assert!(protocol("256").is_err());
        assert!(protocol("bogus").is_err());
    }
}
