//! The DNS configuration clients get (protocol.md §10), from the `dns:`
//! section as Headscale reads it: MagicDNS names under `base_domain`, global
//! nameservers as resolvers (overriding the device's own, or as fallback),
//! split DNS routes, search domains and extra records.

use crate::config::Dns;
use crate::tailcfg::{DnsConfig, DnsRecord, Resolver};

pub fn client_config(dns: &Dns) -> DnsConfig {
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
        extra_records: dns
            .extra_records
            .iter()
            .map(|r| DnsRecord { name: r.name.clone(), kind: r.kind.clone(), value: r.value.clone() })
            .collect(),
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
    use crate::config::ExtraRecord;

    fn dns() -> Dns {
        Dns {
            magic_dns: true,
            base_domain: "tailnet.internal".into(),
            override_local_dns: true,
            nameservers_global: vec!["1.1.1.1".into()],
            nameservers_split: [("corp.example".to_string(), vec!["10.0.0.53".to_string()])].into(),
            search_domains: vec!["lan".into()],
            extra_records: vec![ExtraRecord {
                name: "nas.tailnet.internal".into(),
                kind: "A".into(),
                value: "100.64.0.9".into(),
            }],
            extra_records_path: None,
        }
    }

    #[test]
    fn headscale_shapes() {
        let j = serde_json::to_value(client_config(&dns())).unwrap();
        assert_eq!(j["Resolvers"], serde_json::json!([{"Addr": "1.1.1.1"}]));
        assert_eq!(j["Routes"]["corp.example."], serde_json::json!([{"Addr": "10.0.0.53"}]));
        assert_eq!(j["Domains"], serde_json::json!(["tailnet.internal", "lan"]));
        assert_eq!(j["Proxied"], true);
        assert_eq!(j["ExtraRecords"][0]["Value"], "100.64.0.9");
        let mut d = dns();
        d.override_local_dns = false;
        let c = client_config(&d);
        assert!(c.resolvers.is_empty() && c.fallback_resolvers.len() == 1);
        assert_eq!(fqdn("laptop", "tailnet.internal"), "laptop.tailnet.internal.");
    }
}
