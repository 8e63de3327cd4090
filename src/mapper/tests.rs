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
    let d = |changes: &[Change]| s.with_presence(|p| delta(&ctx(), &snap, p, me, changes, 100, &mut Sent::default()));

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
    let Delta::Send(r) =
        s.with_presence(|p| delta(&ctx(), &snap2, p, me, &[Change::NodeRemoved(b)], 100, &mut Sent::default()))
    else {
        panic!()
    };
    assert_eq!(r.peers_removed, [b]);
    // A change to a node that has since gone becomes a removal.
    let Delta::Send(r) =
        s.with_presence(|p| delta(&ctx(), &snap2, p, me, &[Change::NodeChanged(b)], 100, &mut Sent::default()))
    else {
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

/// Issue 10, item 5: an expired node kept getting full maps and live
/// deltas, other devices' endpoints included.
#[test]
fn an_expired_node_sees_only_itself_until_it_logs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = setup(dir.path(), 3);
    let (me, a, b) = (ids[0], ids[1], ids[2]);
    let now = crate::clock::build_epoch() + 1000;
    s.report(a, crate::tailcfg::DiscoPublic([7; 32]), Some(vec!["198.51.100.1:41641".into()]), None, 130);
    let mut sent = Sent::default();
    let snap = s.snapshot();
    let m = s.with_presence(|p| full(&ctx(), &snap, p, me, now)).unwrap();
    assert_eq!(m.peers.as_ref().map(Vec::len), Some(2));
    assert!(matches!(s.with_presence(|p| delta(&ctx(), &snap, p, me, &[], now, &mut sent)), Delta::Nothing));

    // The admin expires it while its stream is open: the next answer drops every peer.
    s.expire_node(me, Some(now - 1), now).unwrap();
    let snap = s.snapshot();
    let Delta::Send(r) = s.with_presence(|p| delta(&ctx(), &snap, p, me, &[Change::NodeChanged(me)], now, &mut sent))
    else {
        panic!()
    };
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["Node"]["Expired"], true, "{j}");
    assert!(j["Node"]["KeyExpiry"].is_string(), "the client decides it needs a login from KeyExpiry");
    assert_eq!(j["PeersRemoved"], serde_json::json!([a, b]));
    assert_eq!(j["PacketFilter"], serde_json::json!([]));
    assert!(j.get("Peers").is_none() && j.get("PeersChanged").is_none() && j.get("DERPMap").is_none());
    assert!(sent.expired);
    // From then on peers' news does not reach it, only its own node's.
    let news = [Change::Endpoints(a), Change::NodeChanged(b), Change::Online(a, true), Change::DerpMap];
    assert!(matches!(s.with_presence(|p| delta(&ctx(), &snap, p, me, &news, now, &mut sent)), Delta::Nothing));
    let Delta::Send(r) = s.with_presence(|p| delta(&ctx(), &snap, p, me, &[Change::NodeChanged(me)], now, &mut sent))
    else {
        panic!()
    };
    assert!(r.node.is_some() && r.peers_changed.is_empty() && r.peers_removed.is_empty());
    // A new map request gets its own node only.
    let m = s.with_presence(|p| full(&ctx(), &snap, p, me, now)).unwrap();
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["Node"]["Expired"], true);
    assert!(j.get("Peers").is_none(), "{j}");
    assert!(!j.to_string().contains("198.51.100.1"), "a peer's endpoint reached an expired node: {j}");
    assert_eq!(Sent::after_full(&snap, me, now), Sent { expired: true });
    // Peers see it expired.
    let m = s.with_presence(|p| full(&ctx(), &snap, p, a, now)).unwrap();
    assert!(m.peers.unwrap().iter().any(|n| n.id == me && n.expired));

    // A key that runs out by the clock is noticed at the next keep-alive.
    let mut sent_b = Sent::default();
    s.expire_node(b, Some(now + 60), now).unwrap();
    let snap = s.snapshot();
    assert!(matches!(s.with_presence(|p| delta(&ctx(), &snap, p, b, &[], now, &mut sent_b)), Delta::Nothing));
    assert!(
        matches!(s.with_presence(|p| delta(&ctx(), &snap, p, b, &[], now + 60, &mut sent_b)), Delta::Send(r) if r.node.as_ref().is_some_and(|n| n.expired))
    );

    // Logged in again (a later expiry): a full map.
    s.expire_node(me, Some(now + 3600), now).unwrap();
    let snap = s.snapshot();
    assert!(matches!(
        s.with_presence(|p| delta(&ctx(), &snap, p, me, &[Change::NodeChanged(me)], now, &mut sent)),
        Delta::Full
    ));
    assert!(!sent.expired);
}

#[test]
fn keepalive_shape() {
    assert_eq!(serde_json::to_string(&keepalive()).unwrap(), r#"{"KeepAlive":true}"#);
}
