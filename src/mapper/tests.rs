//! The mapper on snapshots built from records: no store, no `State`.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::state::presence::Presence;
use crate::state::{MapContext, Node, Snapshot, User};
use crate::tailcfg::{DerpMap, DiscoPublic, DnsConfig};

fn ctx() -> MapContext {
    MapContext {
        base_domain: "tailnet.internal".into(),
        derp_map: Arc::new(DerpMap::default()),
        dns: Arc::new(DnsConfig::default()),
        domain: "tailnet.internal".into(),
        taildrop: true,
    }
}

/// A tailnet as records and presence.
struct World {
    users: Vec<User>,
    nodes: Vec<Node>,
    presence: HashMap<u64, Presence>,
}

fn record(id: u64, user_id: u64) -> Node {
    Node::example(id, user_id, format!("100.64.0.{id}").parse().unwrap())
}

impl World {
    /// `n` nodes (ids 1..=n) of one user, alice.
    fn new(n: u64) -> World {
        World {
            users: vec![User::named(1, "alice")],
            nodes: (1..=n).map(|i| record(i, 1)).collect(),
            presence: HashMap::new(),
        }
    }

    fn snap(&self) -> Snapshot {
        Snapshot::from_records(self.users.clone(), self.nodes.clone(), [])
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    /// `id` reports a disco key and endpoints and has an open stream.
    fn connect(&mut self, id: u64, endpoint: &str) {
        let p = self.presence.entry(id).or_default();
        p.disco_key = DiscoPublic([7; 32]);
        p.endpoints = vec![endpoint.into()];
        p.streams = 1;
        p.shown_online = true;
    }

    fn full(&self, me: u64, now: i64) -> Option<MapResponse> {
        full(&ctx(), &self.snap(), &self.presence, me, now)
    }

    fn delta(&self, me: u64, changes: &[Change], now: i64, sent: &mut Sent) -> Delta {
        delta(&ctx(), &self.snap(), &self.presence, me, changes, now, sent)
    }
}

#[test]
fn the_full_map_has_everything_a_client_needs() {
    let w = World::new(3);
    let ids = [1, 2, 3];
    let m = w.full(ids[0], 100).unwrap();
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
    assert_eq!(j["PacketFilters"]["base"][0]["SrcIPs"][0], "*");
    assert!(j["DERPMap"].is_object() && j["DNSConfig"].is_object() && j["ControlTime"].is_string());
    assert_eq!(j["Debug"]["DisableLogTail"], true);
    // A lone node gets no Peers key at all.
    let m = World::new(1).full(1, 100).unwrap();
    assert!(serde_json::to_value(&m).unwrap().get("Peers").is_none());
    assert!(w.full(999, 100).is_none());
}

#[test]
fn deltas_are_the_smallest_update() {
    let mut w = World::new(3);
    let (me, a, b) = (1, 2, 3);
    w.connect(a, "1.2.3.4:41641");
    let d = |w: &World, changes: &[Change]| w.delta(me, changes, 100, &mut Sent::default());

    let Delta::Send(r) = d(&w, &[Change::Endpoints(a), Change::Online(a, true)]) else { panic!() };
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(
        j["PeersChangedPatch"],
        serde_json::json!([{"NodeID": a, "DERPRegion": 0, "Endpoints": ["1.2.3.4:41641"],
        "DiscoKey": format!("discokey:{}", "07".repeat(32))}])
    );
    assert_eq!(j["OnlineChange"], serde_json::json!({a.to_string(): true}));
    assert!(j.get("Peers").is_none() && j.get("Node").is_none());

    let Delta::Send(r) = d(&w, &[Change::NodeChanged(b), Change::Endpoints(b)]) else { panic!() };
    assert_eq!(r.peers_changed.len(), 1);
    assert!(r.peers_changed_patch.is_empty(), "a whole node supersedes its patch");
    assert_eq!(r.user_profiles.len(), 1);

    // Going offline is a patch that says since when.
    let p = w.presence.get_mut(&a).unwrap();
    (p.streams, p.shown_online, p.last_seen) = (0, false, Some(90));
    let Delta::Send(r) = d(&w, &[Change::Online(a, false)]) else { panic!() };
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(
        j["PeersChangedPatch"],
        serde_json::json!([{"NodeID": a, "Online": false, "LastSeen": "1970-01-01T00:01:30Z"}])
    );
    assert!(j.get("OnlineChange").is_none());

    // A removal of a node that no longer exists.
    let mut gone = World::new(3);
    gone.nodes.retain(|n| n.id != b);
    let Delta::Send(r) = d(&gone, &[Change::NodeRemoved(b)]) else { panic!() };
    assert_eq!(r.peers_removed, [b]);
    // A change to a node that has since gone becomes a removal.
    let Delta::Send(r) = d(&gone, &[Change::NodeChanged(b)]) else { panic!() };
    assert_eq!(r.peers_removed, [b]);

    assert!(matches!(d(&w, &[Change::Endpoints(me), Change::Online(me, true)]), Delta::Nothing));
    assert!(matches!(d(&w, &[Change::NodeChanged(me)]), Delta::Send(r) if r.node.is_some()));
    assert!(matches!(d(&w, &[Change::NodeRemoved(me)]), Delta::SelfGone));
    assert!(matches!(d(&w, &[Change::Everything]), Delta::Full));
    assert!(matches!(d(&w, &[Change::DerpMap]), Delta::Send(r) if r.derp_map.is_some() && r.peers_changed.is_empty()));
    assert!(matches!(d(&w, &[Change::Dns]), Delta::Send(r) if r.dns_config.is_some() && r.derp_map.is_none()));
    assert!(matches!(d(&w, &[]), Delta::Nothing));
}

/// Issue 10, item 5: an expired node kept getting full maps and live
/// deltas, other devices' endpoints included.
#[test]
fn an_expired_node_sees_only_itself_until_it_logs_in_again() {
    let mut w = World::new(3);
    let (me, a, b) = (1, 2, 3);
    let now = crate::clock::build_epoch() + 1000;
    w.connect(a, "198.51.100.1:41641");
    let mut sent = Sent::default();
    let m = w.full(me, now).unwrap();
    assert_eq!(m.peers.as_ref().map(Vec::len), Some(2));
    assert!(matches!(w.delta(me, &[], now, &mut sent), Delta::Nothing));

    // The admin expires it while its stream is open: the next answer drops every peer.
    w.node_mut(me).expiry = Some(now - 1);
    let Delta::Send(r) = w.delta(me, &[Change::NodeChanged(me)], now, &mut sent) else { panic!() };
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["Node"]["Expired"], true, "{j}");
    assert!(j["Node"]["KeyExpiry"].is_string(), "the client decides it needs a login from KeyExpiry");
    assert_eq!(j["PeersRemoved"], serde_json::json!([a, b]));
    assert_eq!(j["PacketFilters"]["base"], serde_json::json!([]));
    assert!(j.get("Peers").is_none() && j.get("PeersChanged").is_none() && j.get("PeersChangedPatch").is_none());
    assert!(sent.expired);
    // From then on peers' news does not reach it, only its own node's (and the DERP map).
    let news = [Change::Endpoints(a), Change::NodeChanged(b), Change::Online(a, true)];
    assert!(matches!(w.delta(me, &news, now, &mut sent), Delta::Nothing));
    let Delta::Send(r) = w.delta(me, &[Change::NodeChanged(me), Change::Endpoints(a)], now, &mut sent) else {
        panic!()
    };
    assert!(r.node.is_some() && r.peers_changed.is_empty() && r.peers_changed_patch.is_empty());
    assert!(r.peers_removed.is_empty());
    assert!(matches!(w.delta(me, &[Change::DerpMap], now, &mut sent), Delta::Send(r) if r.derp_map.is_some()));
    assert!(matches!(w.delta(me, &[Change::Dns], now, &mut sent), Delta::Send(r) if r.dns_config.is_some()));
    // A new map request gets its own node only.
    let m = w.full(me, now).unwrap();
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["Node"]["Expired"], true);
    assert!(j.get("Peers").is_none(), "{j}");
    assert!(!j.to_string().contains("198.51.100.1"), "a peer's endpoint reached an expired node: {j}");
    let mut sent = Sent::after_full(&w.snap(), me, now);
    assert!(sent.expired && sent.access.is_none());
    // Peers see it expired.
    let m = w.full(a, now).unwrap();
    assert!(m.peers.unwrap().iter().any(|n| n.id == me && n.expired));

    // A key that runs out by the clock is noticed at the next keep-alive.
    let mut sent_b = Sent::default();
    w.node_mut(b).expiry = Some(now + 60);
    assert!(matches!(w.delta(b, &[], now, &mut sent_b), Delta::Nothing));
    let expired_now = w.delta(b, &[], now + 60, &mut sent_b);
    assert!(matches!(expired_now, Delta::Send(r) if r.node.as_ref().is_some_and(|n| n.expired)));

    // Logged in again (a later expiry): a full map.
    w.node_mut(me).expiry = Some(now + 3600);
    assert!(matches!(w.delta(me, &[Change::NodeChanged(me)], now, &mut sent), Delta::Full));
    assert!(!sent.expired);
}

#[test]
fn keepalive_shape() {
    assert_eq!(serde_json::to_string(&keepalive()).unwrap(), r#"{"KeepAlive":true}"#);
}

/// Issue 11: with a policy, a node is sent its own filter and only the
/// peers either side may reach; a new policy reaches a live session as a
/// delta of its filter and the peers it now sees, not a full map.
#[test]
fn a_policy_shapes_the_map_and_a_new_one_arrives_as_a_delta() {
    let mut w = World::new(3);
    w.users.push(User::named(2, "bob"));
    w.users.push(User::named(3, "carol"));
    w.node_mut(2).user_id = 2;
    w.node_mut(3).user_id = 3;
    let policy = |text: &str| Some(std::sync::Arc::new(crate::policy::Policy::parse(text).unwrap()));
    let only_alice_to_bob = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}]}"#;
    let snap = w.snap().with_policy(policy(only_alice_to_bob));
    let (now, presence) = (100, HashMap::new());
    let bob = full(&ctx(), &snap, &presence, 2, now).unwrap();
    let ids = |r: &MapResponse| r.peers.iter().flatten().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&bob), [1], "bob sees alice, who may reach him, and not carol");
    let f = bob.packet_filter.as_ref().unwrap();
    assert_eq!((f.len(), f[0].dst_ports[0].ports.first), (1, 80), "{f:?}");
    let carol = full(&ctx(), &snap, &presence, 3, now).unwrap();
    assert!(ids(&carol).is_empty() && carol.packet_filter.as_ref().is_some_and(|f| f.is_empty()));
    // Everyone may reach everyone now: carol's session gets both peers and
    // a new filter in one delta.
    let mut sent = Sent::after_full(&snap, 3, now);
    let next = w.snap().with_policy(policy(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#));
    let Delta::Send(d) = delta(&ctx(), &next, &presence, 3, &[Change::Policy], now, &mut sent) else {
        panic!("a new policy must be a delta")
    };
    let mut added: Vec<u64> = d.peers_changed.iter().map(|p| p.id).collect();
    added.sort();
    assert_eq!(added, [1, 2]);
    assert!(d.peers.is_none() && d.packet_filter.as_ref().is_some_and(|f| !f.is_empty()));
    // And back: alice and bob are hidden from carol again.
    let Delta::Send(d) = delta(&ctx(), &snap, &presence, 3, &[Change::Policy], now, &mut sent) else { panic!() };
    assert_eq!(d.peers_removed, [1, 2]);
    // Nothing new: nothing sent.
    assert!(matches!(delta(&ctx(), &snap, &presence, 3, &[Change::Policy], now, &mut sent), Delta::Nothing));
}

/// Review 11: an expired node's map named every node of the tailnet as
/// removed, the ones the policy had always hidden from it too.
#[test]
fn an_expired_node_is_never_told_of_peers_the_policy_hid_from_it() {
    let mut w = World::new(3);
    w.users.push(User::named(2, "bob"));
    w.users.push(User::named(3, "carol"));
    w.node_mut(2).user_id = 2;
    w.node_mut(3).user_id = 3;
    let policy = Some(Arc::new(
        crate::policy::Policy::parse(r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}]}"#)
            .unwrap(),
    ));
    let now = crate::clock::build_epoch() + 1000;
    let presence = HashMap::new();
    let carol = 3;
    // Carol sees nobody; her session is live when her key runs out.
    let snap = w.snap().with_policy(policy.clone());
    let m = full(&ctx(), &snap, &presence, carol, now).unwrap();
    assert!(m.peers.is_none());
    let mut sent = Sent::after_full(&snap, carol, now);
    w.node_mut(carol).expiry = Some(now - 1);
    let snap = w.snap().with_policy(policy.clone());
    let Delta::Send(r) = delta(&ctx(), &snap, &presence, carol, &[Change::NodeChanged(carol)], now, &mut sent) else {
        panic!()
    };
    assert!(r.node.as_ref().is_some_and(|n| n.expired));
    assert_eq!(r.peers_removed, Vec::<u64>::new(), "alice and bob were never shown to carol");
    // A new stream of the expired node: nothing about hidden peers either.
    let m = full(&ctx(), &snap, &presence, carol, now).unwrap();
    assert_eq!(m.peers_removed, Vec::<u64>::new());
    // Bob sees alice only; a peer removed in the same batch is named if it was shown.
    let bob = 2;
    w.node_mut(carol).expiry = None;
    let snap = w.snap().with_policy(policy.clone());
    let mut sent = Sent::after_full(&snap, bob, now);
    w.node_mut(bob).expiry = Some(now - 1);
    w.nodes.retain(|n| n.id != 1);
    let snap = w.snap().with_policy(policy);
    let Delta::Send(r) = delta(&ctx(), &snap, &presence, bob, &[Change::NodeRemoved(1)], now, &mut sent) else {
        panic!()
    };
    assert_eq!(r.peers_removed, [1], "alice was shown to bob: she is taken back");
}
