//! The map property: a session's first full map plus every delta sent
//! after it leaves the client with the same picture as a full map made now.
//!
//! A small deterministic PRNG drives random registrations, renames (of
//! nodes and users), expiries and renewals, deletions, endpoint, capability
//! and Hostinfo reports, streams opening and closing, DERP map changes, new
//! policies and node tags through the real `State` (a real sled in a temporary folder), whose
//! change events feed `delta` exactly as a map session's queue does
//! (`control::session`), overflow into a full map included. After every
//! batch the client's view ([`super::client_view::View`]) must equal the
//! view of a fresh full map. No proptest crate: a failing seed and step are
//! printed, and the run is the same every time.

use super::client_view::View;
use super::{delta, full, Delta, Sent};
use crate::clock;
use crate::config::{Allocation, Prefixes};
use crate::state::events::Subscription;
use crate::state::presence::Reported;
use crate::state::{NewUser, PolicySource, Settings, State};
use crate::store::Store;
use crate::tailcfg::{DerpMap, DiscoPublic, DnsRecord, NodePublic};

/// xorshift64*: enough to shuffle operations, and the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick(&mut self, ids: &[u64]) -> Option<u64> {
        (!ids.is_empty()).then(|| ids[self.below(ids.len() as u64) as usize])
    }
}

fn derp_map(region: i64) -> DerpMap {
    serde_json::from_value(serde_json::json!({"Regions": {region.to_string(): {
        "RegionID": region, "RegionCode": format!("r{region}"), "RegionName": "R",
        "Nodes": [{"Name": "a", "RegionID": region, "HostName": "derp.example"}]}}}))
    .expect("a DERP map")
}

/// One map session, as `control::session` runs it.
struct Session {
    me: u64,
    sub: Subscription,
    sent: Sent,
    view: View,
}

impl Session {
    fn full(s: &State, me: u64, now: i64) -> crate::tailcfg::MapResponse {
        s.with_presence(|p| full(&s.map_context(), &s.snapshot(), p, me, now)).expect("the session's node exists")
    }

    fn start(s: &State, me: u64, now: i64) -> Session {
        let sub = s.subscribe(me);
        let first = Session::full(s, me, now);
        Session { me, sub, sent: Sent::after_full(&s.snapshot(), me, now), view: View::of(&first) }
    }

    /// Takes what was published and sends what the session would; returns
    /// whether the queue had overflowed.
    fn drain(&mut self, s: &State, now: i64) -> bool {
        let pending = self.sub.take();
        let resync = pending.resync;
        let d = if pending.resync {
            Delta::Full
        } else {
            s.with_presence(|p| {
                delta(&s.map_context(), &s.snapshot(), p, self.me, &pending.changes, now, &mut self.sent)
            })
        };
        match d {
            Delta::Nothing => {}
            Delta::Send(r) => self.view.apply(&r),
            Delta::Full => {
                let f = Session::full(s, self.me, now);
                self.sent = Sent::after_full(&s.snapshot(), self.me, now);
                if f.peers.is_some() {
                    self.view.apply(&f);
                } else {
                    // The session ends the stream; the client's next one starts from nothing.
                    self.view = View::of(&f);
                }
            }
            Delta::SelfGone => panic!("the session's own node is never deleted here"),
        }
        resync
    }
}

/// Where two JSON values differ, as `path: got != want` lines.
fn diff(got: &serde_json::Value, want: &serde_json::Value) -> String {
    use serde_json::Value;
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    walk(
                        &format!("{path}.{k}"),
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} != {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", got, want, &mut out);
    out.join("\n")
}

/// Policies that hide and show peers and shape filters in different ways;
/// the users they name are renamed away and back during a run.
const POLICIES: &[&str] = &[
    r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}]}"#,
    r#"{"tagOwners": {"tag:srv": ["alice@"]},
        "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:srv:22,443"]}]}"#,
    r#"{"groups": {"group:kids": ["carol@", "bob@"]},
        "acls": [{"action": "accept", "src": ["group:kids"], "dst": ["autogroup:self:*"]},
                 {"action": "accept", "src": ["alice@"], "dst": ["*:*"]}]}"#,
    r#"{"tagOwners": {"tag:web": ["alice@"]},
        "grants": [{"src": ["tag:web"], "dst": ["carol@"], "ip": ["tcp:8080"]}]}"#,
    r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "autoApprovers": {"routes": {"192.168.0.0/16": ["alice@"]}, "exitNode": ["bob@"]}}"#,
    r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["192.168.77.0/24:*", "autogroup:internet:*"]},
                 {"action": "accept", "src": ["bob@"], "dst": ["alice@:*"]}]}"#,
];

/// Routes nodes announce during a run (two routers may share one).
const ROUTES: &[&str] = &["192.168.77.0/24", "10.1.0.0/16", "0.0.0.0/0", "::/0"];

/// Comparisons, resyncs, and comparisons where a peer had `PrimaryRoutes`.
fn run(seed: u64, steps: u64) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = Prefixes { v4: Some("100.64.0.0/10".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
    let settings = Settings { policy: PolicySource::Database, ..Settings::new(p) };
    let s = State::load(Store::open(&dir.path().join("db"), 1 << 20).unwrap(), settings).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let now = clock::build_epoch() + 10_000;
    let users: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| s.create_user(NewUser { name: (*n).into(), ..Default::default() }, 1).unwrap().id)
        .collect();
    let mut keys = 0u32;
    let mut node_key = || {
        keys += 1;
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&keys.to_be_bytes());
        NodePublic(k).to_string()
    };
    let me = s.create_node(users[0], "me", &node_key(), 1).unwrap().id;
    for i in 0..3 {
        s.create_node(users[i % 3], "peer", &node_key(), 1).unwrap();
    }
    let mut session = Session::start(&s, me, now);
    let (mut checks, mut resyncs, mut routed) = (0, 0, 0);
    let mut quiet = 0;
    for step in 0..steps {
        let ids: Vec<u64> = s.snapshot().nodes.keys().copied().collect();
        let peers: Vec<u64> = ids.iter().copied().filter(|id| *id != me).collect();
        match rng.below(18) {
            0 | 1 if ids.len() < 40 => {
                let u = users[rng.below(3) as usize];
                s.create_node(u, &format!("host-{step}"), &node_key(), 1).unwrap();
            }
            2 => {
                let id = rng.pick(&ids).unwrap();
                s.rename_node(id, &format!("renamed-{step}")).unwrap();
            }
            3 => {
                let id = rng.pick(&ids).unwrap();
                s.expire_node(id, Some(now - 1), now).unwrap();
            }
            4 => {
                let id = rng.pick(&ids).unwrap();
                s.expire_node(id, Some(now + 3600 + step as i64), now).unwrap();
            }
            5 => {
                if let Some(id) = rng.pick(&peers) {
                    s.delete_node(id).unwrap();
                }
            }
            6 | 7 => {
                let id = rng.pick(&ids).unwrap();
                let eps = (0..rng.below(3)).map(|i| format!("192.0.2.{}:{}", rng.below(250), 41641 + i)).collect();
                s.report(
                    id,
                    Reported {
                        disco: DiscoPublic([rng.below(4) as u8 + 1; 32]),
                        endpoints: Some(eps),
                        cap: 130 + rng.below(2) as u32,
                        ..Default::default()
                    },
                );
            }
            8 => {
                let id = rng.pick(&ids).unwrap();
                let hi = serde_json::value::RawValue::from_string(format!(
                    r#"{{"Hostname":"h{step}","NetInfo":{{"PreferredDERP":{}}}}}"#,
                    rng.below(3) + 900
                ))
                .unwrap();
                s.report(id, Reported { hostinfo: Some(hi), ..Default::default() });
            }
            9 => {
                let id = rng.pick(&ids).unwrap();
                // As the session does: who is online elects the primaries.
                if s.stream_opened(id) {
                    s.elect_primaries().unwrap();
                }
            }
            10 => {
                let id = rng.pick(&ids).unwrap();
                if s.is_online(id)
                    && s.stream_closed(id, now - rng.below(1000) as i64, step)
                    && s.announce_if_offline(id)
                {
                    s.elect_primaries().unwrap();
                }
            }
            16 => {
                let id = rng.pick(&ids).unwrap();
                let routes: Vec<&str> = ROUTES.iter().copied().filter(|_| rng.below(2) == 0).collect();
                let hi = serde_json::json!({"Hostname": format!("r{step}"), "RoutableIPs": routes});
                s.report_blocking(id, Some(serde_json::value::RawValue::from_string(hi.to_string()).unwrap()), 0);
                // A change within `ANNOUNCE_EVERY` of the last waits: stored
                // as housekeeping would once it has passed (a later time at
                // every step).
                let later = crate::clock::mono_secs() + crate::state::routes::ANNOUNCE_EVERY * (step + 1);
                s.store_deferred_routes(later).unwrap();
                // Often approved at once, and online, so primaries come and go.
                if rng.below(2) == 0 {
                    let all = s.snapshot().nodes[&id].announced_routes.clone();
                    s.approve_routes(id, &all).unwrap();
                    if s.stream_opened(id) {
                        s.elect_primaries().unwrap();
                    }
                }
            }
            17 => {
                let id = rng.pick(&ids).unwrap();
                let announced = s.snapshot().nodes[&id].announced_routes.clone();
                let pick: Vec<_> = announced.into_iter().filter(|_| rng.below(3) != 0).collect();
                s.approve_routes(id, &pick).unwrap();
            }
            11 => {
                let u = users[rng.below(3) as usize];
                s.rename_user(u, &format!("user-{step}")).unwrap();
            }
            12 if rng.below(2) == 0 => {
                s.set_derp_map(derp_map(900 + rng.below(3) as i64));
            }
            12 => {
                let n = rng.below(3);
                s.set_extra_records(
                    (0..n)
                        .map(|i| DnsRecord {
                            name: format!("h{i}.lan"),
                            kind: "A".into(),
                            value: format!("10.0.0.{i}"),
                        })
                        .collect(),
                );
            }
            13 => {
                s.set_policy(POLICIES[rng.below(POLICIES.len() as u64) as usize]).unwrap();
            }
            14 => {
                let id = rng.pick(&ids).unwrap();
                let tags = match rng.below(3) {
                    0 => vec!["tag:web".to_string()],
                    1 => vec!["tag:srv".to_string()],
                    _ => vec!["tag:web".to_string(), "tag:srv".to_string()],
                };
                s.set_tags(id, tags).unwrap();
            }
            15 => {
                // Users come back under the names the policies use.
                let i = rng.below(3) as usize;
                let _ = s.rename_user(users[i], ["alice", "bob", "carol"][i]);
            }
            _ => {}
        }
        if quiet == 0 && rng.below(60) == 0 {
            // Fall behind long enough for the queue to overflow into a full map.
            quiet = 70;
        }
        if quiet > 0 {
            quiet -= 1;
            continue;
        }
        if rng.below(3) == 0 || step + 1 == steps {
            resyncs += u64::from(session.drain(&s, now));
            let want = View::of(&Session::full(&s, me, now)).comparable();
            let got = session.view.comparable();
            assert!(got == want, "seed {seed}, step {step}: the deltas and a full map differ:\n{}", diff(&got, &want));
            checks += 1;
            routed += u64::from(session.view.peers.values().any(|p| p.get("PrimaryRoutes").is_some()));
        }
    }
    (checks, resyncs, routed)
}

#[test]
fn a_full_map_plus_its_deltas_equals_a_later_full_map() {
    let (mut checks, mut resyncs, mut routed) = (0, 0, 0);
    for seed in 1..=12 {
        let (c, r, p) = run(seed, 250);
        checks += c;
        resyncs += r;
        routed += p;
    }
    assert!(routed > 0, "no comparison saw a primary route: routes went untested");
    println!("map property: {checks} comparisons over 12 seeds (policies, tags, routes and primaries included), {resyncs} of them after a queue overflow, {routed} with primary routes");
    assert!(resyncs > 0, "no run overflowed its queue: the full-map path went untested");
}
