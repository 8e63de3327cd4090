//! The DERP map (protocol.md §8.1). Reads Tailscale's JSON (PascalCase) and
//! Headscale's YAML `derp.paths` files (Go's yaml.v3 lower-cases the field
//! names: `regionid`, `hostname`, `stunport`, …); writes Tailscale's JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_false(v: &bool) -> bool {
    !*v
}
fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpMap {
    #[serde(rename = "Regions", alias = "regions", default)]
    pub regions: BTreeMap<i64, DerpRegion>,
    #[serde(rename = "omitDefaultRegions", alias = "omitdefaultregions", default, skip_serializing_if = "is_false")]
    pub omit_default_regions: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpRegion {
    #[serde(rename = "RegionID", alias = "regionid")]
    pub region_id: i64,
    #[serde(rename = "RegionCode", alias = "regioncode", default)]
    pub region_code: String,
    #[serde(rename = "RegionName", alias = "regionname", default)]
    pub region_name: String,
    #[serde(rename = "Avoid", alias = "avoid", default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    #[serde(rename = "NoMeasureNoHome", alias = "nomeasurenohome", default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Vec<DerpNode>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpNode {
    #[serde(rename = "Name", alias = "name", default)]
    pub name: String,
    #[serde(rename = "RegionID", alias = "regionid", default)]
    pub region_id: i64,
    #[serde(rename = "HostName", alias = "hostname", default)]
    pub host_name: String,
    #[serde(rename = "CertName", alias = "certname", default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    #[serde(rename = "IPv4", alias = "ipv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    #[serde(rename = "IPv6", alias = "ipv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    #[serde(rename = "STUNPort", alias = "stunport", default, skip_serializing_if = "is_zero")]
    pub stun_port: i64,
    #[serde(rename = "STUNOnly", alias = "stunonly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    #[serde(rename = "DERPPort", alias = "derpport", default, skip_serializing_if = "is_zero")]
    pub derp_port: i64,
    #[serde(rename = "InsecureForTests", alias = "insecurefortests", default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    #[serde(rename = "STUNTestIP", alias = "stuntestip", default, skip_serializing_if = "String::is_empty")]
    pub stun_test_ip: String,
    #[serde(rename = "CanPort80", alias = "canport80", default, skip_serializing_if = "is_false")]
    pub can_port_80: bool,
}

impl DerpMap {
    /// Adds `other`'s regions; a region id already present is replaced (the
    /// later source wins, as in Headscale).
    pub fn merge(&mut self, other: DerpMap) {
        self.regions.extend(other.regions);
        self.omit_default_regions |= other.omit_default_regions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headscale_yaml_becomes_tailscale_json() {
        let yaml = "regions:\n  900:\n    regionid: 900\n    regioncode: local\n    regionname: Local\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        ipv6: none\n        stunport: -1\n        derpport: 3340\n        insecurefortests: true\n";
        let m: DerpMap = serde_yaml::from_str(yaml).unwrap();
        let j = serde_json::to_value(&m).unwrap();
        let n = &j["Regions"]["900"]["Nodes"][0];
        assert_eq!(n["HostName"], "127.0.0.1");
        assert_eq!(n["IPv6"], "none");
        assert_eq!(n["STUNPort"], -1);
        assert_eq!(n["DERPPort"], 3340);
        assert_eq!(n["InsecureForTests"], true);
        assert_eq!(j["Regions"]["900"]["RegionCode"], "local");
        // And Tailscale's own JSON reads back the same.
        let back: DerpMap = serde_json::from_value(j).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn merge_later_wins() {
        let mut a: DerpMap = serde_json::from_str(r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"a"}}}"#).unwrap();
        let b: DerpMap =
            serde_json::from_str(r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"b"},"2":{"RegionID":2}}}"#).unwrap();
        a.merge(b);
        assert_eq!(a.regions.len(), 2);
        assert_eq!(a.regions[&1].region_code, "b");
    }
}
