use super::*;
use crate::config::{Allocation, Prefixes};
use crate::state::{NewUser, Settings, State};
use crate::store::Store;

fn ctx() -> Context {
    Context {
        base_domain: "tailnet.internal".into(),
        derp_map: Arc::new(DerpMap::default()),
        dns: Arc::new(DnsConfig::default()),
        domain: "tailnet.internal".into(),
        taildrop: true,
    }
}

fn setup(dir: &std::path::Path, nodes: u8) -> (State, Vec<u64>) {
    let p = Prefixes { v4: Some("100.64.0.0/10".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
    let s = State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(p)).unwrap();
    let u = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
    let ids = (1..=nodes)
        .map(|i| {
            s.create_node(u.id, &format!("n{i}"), &format!("nodekey:{}", format!("{i:02x}").repeat(32)), 1).unwrap().id
        })
        .collect();
    (s, ids)
}

#[test]
fn the_full_map_has_everything_a_client_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = setup(dir.path(), 3);
    let snap = s.snapshot();
    let m = s.with_presence(|p| full(&ctx(), &snap, p, ids[0], 100)).unwrap();
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["Node"]["ID"], ids[0]);
    assert_eq!(j["Node"]["Name"], "n1.tailnet.internal.");
    assert_eq!(j["Node"]["MachineAuthorized"], true);
    assert_eq!(j["Node"]["Addresses"], serde_json::json!(["100.64.0.1/32"]));
    assert_eq!(j["Node"]["CapMap"][CAP_FILE_SHARING], serde_json::json!([]));
    assert!(j["Peers"][0].get("CapMap").is_none(), "peers do not carry the self-only caps");
    assert_eq!(j["Peers"].as_array().unwrap().len(), 2);
    assert_eq!(j["Peers"][0]["ID"], ids[1], "peers sorted by id");
    assert_eq!(j["UserProfiles"][0]["LoginName"], "alice");
    assert_eq!(j["PacketFilter"][0]["SrcIPs"][0], "*");
    assert!(j["DERPMap"].is_object() && j["DNSConfig"].is_object() && j["ControlTime"].is_string());
    assert_eq!(j["Debug"]["DisableLogTail"], true);
    // A lone node gets no Peers key at all.
    let (s1, one) = setup(tempfile::tempdir().unwrap().path(), 1);
    let m = s1.with_presence(|p| full(&ctx(), &s1.snapshot(), p, one[0], 100)).unwrap();
    assert!(serde_json::to_value(&m).unwrap().get("Peers").is_none());
    assert!(s.with_presence(|p| full(&ctx(), &snap, p, 999, 100)).is_none());
}

#[test]
fn deltas_are_the_smallest_update() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = setup(dir.path(), 3);
    let (me, a, b) = (ids[0], ids[1], ids[2]);
    s.report(a, crate::tailcfg::DiscoPublic([7; 32]), Some(vec!["1.2.3.4:41641".into()]), None, 130);
    s.stream_opened(a);
    let snap = s.snapshot();
    let d = |changes: &[Change]| s.with_presence(|p| delta(&ctx(), &snap, p, me, changes, 100));

    let Delta::Send(r) = d(&[Change::Endpoints(a), Change::Online(a, true)]) else { panic!() };
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(
        j["PeersChangedPatch"],
        serde_json::json!([{"NodeID": a, "DERPRegion": 0, "Endpoints": ["1.2.3.4:41641"],
        "DiscoKey": format!("discokey:{}", "07".repeat(32))}])
    );
    assert_eq!(j["OnlineChange"], serde_json::json!({a.to_string(): true}));
    assert!(j.get("Peers").is_none() && j.get("Node").is_none());

    let Delta::Send(r) = d(&[Change::NodeChanged(b), Change::Endpoints(b)]) else { panic!() };
    assert_eq!(r.peers_changed.len(), 1);
    assert!(r.peers_changed_patch.is_empty(), "a whole node supersedes its patch");
    assert_eq!(r.user_profiles.len(), 1);

    // A removal of a node that no longer exists.
    s.delete_node(b).unwrap();
    let snap2 = s.snapshot();
    let Delta::Send(r) = s.with_presence(|p| delta(&ctx(), &snap2, p, me, &[Change::NodeRemoved(b)], 100)) else {
        panic!()
    };
    assert_eq!(r.peers_removed, [b]);
    // A change to a node that has since gone becomes a removal.
    let Delta::Send(r) = s.with_presence(|p| delta(&ctx(), &snap2, p, me, &[Change::NodeChanged(b)], 100)) else {
        panic!()
    };
    assert_eq!(r.peers_removed, [b]);

    assert!(matches!(d(&[Change::Endpoints(me), Change::Online(me, true)]), Delta::Nothing));
    assert!(matches!(d(&[Change::NodeChanged(me)]), Delta::Send(r) if r.node.is_some()));
    assert!(matches!(d(&[Change::NodeRemoved(me)]), Delta::SelfGone));
    assert!(matches!(d(&[Change::Everything]), Delta::Full));
    assert!(matches!(d(&[Change::DerpMap]), Delta::Send(r) if r.derp_map.is_some() && r.peers_changed.is_empty()));
    assert!(matches!(d(&[]), Delta::Nothing));
}

#[test]
fn keepalive_shape() {
    assert_eq!(serde_json::to_string(&keepalive()).unwrap(), r#"{"KeepAlive":true}"#);
}
