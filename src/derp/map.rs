//! The DERP map clients get: the embedded relay's region (when
//! `automatically_add_embedded_derp_region`) over the `derp.paths` files over
//! the `derp.urls` documents. On a region-id clash the later source wins, so
//! the embedded region prevails, as in Headscale. Pure.

use crate::tailcfg::{DerpMap, DerpNode, DerpRegion};

/// What the embedded region's one node says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    pub region_id: i64,
    pub region_code: String,
    pub region_name: String,
    /// TLS server name and DNS name (the server_url's host).
    pub host: String,
    /// Passed through as configured (`none` included); an IP-literal host fills in when unset.
    pub ipv4: String,
    pub ipv6: String,
    pub derp_port: u16,
    /// -1 when there is no STUN listener.
    pub stun_port: i64,
    /// `sha256-raw:<hex>` for the self-signed certificate.
    pub cert_name: String,
}

pub fn region(e: &Embedded) -> DerpRegion {
    DerpRegion {
        region_id: e.region_id,
        region_code: e.region_code.clone(),
        region_name: e.region_name.clone(),
        avoid: false,
        no_measure_no_home: false,
        nodes: vec![DerpNode {
            name: format!("{}a", e.region_id),
            region_id: e.region_id,
            host_name: e.host.clone(),
            cert_name: e.cert_name.clone(),
            ipv4: e.ipv4.clone(),
            ipv6: e.ipv6.clone(),
            stun_port: e.stun_port,
            derp_port: e.derp_port as i64,
            ..Default::default()
        }],
    }
}

/// The IPv4/IPv6 of the node: the configured values, else the host itself
/// when it is an address of that family.
pub fn addresses(host: &str, ipv4: Option<&str>, ipv6: Option<&str>) -> (String, String) {
    let lit = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
    let v4 = ipv4.map(str::to_string).or_else(|| lit.filter(|a| a.is_ipv4()).map(|a| a.to_string()));
    let v6 = ipv6.map(str::to_string).or_else(|| lit.filter(|a| a.is_ipv6()).map(|a| a.to_string()));
    (v4.unwrap_or_default(), v6.unwrap_or_default())
}

pub fn assemble(from_urls: &[DerpMap], from_paths: &DerpMap, embedded: Option<DerpRegion>) -> DerpMap {
    let mut m = DerpMap::default();
    for u in from_urls {
        m.merge(u.clone());
    }
    m.merge(from_paths.clone());
    if let Some(r) = embedded {
        m.regions.insert(r.region_id, r);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded() -> Embedded {
        Embedded {
            region_id: 999,
            region_code: "home".into(),
            region_name: "Home".into(),
            host: "192.168.1.1".into(),
            ipv4: "192.168.1.1".into(),
            ipv6: "none".into(),
            derp_port: 8443,
            stun_port: 3478,
            cert_name: "sha256-raw:ab".into(),
        }
    }

    #[test]
    fn the_embedded_region_as_clients_read_it() {
        let j = serde_json::to_value(region(&embedded())).unwrap();
        let n = &j["Nodes"][0];
        assert_eq!(n["Name"], "999a");
        assert_eq!(n["HostName"], "192.168.1.1");
        assert_eq!(n["IPv6"], "none");
        assert_eq!(n["DERPPort"], 8443);
        assert_eq!(n["STUNPort"], 3478);
        assert_eq!(n["CertName"], "sha256-raw:ab");
        assert_eq!(addresses("192.168.1.1", None, None), ("192.168.1.1".into(), String::new()));
        assert_eq!(addresses("router.lan", Some("198.51.100.1"), Some("none")), ("198.51.100.1".into(), "none".into()));
        assert_eq!(addresses("[2001:db8::1]", None, None), (String::new(), "2001:db8::1".into()));
    }

    #[test]
    fn later_sources_win_and_the_embedded_region_prevails() {
        let url: DerpMap = serde_json::from_str(
            r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"url"},"999":{"RegionID":999,"RegionCode":"url"}}}"#,
        )
        .unwrap();
        let path: DerpMap = serde_json::from_str(r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"path"}}}"#).unwrap();
        let m = assemble(&[url], &path, Some(region(&embedded())));
        assert_eq!(m.regions[&1].region_code, "path");
        assert_eq!(m.regions[&999].region_code, "home");
        assert_eq!(assemble(&[], &DerpMap::default(), None).regions.len(), 0);
    }
}
