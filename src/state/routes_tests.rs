//! Tests of `state::routes`: announcements, approvals, the election, and
//! what no policy at all makes of routes.

use super::*;
use crate::config::Allocation;
use crate::state::{NewUser, Settings};
use crate::store::Store;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn open(dir: &std::path::Path) -> State {
    State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(tailnet())).unwrap()
}

/// A user and `n` nodes made by `debug create-node`, ids 1..=n.
pub(crate) fn with_nodes(s: &State, n: u8) {
    let u = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
    for i in 1..=n {
        s.create_node(u.id, &format!("n{i}"), &format!("nodekey:{}", format!("{i:02x}").repeat(32)), 1).unwrap();
    }
}

pub(crate) fn hostinfo(routes: &[&str]) -> Option<Box<RawValue>> {
    let v = serde_json::json!({"Hostname": "r", "RoutableIPs": routes});
    Some(RawValue::from_string(v.to_string()).unwrap())
}

fn routes_of(s: &State, id: u64) -> Vec<String> {
    s.snapshot().nodes[&id].announced_routes.iter().map(Prefix::to_string).collect()
}

#[test]
fn a_hostinfo_announces_routes_stored_only_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        with_nodes(&s, 1);
        let events = s.subscribe(0);
        s.report_blocking(1, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
        assert_eq!(routes_of(&s, 1), ["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
        assert!(events.take().changes.contains(&crate::state::events::Change::NodeChanged(1)));
        // The same announcement again (a client repeats its Hostinfo): no write.
        let u = s.report(
            1,
            crate::state::presence::Reported {
                hostinfo: hostinfo(&["::/0", "192.168.77.0/24", "0.0.0.0/0"]),
                cap: 130,
                ..Default::default()
            },
        );
        assert_eq!(u.routes, None);
        assert!(!s.set_announced_routes(1, s.snapshot().nodes[&1].announced_routes.clone()).unwrap());
        // A Hostinfo without routes withdraws them; none at all changes nothing.
        s.report_blocking(1, None, 130);
        assert_eq!(routes_of(&s, 1).len(), 3);
        s.report_blocking(1, hostinfo(&["192.168.77.0/24"]), 130);
        // A second change within `ANNOUNCE_EVERY` is stored once it has passed.
        assert_eq!(routes_of(&s, 1).len(), 3);
        s.store_deferred_routes(crate::clock::mono_secs() + ANNOUNCE_EVERY).unwrap();
        assert_eq!(routes_of(&s, 1), ["192.168.77.0/24"]);
    }
    // On flash.
    let s = open(dir.path());
    assert_eq!(routes_of(&s, 1), ["192.168.77.0/24"]);
    assert!(matches!(s.set_announced_routes(9, vec![]), Err(StateError::NotFound(_))));
}

fn tailnet() -> Prefixes {
    Prefixes {
        v4: Some("100.64.0.0/10".parse().unwrap()),
        v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
        allocation: Allocation::Sequential,
    }
}

fn texts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn announcements_are_checked_sorted_and_bounded() {
    let (kept, dropped) = announced(
        &texts(&[
            "192.168.1.0/24",
            "::/0",
            "10.0.0.0/8",
            "192.168.1.0/24",
            "0.0.0.0/0",
            "192.168.1.7/24",
            "banana",
            "100.64.0.0/10",
            "100.100.0.0/16",
            "100.0.0.0/8",
            "fd7a:115c:a1e0:ab::/64",
            "2001:db8::/32",
        ]),
        &tailnet(),
    );
    let kept: Vec<String> = kept.iter().map(Prefix::to_string).collect();
    assert_eq!(kept, ["0.0.0.0/0", "10.0.0.0/8", "192.168.1.0/24", "::/0", "2001:db8::/32"]);
    assert_eq!(
        dropped,
        ["192.168.1.7/24", "banana", "100.64.0.0/10", "100.100.0.0/16", "100.0.0.0/8", "fd7a:115c:a1e0:ab::/64"]
    );

    let many: Vec<String> = (0..300).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    let (kept, dropped) = announced(&many, &tailnet());
    assert_eq!(kept.len(), MAX_ROUTES);
    assert_eq!(kept[0].to_string(), "10.0.0.0/24");
    assert!(dropped[0].contains("44 route(s) beyond"), "{dropped:?}");
}

fn pfx(list: &[&str]) -> Vec<Prefix> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn strings(list: &[Prefix]) -> Vec<String> {
    list.iter().map(Prefix::to_string).collect()
}

/// Without a policy, served routes reach peers through the allow-all
/// policy: a subnet in `AllowedIPs` and `PrimaryRoutes`, exit routes in
/// `AllowedIPs` only; nothing is compiled while no route serves.
#[test]
fn no_policy_still_serves_approved_routes() {
    use crate::state::{Node, Snapshot, User};
    let mut router = Node::example(1, 1, "100.64.0.1".parse().unwrap());
    router.announced_routes = pfx(&["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
    let peer = Node::example(2, 1, "100.64.0.2".parse().unwrap());
    let snap = Snapshot::from_records([User::named(1, "alice")], [router.clone(), peer.clone()], []);
    assert!(snap.with_policy(None).access.is_none(), "announced is not served");

    router.approved_routes = router.announced_routes.clone();
    let mut snap = Snapshot::from_records([User::named(1, "alice")], [router, peer], []);
    snap.primaries = Arc::new([(pfx(&["192.168.77.0/24"])[0], 1)].into_iter().collect());
    let snap = snap.with_policy(None);
    let access = snap.access.as_deref().expect("compiled once a route serves");
    let mut allowed = strings(&access.allowed_ips(2, 1));
    allowed.sort();
    assert_eq!(allowed, ["0.0.0.0/0", "100.64.0.1/32", "192.168.77.0/24", "::/0"]);
    assert_eq!(strings(&access.primary_routes(2, 1)), ["192.168.77.0/24"]);
    assert_eq!(strings(&access.allowed_ips(1, 2)), ["100.64.0.2/32"]);
    assert!(access.sees(1, 2) && access.sees(2, 1));
    // Tailscale's own filter for its default policy: `*` as sources becomes
    // the tailnet's ranges and the served routes (what Tailscale would send).
    let filter = access.filter(2);
    assert_eq!(filter.len(), 1);
    assert!(filter[0].src_ips.contains(&"192.168.77.0/24".to_string()), "{filter:?}");
    assert_eq!(filter[0].dst_ports, crate::tailcfg::FilterRule::allow_all()[0].dst_ports);
}

fn approved_of(s: &State, id: u64) -> Vec<String> {
    strings(&s.snapshot().nodes[&id].approved_routes)
}

#[test]
fn only_announced_routes_are_approved_and_exit_routes_in_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    with_nodes(&s, 1);
    s.report_blocking(1, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
    let err = s.approve_routes(1, &pfx(&["10.0.0.0/8"])).unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)));
    assert!(err.to_string().contains("does not announce 10.0.0.0/8"), "{err}");
    let err = s.approve_routes(1, &pfx(&["192.168.77.5/24"])).unwrap_err();
    assert!(err.to_string().contains("host bits"), "{err}");
    assert!(matches!(s.approve_routes(7, &[]), Err(StateError::NotFound(_))));
    assert!(approved_of(&s, 1).is_empty(), "a refusal changes nothing");

    let n = s.approve_routes(1, &pfx(&["0.0.0.0/0"])).unwrap();
    assert_eq!(strings(&n.approved_routes), ["0.0.0.0/0", "::/0"]);
    s.approve_routes(1, &pfx(&["192.168.77.0/24", "::/0"])).unwrap();
    assert_eq!(approved_of(&s, 1), ["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
    s.approve_routes(1, &[]).unwrap();
    assert!(approved_of(&s, 1).is_empty());
}

#[test]
fn auto_approvers_approve_on_announce_and_policy_change_and_never_remove() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(tailnet());
    settings.policy = crate::state::PolicySource::Database;
    let s = State::load(Store::open(&dir.path().join("db"), 1 << 20).unwrap(), settings).unwrap();
    with_nodes(&s, 3);
    s.report_blocking(1, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
    s.report_blocking(3, hostinfo(&["10.9.0.0/16"]), 130);
    let allow = r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#;
    s.set_policy(&format!(r#"{{{allow}, "autoApprovers": {{"routes": {{"192.168.0.0/16": ["alice@"]}}}}}}"#)).unwrap();
    // A new policy approves what it covers of what is announced.
    assert_eq!(approved_of(&s, 1), ["192.168.77.0/24"]);
    assert!(approved_of(&s, 3).is_empty());
    // So does a new announcement.
    s.report_blocking(2, hostinfo(&["192.168.77.0/24"]), 130);
    assert_eq!(approved_of(&s, 2), ["192.168.77.0/24"]);
    // A policy without them removes nothing.
    s.set_policy(&format!("{{{allow}}}")).unwrap();
    assert_eq!(approved_of(&s, 1), ["192.168.77.0/24"]);
    assert_eq!(approved_of(&s, 2), ["192.168.77.0/24"]);
    // exitNode approves both exit routes.
    s.set_policy(&format!(r#"{{{allow}, "autoApprovers": {{"exitNode": ["alice@"]}}}}"#)).unwrap();
    assert_eq!(approved_of(&s, 1), ["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
    // The admin un-approves: it stays so through other writes, until the
    // next announcement or policy.
    s.approve_routes(1, &[]).unwrap();
    s.rename_node(1, "renamed").unwrap();
    s.approve_routes(2, &[]).unwrap();
    assert!(approved_of(&s, 1).is_empty() && approved_of(&s, 2).is_empty());
    s.set_policy(&format!(r#"{{{allow}, "autoApprovers": {{"routes": {{"192.168.0.0/16": ["alice@"]}}}}}}"#)).unwrap();
    assert_eq!(approved_of(&s, 1), ["192.168.77.0/24"]);
}

#[test]
fn the_election_keeps_an_online_primary_else_takes_the_lowest_id() {
    let p = pfx(&["192.168.77.0/24"])[0];
    let q = pfx(&["10.0.0.0/8"])[0];
    let routers = |list: &[(Prefix, &[u64])]| -> BTreeMap<Prefix, BTreeSet<u64>> {
        list.iter().map(|(p, ids)| (*p, ids.iter().copied().collect())).collect()
    };
    let none = BTreeMap::new();
    // Nobody primary yet: the lowest id.
    let first = elect(&none, &routers(&[(p, &[3, 2, 5]), (q, &[4])]));
    assert_eq!(first, [(p, 2), (q, 4)].into_iter().collect());
    // The primary stays while online, even when a lower id comes (back).
    let current: BTreeMap<Prefix, u64> = [(p, 3)].into_iter().collect();
    assert_eq!(elect(&current, &routers(&[(p, &[1, 2, 3])]))[&p], 3);
    // Offline: the lowest online one takes over; none online, none primary.
    assert_eq!(elect(&current, &routers(&[(p, &[5, 4])]))[&p], 4);
    assert!(elect(&current, &routers(&[])).is_empty());
}

#[test]
fn a_primary_that_goes_offline_is_replaced_and_not_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    with_nodes(&s, 3);
    for id in [1, 2] {
        s.report_blocking(id, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
        s.approve_routes(id, &pfx(&["192.168.77.0/24", "0.0.0.0/0"])).unwrap();
    }
    let p = pfx(&["192.168.77.0/24"])[0];
    let primary = |s: &State| s.snapshot().primaries.get(&p).copied();
    assert_eq!(primary(&s), None, "no router online");
    let events = s.subscribe(3);
    assert!(s.stream_opened(2));
    assert!(s.elect_primaries().unwrap());
    assert_eq!(primary(&s), Some(2));
    assert!(events.take().changes.contains(&crate::state::events::Change::NodeChanged(2)));
    s.stream_opened(1);
    assert!(!s.elect_primaries().unwrap(), "a lower id coming online takes nothing");
    assert_eq!(primary(&s), Some(2));
    // Peers see the primary's subnet; exit routes have no primary.
    let snap = s.snapshot();
    let access = snap.access.as_deref().unwrap();
    assert_eq!(strings(&access.primary_routes(3, 2)), ["192.168.77.0/24"]);
    assert!(access.primary_routes(3, 1).is_empty());
    assert!(strings(&access.allowed_ips(3, 1)).contains(&"0.0.0.0/0".to_string()));
    assert_eq!(snap.primaries.len(), 1);

    s.stream_closed(2, 10, 10);
    assert!(s.announce_if_offline(2));
    assert!(s.elect_primaries().unwrap());
    assert_eq!(primary(&s), Some(1));
    let changes = events.take().changes;
    assert!(changes.contains(&crate::state::events::Change::NodeChanged(1)), "{changes:?}");
    assert!(changes.contains(&crate::state::events::Change::NodeChanged(2)), "{changes:?}");
    s.stream_opened(2);
    s.elect_primaries().unwrap();
    assert_eq!(primary(&s), Some(1), "a recovered router does not take it back");
    // Un-approving the primary's route hands it over at once.
    s.approve_routes(1, &[]).unwrap();
    assert_eq!(primary(&s), Some(2));
}

/// Review 12: a client holding a node key alternates its `RoutableIPs` at
/// every map request (lite requests or stream opens). Each change was a
/// flash write (a sled commit and flush) plus a recompile of the policy and
/// an autoApprovers run; now at most one stored change per node per
/// [`ANNOUNCE_EVERY`] seconds, and the latest announcement is stored when
/// the interval has passed.
#[test]
fn alternating_announcements_write_flash_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    with_nodes(&s, 2);
    let before = s.store.commits();
    for i in 0..50 {
        let routes: &[&str] = if i % 2 == 0 { &["192.168.1.0/24"] } else { &["192.168.2.0/24", "0.0.0.0/0"] };
        s.report_blocking(1, hostinfo(routes), 130);
    }
    let writes = s.store.commits() - before;
    assert_eq!(writes, 1, "{writes} flash writes for 50 map requests");
    assert_eq!(routes_of(&s, 1), ["192.168.1.0/24"]);
    // Another node has its own interval.
    s.report_blocking(2, hostinfo(&["10.2.0.0/16"]), 130);
    assert_eq!(routes_of(&s, 2), ["10.2.0.0/16"]);
    assert_eq!(s.store.commits() - before, 2);
    // The last announcement (the 50th: the second set) is stored once the
    // interval has passed, without the client asking again.
    let now = crate::clock::mono_secs();
    assert_eq!(s.store_deferred_routes(now).unwrap(), 0, "not before the interval");
    assert_eq!(s.store_deferred_routes(now + ANNOUNCE_EVERY).unwrap(), 1);
    assert_eq!(routes_of(&s, 1), ["0.0.0.0/0", "192.168.2.0/24"]);
    assert_eq!(s.store.commits() - before, 3);
    assert_eq!(s.store_deferred_routes(now + 10 * ANNOUNCE_EVERY).unwrap(), 0, "nothing left");
    assert_eq!(s.store.commits() - before, 3);
}

/// Review 12: an exit route the admin un-approved while the policy's
/// `autoApprovers.exitNode` covers the node was still served to peers: the
/// compile applied autoApprovers again to what is announced, though the
/// server stores their approvals (and `list-routes` showed none).
#[test]
fn an_exit_route_the_admin_unapproved_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(tailnet());
    settings.policy = crate::state::PolicySource::Database;
    let s = State::load(Store::open(&dir.path().join("db"), 1 << 20).unwrap(), settings).unwrap();
    with_nodes(&s, 2);
    let allow = r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#;
    s.set_policy(&format!(
        r#"{{{allow}, "autoApprovers": {{"exitNode": ["alice@"], "routes": {{"192.168.0.0/16": ["alice@"]}}}}}}"#
    ))
    .unwrap();
    s.report_blocking(1, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
    assert_eq!(approved_of(&s, 1), ["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
    let served = |s: &State| {
        let snap = s.snapshot();
        let mut v = strings(&snap.access.as_deref().unwrap().allowed_ips(2, 1));
        v.sort();
        v
    };
    assert!(served(&s).contains(&"0.0.0.0/0".to_string()));
    s.approve_routes(1, &[]).unwrap();
    assert!(approved_of(&s, 1).is_empty());
    assert_eq!(served(&s), ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"], "un-approved routes are not served");
}

/// What lets the mapper compare only routers' routes at a policy change:
/// through a peer without approved routes a viewer gets only its addresses.
#[test]
fn a_peer_without_routes_gives_no_viewer_any() {
    use crate::state::{Node, Snapshot, User};
    let mut nodes = Vec::new();
    for i in 1..=6u64 {
        let mut n = Node::example(i, 1, format!("100.64.0.{i}").parse().unwrap());
        n.announced_routes = pfx(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]);
        if i <= 2 {
            n.approved_routes = n.announced_routes.clone();
            n.tags = vec!["tag:router".into()];
        }
        nodes.push(n);
    }
    let mut snap = Snapshot::from_records([User::named(1, "alice")], nodes, []);
    snap.primaries = Arc::new([(pfx(&["192.168.77.0/24"])[0], 2)].into_iter().collect());
    let via = r#"{"tagOwners": {"tag:router": ["alice@"]},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "grants": [{"src": ["*"], "dst": ["192.168.77.0/24"], "ip": ["*"], "via": ["tag:router"]}]}"#;
    for policy in [None, Some(Arc::new(crate::policy::Policy::parse(via).unwrap()))] {
        let snap = snap.clone().with_policy(policy);
        let a = snap.access.as_deref().unwrap();
        for p in 1..=6u64 {
            assert_eq!(a.routes_through(p), p <= 2, "{p}");
            for v in (1..=6u64).filter(|v| *v != p && !a.routes_through(p)) {
                assert_eq!(a.allowed_ips(v, p).len(), 1, "{v} {p}");
                assert!(a.primary_routes(v, p).is_empty());
            }
        }
    }
}
