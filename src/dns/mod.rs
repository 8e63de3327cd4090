//! The DNS configuration clients get (protocol.md §10), from the `dns:`
//! section as Headscale reads it: MagicDNS names under `base_domain`, global
//! nameservers as resolvers (overriding the device's own, or as fallback),
//! split DNS routes, search domains and extra records (`records`, which
//! may come from a watched file and change while clients are connected).

pub mod records;

use std::net::{IpAddr, SocketAddr};

use crate::config::Dns;
use crate::tailcfg::{DnsConfig, DnsRecord, Resolver};

/// The config's DNS for clients, with `extra_records` (the config's own,
/// or the records file's when `extra_records_path` is set).
pub fn client_config(dns: &Dns, extra_records: Vec<DnsRecord>) -> DnsConfig {
    let resolvers: Vec<Resolver> = dns.nameservers_global.iter().map(|a| Resolver { addr: a.clone() }).collect();
    let (resolvers, fallback_resolvers) =
        if dns.override_local_dns { (resolvers, Vec::new()) } else { (Vec::new(), resolvers) };
    let mut domains = Vec::new();
    if dns.magic_dns && !dns.base_domain.is_empty() {
        domains.push(dns.base_domain.clone());
    }
    domains.extend(dns.search_domains.iter().filter(|d| **d != dns.base_domain).cloned());
    DnsConfig {
        resolvers,
        routes: dns
            .nameservers_split
            .iter()
            .map(|(d, ns)| {
                (format!("{}.", d.trim_end_matches('.')), ns.iter().map(|a| Resolver { addr: a.clone() }).collect())
            })
            .collect(),
        fallback_resolvers,
        domains,
        proxied: dns.magic_dns,
        extra_records,
    }
}

/// A domain name as configs and records give it, without the trailing dot.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether a client can use `ns` as a resolver's address: an IP, an
/// `IP:port`, or a DNS-over-HTTPS URL (Tailscale's `dnstype.Resolver`).
pub fn check_nameserver(ns: &str) -> Result<(), String> {
    if ns.parse::<IpAddr>().is_ok() || ns.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some(rest) = ns.strip_prefix("https://") else {
        return Err(format!("{ns:?} is not an IP address, IP:port or DNS-over-HTTPS (https://) URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if valid_domain(bare) || bare.parse::<IpAddr>().is_ok() {
        if ns.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(format!("{ns:?} holds a space or control character"));
        }
        Ok(())
    } else {
        Err(format!("{ns:?} names no host a DNS-over-HTTPS client can reach"))
    }
}

/// A node's MagicDNS name, with the trailing dot clients expect.
pub fn fqdn(given_name: &str, base_domain: &str) -> String {
    if base_domain.is_empty() {
        format!("{given_name}.")
    } else {
        format!("{given_name}.{base_domain}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns() -> Dns {
        Dns {
            magic_dns: true,
            base_domain: "tailnet.internal".into(),
            override_local_dns: true,
            nameservers_global: vec!["1.1.1.1".into()],
            nameservers_split: [("corp.example".to_string(), vec!["10.0.0.53".to_string()])].into(),
            search_domains: vec!["lan".into()],
            extra_records: Vec::new(),
            extra_records_path: None,
        }
    }

    fn records() -> Vec<DnsRecord> {
        vec![DnsRecord { name: "nas.tailnet.internal".into(), kind: "A".into(), value: "100.64.0.9".into() }]
    }

    #[test]
    fn headscale_shapes() {
        let j = serde_json::to_value(client_config(&dns(), records())).unwrap();
        assert_eq!(j["Resolvers"], serde_json::json!([{"Addr": "1.1.1.1"}]));
        assert_eq!(j["Routes"]["corp.example."], serde_json::json!([{"Addr": "10.0.0.53"}]));
        assert_eq!(j["Domains"], serde_json::json!(["tailnet.internal", "lan"]));
        assert_eq!(j["Proxied"], true);
        assert_eq!(j["ExtraRecords"][0]["Value"], "100.64.0.9");
        let mut d = dns();
        d.override_local_dns = false;
        let c = client_config(&d, Vec::new());
        assert!(c.resolvers.is_empty() && c.fallback_resolvers.len() == 1);
        assert_eq!(fqdn("laptop", "tailnet.internal"), "laptop.tailnet.internal.");
    }

    #[test]
    fn nameservers_clients_can_use() {
        for ok in [
            "1.1.1.1",
            "2606:4700::1111",
            "192.168.1.1:5353",
            "[fd00::1]:53",
            "https://dns.nextdns.io/abc123",
            "https://1.1.1.1/dns-query",
            "https://doh.example:8443/q",
        ] {
            assert_eq!(check_nameserver(ok), Ok(()), "{ok}");
        }
        for bad in
            ["dns.google", "https://", "https:///x", "https://a b/", "tls://1.1.1.1", "http://x", "1.1.1.1:99999"]
        {
            assert!(check_nameserver(bad).is_err(), "{bad}");
        }
    }
}
