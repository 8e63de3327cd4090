//! The DERP map (protocol.md §8.1). Reads Tailscale's JSON (PascalCase) and
//! Headscale's YAML `derp.paths` files (Go's yaml.v3 lower-cases the field
//! names: `regionid`, `hostname`, `stunport`, …); writes Tailscale's JSON.

use std::collections::BTreeMap;

use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};

fn is_false(v: &bool) -> bool {
    !*v
}
fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A map or list given as null (`regions:` with nothing under it) is empty,
/// as in Go's yaml.v3 and encoding/json.
fn null_is_empty<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A text field takes any scalar, as Go's yaml.v3 does: `name: 1` is "1",
/// `true` is "true", and null (`certname:` with no value) is "".
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E>(self, s: &str) -> Result<String, E> {
            Ok(s.to_string())
        }
        fn visit_string<E>(self, s: String) -> Result<String, E> {
            Ok(s)
        }
        fn visit_bool<E>(self, b: bool) -> Result<String, E> {
            Ok(b.to_string())
        }
        fn visit_i64<E>(self, n: i64) -> Result<String, E> {
            Ok(n.to_string())
        }
        fn visit_u64<E>(self, n: u64) -> Result<String, E> {
            Ok(n.to_string())
        }
        fn visit_f64<E>(self, f: f64) -> Result<String, E> {
            Ok(serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string()))
        }
        fn visit_unit<E>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(Text)
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpMap {
    #[serde(rename = "Regions", alias = "regions", default, deserialize_with = "null_is_empty")]
    pub regions: BTreeMap<i64, DerpRegion>,
    #[serde(rename = "omitDefaultRegions", alias = "omitdefaultregions", default, skip_serializing_if = "is_false")]
    pub omit_default_regions: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpRegion {
    #[serde(rename = "RegionID", alias = "regionid")]
    pub region_id: i64,
    #[serde(rename = "RegionCode", alias = "regioncode", default, deserialize_with = "text")]
    pub region_code: String,
    #[serde(rename = "RegionName", alias = "regionname", default, deserialize_with = "text")]
    pub region_name: String,
    #[serde(rename = "Avoid", alias = "avoid", default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    #[serde(rename = "NoMeasureNoHome", alias = "nomeasurenohome", default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    #[serde(rename = "Nodes", alias = "nodes", default, deserialize_with = "null_is_empty")]
    pub nodes: Vec<DerpNode>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DerpNode {
    #[serde(rename = "Name", alias = "name", default, deserialize_with = "text")]
    pub name: String,
    #[serde(rename = "RegionID", alias = "regionid", default)]
    pub region_id: i64,
    #[serde(rename = "HostName", alias = "hostname", default, deserialize_with = "text")]
    pub host_name: String,
    #[serde(
        rename = "CertName",
        alias = "certname",
        default,
        deserialize_with = "text",
        skip_serializing_if = "String::is_empty"
    )]
    pub cert_name: String,
    #[serde(
        rename = "IPv4",
        alias = "ipv4",
        default,
        deserialize_with = "text",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4: String,
    #[serde(
        rename = "IPv6",
        alias = "ipv6",
        default,
        deserialize_with = "text",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6: String,
    #[serde(rename = "STUNPort", alias = "stunport", default, skip_serializing_if = "is_zero")]
    pub stun_port: i64,
    #[serde(rename = "STUNOnly", alias = "stunonly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    #[serde(rename = "DERPPort", alias = "derpport", default, skip_serializing_if = "is_zero")]
    pub derp_port: i64,
    #[serde(rename = "InsecureForTests", alias = "insecurefortests", default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    #[serde(
        rename = "STUNTestIP",
        alias = "stuntestip",
        default,
        deserialize_with = "text",
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    #[serde(rename = "CanPort80", alias = "canport80", default, skip_serializing_if = "is_false")]
    pub can_port_80: bool,
}

impl DerpMap {
    /// A Headscale `derp.paths` file (an empty file is an empty map).
    pub fn from_yaml(text: &str) -> Result<DerpMap, String> {
        match crate::yaml::parse(text).map_err(|e| e.to_string())? {
            serde_json::Value::Null => Ok(DerpMap::default()),
            v => serde_json::from_value(v).map_err(|e| e.to_string()),
        }
    }

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
        let m = DerpMap::from_yaml(yaml).unwrap();
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
