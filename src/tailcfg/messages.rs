//! The JSON messages of `/machine/register` and `/machine/map`
//! (protocol.md §5–§7), with Go's field names. Absent fields are omitted, as
//! Go's `omitempty` does, because the client reads `nil` as "unchanged".
//! Unknown fields from clients are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::derp::DerpMap;
use super::prefix::Prefix;
use super::wire_keys::{DiscoPublic, MachinePublic, NodePublic};

/// Go's zero `time.Time`, which clients send for "no expiry".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Deserialize, Debug, Default)]
pub struct RegisterAuth {
    #[serde(rename = "AuthKey", default)]
    pub auth_key: String,
}

#[derive(Deserialize, Debug)]
pub struct RegisterRequest {
    #[serde(rename = "Version", default)]
    pub version: u32,
    #[serde(rename = "NodeKey")]
    pub node_key: NodePublic,
    #[serde(rename = "OldNodeKey", default)]
    pub old_node_key: NodePublic,
    #[serde(rename = "Auth", default)]
    pub auth: Option<RegisterAuth>,
    /// RFC 3339; zero time = no preference, a past time = log out.
    #[serde(rename = "Expiry", default)]
    pub expiry: Option<String>,
    #[serde(rename = "Followup", default)]
    pub followup: String,
    #[serde(rename = "Hostinfo", default)]
    pub hostinfo: Option<Box<RawValue>>,
    #[serde(rename = "Ephemeral", default)]
    pub ephemeral: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct User {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
    #[serde(rename = "Created")]
    pub created: String,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Login {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "Provider")]
    pub provider: String,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
}

#[derive(Serialize, Debug, Default)]
pub struct RegisterResponse {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(rename = "Login", skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
    #[serde(rename = "NodeKeyExpired")]
    pub node_key_expired: bool,
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    #[serde(rename = "AuthURL", skip_serializing_if = "String::is_empty")]
    pub auth_url: String,
    #[serde(rename = "Error", skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Deserialize, Debug)]
pub struct MapRequest {
    #[serde(rename = "Version", default)]
    pub version: u32,
    #[serde(rename = "Compress", default)]
    pub compress: String,
    #[serde(rename = "NodeKey")]
    pub node_key: NodePublic,
    #[serde(rename = "DiscoKey", default)]
    pub disco_key: DiscoPublic,
    #[serde(rename = "Stream", default)]
    pub stream: bool,
    #[serde(rename = "OmitPeers", default)]
    pub omit_peers: bool,
    #[serde(rename = "Hostinfo", default)]
    pub hostinfo: Option<Box<RawValue>>,
    /// `None` (JSON null) means "not reported in this request".
    #[serde(rename = "Endpoints", default)]
    pub endpoints: Option<Vec<String>>,
}

/// What tinyscale reads out of a client's Hostinfo; the rest is echoed as is.
#[derive(Deserialize, Debug, Default)]
pub struct HostinfoView {
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    #[serde(rename = "NetInfo", default)]
    pub net_info: Option<NetInfoView>,
    #[serde(rename = "RequestTags", default)]
    pub request_tags: Option<Vec<String>>,
    /// The routes the node offers (`--advertise-routes`, and `0.0.0.0/0` +
    /// `::/0` for `--advertise-exit-node`); text, checked by `state::routes`
    /// so one bad entry does not cost the rest of the Hostinfo.
    #[serde(rename = "RoutableIPs", default)]
    pub routable_ips: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct NetInfoView {
    #[serde(rename = "PreferredDERP", default)]
    pub preferred_derp: i64,
}

impl HostinfoView {
    pub fn of(raw: &RawValue) -> HostinfoView {
        // A Hostinfo we cannot read is treated as empty, never as an error:
        // its only uses are hints (a name, a home region).
        serde_json::from_str(raw.get()).unwrap_or_default()
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// FQDN with a trailing dot.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "User")]
    pub user: u64,
    #[serde(rename = "Key")]
    pub key: NodePublic,
    #[serde(rename = "KeyExpiry", skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<String>,
    #[serde(rename = "Machine")]
    pub machine: MachinePublic,
    #[serde(rename = "DiscoKey", skip_serializing_if = "DiscoPublic::is_zero")]
    pub disco_key: DiscoPublic,
    #[serde(rename = "Addresses")]
    pub addresses: Vec<String>,
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<String>,
    /// The subnet routes this node is the primary router for, as this
    /// viewer may use them (Tailscale sends it on peers and the self node).
    #[serde(rename = "PrimaryRoutes", skip_serializing_if = "Vec::is_empty")]
    pub primary_routes: Vec<String>,
    #[serde(rename = "Endpoints", skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(rename = "HomeDERP", skip_serializing_if = "is_zero_i64")]
    pub home_derp: i64,
    /// The pre-1.74 spelling of HomeDERP (`127.3.3.40:<region>`).
    #[serde(rename = "DERP", skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    #[serde(rename = "Hostinfo", skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<std::sync::Arc<RawValue>>,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Cap", skip_serializing_if = "is_zero_u32")]
    pub cap: u32,
    #[serde(rename = "Tags", skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "LastSeen", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    #[serde(rename = "CapMap", skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(rename = "Expired", skip_serializing_if = "is_false")]
    pub expired: bool,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

/// A partial update of a peer the client already knows.
#[derive(Serialize, Debug, Clone, Default)]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: u64,
    #[serde(rename = "DERPRegion", skip_serializing_if = "Option::is_none")]
    pub derp_region: Option<i64>,
    /// The client's capability version (0: unchanged).
    #[serde(rename = "Cap", skip_serializing_if = "Option::is_none")]
    pub cap: Option<u32>,
    #[serde(rename = "Endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// RFC 3339. A patch can set it, never clear it.
    #[serde(rename = "LastSeen", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// One rule of a node's packet filter (Tailscale's `tailcfg.FilterRule`):
/// traffic from `SrcIPs` may reach `DstPorts` over `IPProto`, or, with
/// `CapGrant`, the sources hold those capabilities on `Dsts`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    /// Shared: one policy rule's sources go into the filter of every node it
    /// reaches, and may list thousands of addresses.
    #[serde(rename = "SrcIPs")]
    pub src_ips: std::sync::Arc<[String]>,
    #[serde(rename = "DstPorts", skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    /// IANA protocol numbers; empty means the client's default (TCP, UDP, ICMP).
    #[serde(rename = "IPProto", skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<u8>,
    #[serde(rename = "CapGrant", skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

/// Capabilities the rule's sources hold on `Dsts` (Tailscale's `tailcfg.CapGrant`).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CapGrant {
    #[serde(rename = "Dsts")]
    pub dsts: Vec<Prefix>,
    /// Capability name → its values as the policy wrote them (an array), or
    /// `null` for the companion capabilities the control plane adds.
    /// Shared: one policy entry reaches many nodes' filters.
    #[serde(rename = "CapMap")]
    pub cap_map: std::sync::Arc<BTreeMap<String, serde_json::Value>>,
}

impl FilterRule {
    /// Everyone may reach everything: the filter when there is no policy.
    pub fn allow_all() -> Vec<FilterRule> {
        vec![FilterRule {
            src_ips: std::sync::Arc::from(vec!["*".to_string()]),
            dst_ports: vec![NetPortRange { ip: "*".into(), ports: PortRange { first: 0, last: 65535 } }],
            ip_proto: Vec::new(),
            cap_grant: Vec::new(),
        }]
    }
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    #[serde(rename = "Addr")]
    pub addr: String,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    #[serde(rename = "Resolvers", skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<Resolver>,
    #[serde(rename = "Routes", skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    #[serde(rename = "FallbackResolvers", skip_serializing_if = "Vec::is_empty")]
    pub fallback_resolvers: Vec<Resolver>,
    #[serde(rename = "Domains", skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(rename = "Proxied", skip_serializing_if = "is_false")]
    pub proxied: bool,
    #[serde(rename = "ExtraRecords", skip_serializing_if = "Vec::is_empty")]
    pub extra_records: Vec<DnsRecord>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Debug {
    #[serde(rename = "DisableLogTail")]
    pub disable_log_tail: bool,
}

#[derive(Serialize, Debug, Default)]
pub struct MapResponse {
    #[serde(rename = "KeepAlive", skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    #[serde(rename = "Node", skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<std::sync::Arc<DerpMap>>,
    #[serde(rename = "Peers", skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Node>>,
    #[serde(rename = "PeersChanged", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<Node>,
    #[serde(rename = "PeersRemoved", skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Node id (as a string, Go's map-key form) → online.
    #[serde(rename = "OnlineChange", skip_serializing_if = "BTreeMap::is_empty")]
    pub online_change: BTreeMap<String, bool>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<std::sync::Arc<DnsConfig>>,
    #[serde(rename = "Domain", skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// The node's whole filter, sent as the `"base"` chunk of
    /// `PacketFilters` (as Headscale does): unlike `PacketFilter`, an empty
    /// list there plainly means "nothing may reach this node".
    #[serde(rename = "PacketFilters", serialize_with = "base_chunk", skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    #[serde(rename = "UserProfiles", skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    #[serde(rename = "ControlTime", skip_serializing_if = "Option::is_none")]
    pub control_time: Option<String>,
    #[serde(rename = "Debug", skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
}

/// `Some(rules)` as `{"base": rules}` (only called for `Some`).
fn base_chunk<S: serde::Serializer>(rules: &Option<Vec<FilterRule>>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry("base", rules.as_deref().unwrap_or(&[]))?;
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_request_as_tailscaled_sends_it() {
        let j = r#"{"Version":130,"NodeKey":"nodekey:0101010101010101010101010101010101010101010101010101010101010101",
            "OldNodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000000",
            "NLKey":"nlpub:00","Auth":{"AuthKey":"tskey-auth-x"},"Expiry":"0001-01-01T00:00:00Z","Followup":"",
            "Hostinfo":{"Hostname":"laptop","NetInfo":{"PreferredDERP":900}},"Ephemeral":true,"Unknown":[1,2]}"#;
        let r: RegisterRequest = serde_json::from_str(j).unwrap();
        assert_eq!(r.version, 130);
        assert!(r.old_node_key.is_zero());
        assert_eq!(r.auth.unwrap().auth_key, "tskey-auth-x");
        assert!(r.ephemeral);
        let hi = HostinfoView::of(r.hostinfo.as_ref().unwrap());
        assert_eq!((hi.hostname.as_str(), hi.net_info.unwrap().preferred_derp), ("laptop", 900));
        // Garbage is an error, not a panic.
        assert!(serde_json::from_str::<RegisterRequest>(r#"{"NodeKey":5}"#).is_err());
        assert!(serde_json::from_str::<RegisterRequest>("[").is_err());
    }

    #[test]
    fn a_keepalive_is_exactly_this() {
        let m = MapResponse { keep_alive: true, ..Default::default() };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"KeepAlive":true}"#);
        let r = RegisterResponse { machine_authorized: true, ..Default::default() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"NodeKeyExpired":false,"MachineAuthorized":true}"#);
    }

    #[test]
    fn filter_rule_fields_as_the_client_reads_them() {
        let rule = FilterRule {
            src_ips: std::sync::Arc::from(vec!["100.64.0.1".to_string()]),
            dst_ports: Vec::new(),
            ip_proto: Vec::new(),
            cap_grant: vec![CapGrant {
                dsts: vec!["100.64.0.2/32".parse().unwrap()],
                cap_map: std::sync::Arc::new(
                    [("example.com/cap/x".to_string(), serde_json::json!([{}]))].into_iter().collect(),
                ),
            }],
        };
        assert_eq!(
            serde_json::to_string(&rule).unwrap(),
            r#"{"SrcIPs":["100.64.0.1"],"CapGrant":[{"Dsts":["100.64.0.2/32"],"CapMap":{"example.com/cap/x":[{}]}}]}"#
        );
        let tcp = FilterRule { ip_proto: vec![6], cap_grant: Vec::new(), ..FilterRule::allow_all().remove(0) };
        assert!(serde_json::to_string(&tcp).unwrap().ends_with(r#""IPProto":[6]}"#));
    }

    #[test]
    fn allow_all_filter_shape() {
        let j = serde_json::to_string(&FilterRule::allow_all()).unwrap();
        assert_eq!(j, r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#);
    }
}
