use super::*;
use crate::clock;
use crate::config::Allocation;

fn prefixes(v4: &str) -> Prefixes {
    Prefixes {
        v4: Some(v4.parse().unwrap()),
        v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
        allocation: Allocation::Sequential,
    }
}

fn open(dir: &std::path::Path, v4: &str) -> State {
    State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(prefixes(v4))).unwrap()
}

fn nk(i: u8) -> String {
    format!("nodekey:{}", format!("{i:02x}").repeat(32))
}

fn user(s: &State, name: &str) -> Arc<User> {
    s.create_user(NewUser { name: name.into(), ..Default::default() }, 100).unwrap()
}

#[test]
fn users_are_unique_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), "100.64.0.0/10");
        let a = user(&s, "alice");
        assert_eq!(a.id, 1);
        assert!(matches!(
            s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1),
            Err(StateError::Exists(_))
        ));
        assert!(matches!(
            s.create_user(NewUser { name: "1erin".into(), ..Default::default() }, 1),
            Err(StateError::Invalid(_))
        ));
        let b = user(&s, "bob");
        s.rename_user(b.id, "robert").unwrap();
        assert!(matches!(s.rename_user(b.id, "alice"), Err(StateError::Exists(_))));
        assert!(matches!(s.rename_user(99, "zed"), Err(StateError::NotFound(_))));
    }
    let s = open(dir.path(), "100.64.0.0/10");
    let snap = s.snapshot();
    let names: Vec<&str> = snap.users.values().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "robert"]);
    // Ids keep counting after a restart and are never reused.
    s.destroy_user(2).unwrap();
    assert_eq!(user(&s, "carol").id, 3);
}

#[test]
fn preauth_keys_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "100.64.0.0/10");
    let a = user(&s, "alice");
    let t = clock::build_epoch();
    let new = NewPreAuthKey { user: Some(a.id), reusable: true, ephemeral: false, tags: vec![], expiration: t + 5000 };
    let (rec, full) = s.create_preauth_key(new.clone(), 1000).unwrap();
    assert!(full.starts_with("tskey-auth-"));
    assert!(!format!("{rec:?}").contains(full.rsplit('-').next().unwrap()));
    assert_eq!(s.find_preauth_key(&full).unwrap().id, rec.id);
    assert_eq!(s.find_preauth_key(&rec.prefix).unwrap().id, rec.id);
    let expired = s.expire_preauth_key(rec.id, t + 2000).unwrap();
    assert_eq!(expired.expiration, t + 2000);
    s.delete_preauth_key(rec.id).unwrap();
    assert!(s.find_preauth_key(&full).is_none());
    // Tags must be tag:name; a key needs a user or tags; the user must exist.
    let bad = NewPreAuthKey { tags: vec!["server".into()], ..new.clone() };
    assert!(matches!(s.create_preauth_key(bad, 1), Err(StateError::Invalid(_))));
    let none = NewPreAuthKey { user: None, ..new.clone() };
    assert!(matches!(s.create_preauth_key(none, 1), Err(StateError::Invalid(_))));
    let ghost = NewPreAuthKey { user: Some(42), ..new.clone() };
    assert!(matches!(s.create_preauth_key(ghost, 1), Err(StateError::NotFound(_))));
    let tagged = NewPreAuthKey { user: None, tags: vec!["tag:server".into()], ..new };
    assert!(s.create_preauth_key(tagged, 1).is_ok());
    // Destroying the user takes its keys along.
    s.create_preauth_key(
        NewPreAuthKey { user: Some(a.id), reusable: false, ephemeral: true, tags: vec![], expiration: 9 },
        1,
    )
    .unwrap();
    s.destroy_user(a.id).unwrap();
    assert!(s.snapshot().preauth_keys.values().all(|k| k.user_id.is_none()));
}

#[test]
fn nodes_get_unique_addresses_and_names_and_addresses_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "100.64.0.0/29");
    let a = user(&s, "alice");
    let n1 = s.create_node(a.id, "Laptop", &nk(1), 1).unwrap();
    let n2 = s.create_node(a.id, "laptop", &nk(2), 1).unwrap();
    assert_eq!(n1.ipv4.unwrap().to_string(), "100.64.0.1");
    assert_eq!(n1.ipv6.unwrap().to_string(), "fd7a:115c:a1e0::1");
    assert_eq!(n2.ipv4.unwrap().to_string(), "100.64.0.2");
    assert_eq!((n1.given_name.as_str(), n2.given_name.as_str()), ("laptop", "laptop-1"));
    assert!(matches!(s.create_node(a.id, "x", &nk(1), 1), Err(StateError::Exists(_))));
    assert!(matches!(s.create_node(a.id, "x", "nodekey:00", 1), Err(StateError::Invalid(_))));
    // A user with nodes cannot be destroyed.
    assert!(matches!(s.destroy_user(a.id), Err(StateError::InUse(_))));
    // Rename, with clashes and bad names refused.
    assert!(matches!(s.rename_node(n2.id, "laptop"), Err(StateError::Exists(_))));
    assert!(matches!(s.rename_node(n2.id, "Bad Name"), Err(StateError::Invalid(_))));
    assert_eq!(s.rename_node(n2.id, "desk").unwrap().given_name, "desk");
    // Delete frees the address for the next node.
    s.delete_node(n1.id).unwrap();
    let n3 = s.create_node(a.id, "phone", &nk(3), 1).unwrap();
    assert_eq!(n3.ipv4.unwrap().to_string(), "100.64.0.1");
    assert_eq!(n3.id, 3, "ids are not reused");
    // Fill the /29 (six usable addresses), then a clean error.
    for i in 4..=7 {
        s.create_node(a.id, "n", &nk(i), 1).unwrap();
    }
    match s.create_node(a.id, "n", &nk(8), 1) {
        Err(StateError::PoolFull(m)) => assert!(m.contains("100.64.0.0/29"), "{m}"),
        other => panic!("expected PoolFull, got {other:?}"),
    }
    // Expire sets the expiry; nothing is lost across a restart.
    s.expire_node(n3.id, Some(77), 1).unwrap();
    drop(s);
    let s = open(dir.path(), "100.64.0.0/29");
    let snap = s.snapshot();
    assert_eq!(snap.nodes.len(), 6);
    assert_eq!(snap.nodes[&n3.id].expiry, Some(77));
    assert_eq!(snap.nodes[&n2.id].given_name, "desk");
}

#[test]
fn a_clock_that_reads_early_expires_nothing_too_soon() {
    let now = clock::build_epoch() + 100;
    assert!(!has_passed(now + 1, 20), "a future time has not passed on a clock in 1970");
    assert!(has_passed(10, 20), "what a clock in 1970 reads as past is surely past");
    assert!(has_passed(now - 1, now));
    assert!(!has_passed(now + 1, now));
}

/// Issue 10, item 8: while the clock read before the build time (a router
/// before NTP), `nodes expire` and `preauthkeys expire` did nothing and
/// nodes got no expiry at all.
#[test]
fn expiries_work_while_the_clock_reads_before_the_build_time() {
    use crate::tailcfg::{MachinePublic, NodePublic, RegisterRequest};
    let early = 1_000_000;
    assert!(!clock::clock_is_sane(early));
    let dir = tempfile::tempdir().unwrap();
    let load = || {
        let mut settings = Settings::new(prefixes("100.64.0.0/10"));
        settings.node_expiry = Span(3600);
        State::load(Store::open(&dir.path().join("db"), 1 << 20).unwrap(), settings).unwrap()
    };
    let s = load();
    let a = user(&s, "alice");
    let key = |s: &State| {
        s.create_preauth_key(
            NewPreAuthKey {
                user: Some(a.id),
                reusable: true,
                ephemeral: false,
                tags: vec![],
                expiration: early + 7200,
            },
            early,
        )
        .unwrap()
    };
    let join = |s: &State, i: u8, k: &str, now: i64| {
        let req: RegisterRequest = serde_json::from_value(serde_json::json!({
            "NodeKey": NodePublic([i; 32]).to_string(), "Auth": {"AuthKey": k}
        }))
        .unwrap();
        s.register(MachinePublic([i; 32]), &req, now)
    };

    // An explicit expiry works on this clock, and after a reboot that set the clock further back.
    let n = s.create_node(a.id, "n", &nk(1), early).unwrap();
    let n = s.expire_node(n.id, None, early).unwrap();
    let at = n.expiry.unwrap();
    assert!(has_passed(at, early) && has_passed(at, 5) && has_passed(at, clock::build_epoch()));
    let (k, full) = key(&s);
    assert!(matches!(join(&s, 2, &full, early), Ok(register::Registered::Authorized(_))));
    s.expire_preauth_key(k.id, early).unwrap();
    let refused = join(&s, 3, &full, early - 500);
    assert!(matches!(refused, Err(register::RegisterError::Refused(ref m)) if m == "auth key expired"), "{refused:?}");

    // node.expiry is counted on the monotonic clock until the wall clock is sane.
    let (_, full) = key(&s);
    let Ok(register::Registered::Authorized(n4)) = join(&s, 4, &full, early) else { panic!() };
    assert_eq!((n4.expiry, n4.expiry_deferred), (None, Some(3600)));
    assert_eq!(s.settle_expiries(early + 10, 100).unwrap(), 0);
    assert_eq!(s.settle_expiries(early + 20, 100 + 3599).unwrap(), 0);
    assert_eq!(s.snapshot().nodes[&n4.id].expiry_deferred, Some(3600));
    // A restart keeps it deferred; the count starts again.
    drop(s);
    let s = load();
    assert_eq!(s.snapshot().nodes[&n4.id].expiry_deferred, Some(3600));
    assert_eq!(s.settle_expiries(early + 5, 7).unwrap(), 0);
    let Ok(register::Registered::Authorized(n5)) = join(&s, 5, &full, early) else { panic!() };
    assert_eq!(s.settle_expiries(early + 5, 1000).unwrap(), 0);
    // Their spans run out before NTP (nodes 2 and 4, counted since the restart):
    // expired, and expired on any clock.
    assert_eq!(s.settle_expiries(early + 9, 7 + 3600).unwrap(), 2);
    let n4 = s.snapshot().nodes[&n4.id].clone();
    assert_eq!((n4.expiry, n4.expiry_deferred), (Some(clock::LONG_AGO), None));
    assert!(matches!(join(&s, 4, &full, early), Ok(register::Registered::Authorized(_))), "a new login renews it");
    // NTP answers: the other one gets the wall time its span leaves.
    let sane = clock::build_epoch() + 50_000;
    assert!(s.settle_expiries(sane, 1100).unwrap() >= 1);
    let n5 = s.snapshot().nodes[&n5.id].clone();
    assert_eq!((n5.expiry, n5.expiry_deferred), (Some(sane + 3500), None));
    assert_eq!(s.settle_expiries(sane + 1, 1101).unwrap(), 0, "nothing is left deferred");
}

#[test]
fn the_node_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(prefixes("100.64.0.0/10"));
    settings.max_nodes = 2;
    let s = State::load(Store::open(&dir.path().join("db"), 1 << 20).unwrap(), settings).unwrap();
    let a = user(&s, "alice");
    s.create_node(a.id, "a", &nk(1), 1).unwrap();
    s.create_node(a.id, "b", &nk(2), 1).unwrap();
    match s.create_node(a.id, "c", &nk(3), 1) {
        Err(StateError::PoolFull(m)) => assert!(m.contains("tuning.max_nodes"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Issue 10, item 4: with `email_verified_required: false` an unverified
/// email reached `login_user` and took over the CLI user with that email.
#[test]
fn only_a_verified_email_links_a_login_to_a_cli_user() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "100.64.0.0/10");
    let cli = s
        .create_user(NewUser { name: "carol".into(), email: "carol@example.com".into(), ..Default::default() }, 1)
        .unwrap();
    let login = |sub: &str, verified: bool| ExternalIdentity {
        provider_id: format!("https://idp.example/{sub}"),
        username: "carol".into(),
        display_name: "Carol".into(),
        email: "Carol@Example.com".into(),
        email_verified: verified,
        picture: String::new(),
    };
    let stranger = s.login_user(&login("stranger", false), 2).unwrap();
    assert_ne!(stranger.id, cli.id, "an unverified email claimed the CLI user");
    assert_eq!(stranger.name, "carol-1");
    assert_eq!(stranger.email, "Carol@Example.com", "an unverified email is still stored on a new user");
    assert_eq!(s.snapshot().users[&cli.id].provider, "", "the CLI user is untouched");
    let carol = s.login_user(&login("carol", true), 3).unwrap();
    assert_eq!(carol.id, cli.id, "a verified email links");
    assert_eq!((carol.provider.as_str(), carol.provider_id.as_str()), ("oidc", "https://idp.example/carol"));
    // The stranger's later logins stay the stranger's.
    assert_eq!(s.login_user(&login("stranger", false), 4).unwrap().id, stranger.id);
}

fn open_with(dir: &std::path::Path, policy: PolicySource) -> Result<State, StateError> {
    let settings = Settings { policy, ..Settings::new(prefixes("100.64.0.0/10")) };
    State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), settings)
}

const ALICE_TO_BOB: &str = r#"{
  // alice may reach bob's web server, nothing else
  "acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}],
}"#;

#[test]
fn a_database_policy_is_checked_stored_and_in_force_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_with(dir.path(), PolicySource::Database).unwrap();
        let (a, b) = (user(&s, "alice"), user(&s, "bob"));
        let na = s.create_node(a.id, "a", &nk(1), 100).unwrap();
        let nb = s.create_node(b.id, "b", &nk(2), 100).unwrap();
        assert!(s.snapshot().access.is_none(), "no policy: allow-all");
        assert!(s.policy_text().is_none());
        let applied = s.set_policy(ALICE_TO_BOB).unwrap();
        assert!(applied.changed);
        let snap = s.snapshot();
        let access = snap.access.as_ref().unwrap();
        assert!(access.sees(na.id, nb.id) && access.sees(nb.id, na.id));
        assert!(access.filter(na.id).is_empty(), "nobody may reach alice");
        assert_eq!(access.filter(nb.id).len(), 1);

        // A refused policy names its problem and the old one stays.
        let e = s.set_policy(r#"{"acls": [{"action": "accept", "src": ["nobody-group"], "dst": ["*:*"]}]}"#);
        let Err(StateError::Invalid(msg)) = e else { panic!("{e:?}") };
        assert!(
            msg.contains("line 1, column 40") && msg.contains("nobody-group"),
            "the refusal names the place: {msg}"
        );
        assert_eq!(s.policy_text().as_deref(), Some(ALICE_TO_BOB));
        assert!(Arc::ptr_eq(s.snapshot().access.as_ref().unwrap(), access));
        // The same text again changes nothing.
        assert!(!s.set_policy(ALICE_TO_BOB).unwrap().changed);
    }
    let s = open_with(dir.path(), PolicySource::Database).unwrap();
    assert_eq!(s.policy_text().as_deref(), Some(ALICE_TO_BOB));
    assert_eq!(s.snapshot().access.as_ref().unwrap().filter(2).len(), 1, "compiled again at start");
}

#[test]
fn a_file_policy_is_read_at_start_and_again_only_when_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.hujson");
    std::fs::write(&file, ALICE_TO_BOB).unwrap();
    let s = open_with(dir.path(), PolicySource::File(file.clone())).unwrap();
    assert_eq!(s.policy_text().as_deref(), Some(ALICE_TO_BOB));
    let e = s.set_policy("{}").unwrap_err().to_string();
    assert!(e.contains("policy.mode is file") && e.contains("SIGHUP") && e.contains("policy.hujson"), "{e}");

    std::fs::write(&file, "{\"acls\": [}").unwrap();
    let e = s.reload_policy_file().unwrap_err().to_string();
    assert!(e.contains("policy.hujson") && e.contains("line 1"), "{e}");
    assert_eq!(s.policy_text().as_deref(), Some(ALICE_TO_BOB), "a broken file keeps the last good policy");

    let allow_all = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    std::fs::write(&file, allow_all).unwrap();
    assert!(s.reload_policy_file().unwrap().changed);
    assert_eq!(s.policy_text().as_deref(), Some(allow_all));
    drop(s);
    // Not stored: the file is the policy, and a broken one stops the start.
    std::fs::write(&file, "{\"acls\": 1}").unwrap();
    let e = open_with(dir.path(), PolicySource::File(file)).err().expect("a broken policy file stops the start");
    assert!(e.to_string().contains("policy.hujson"), "{e}");
    assert!(open_with(dir.path(), PolicySource::Database).unwrap().policy_text().is_none());
}

#[test]
fn tags_own_a_node_and_the_policy_is_compiled_again_only_when_its_inputs_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with(dir.path(), PolicySource::Database).unwrap();
    let a = user(&s, "alice");
    let n1 = s.create_node(a.id, "one", &nk(1), 100).unwrap();
    let n2 = s.create_node(a.id, "two", &nk(2), 100).unwrap();
    s.set_policy(r#"{"tagOwners": {"tag:srv": ["alice@"]}, "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:srv:22"]}]}"#)
        .unwrap();
    let before = s.snapshot().access.clone().unwrap();
    assert!(!before.sees(n1.id, n2.id), "no rule between two untagged nodes");

    // A rename is not something the policy reads: nothing is compiled again.
    s.rename_node(n1.id, "uno").unwrap();
    assert!(Arc::ptr_eq(s.snapshot().access.as_ref().unwrap(), &before));

    let t = s.set_tags(n2.id, vec!["tag:srv".into(), "tag:srv".into()]).unwrap();
    assert_eq!(t.tags, ["tag:srv"]);
    assert_eq!(t.user_id, register::TAGGED_DEVICES, "owned by its tags, as in Headscale");
    let after = s.snapshot().access.clone().unwrap();
    assert!(after.sees(n1.id, n2.id) && after.filter(n2.id).len() == 1);
    assert!(matches!(s.set_tags(n2.id, vec!["srv".into()]), Err(StateError::Invalid(_))));
    assert!(matches!(s.set_tags(99, vec!["tag:srv".into()]), Err(StateError::NotFound(_))));
    let e = s.set_tags(n2.id, vec![]).unwrap_err().to_string();
    assert!(e.contains("at least one tag") && e.contains("--force-reauth"), "{e}");
}

fn register_request(node: u8, hostinfo: serde_json::Value) -> crate::tailcfg::RegisterRequest {
    serde_json::from_value(serde_json::json!({
        "Version": 130, "NodeKey": crate::tailcfg::NodePublic([node; 32]).to_string(), "Hostinfo": hostinfo,
    }))
    .unwrap()
}

#[test]
fn tags_a_device_asks_for_are_given_only_to_their_owners_and_never_with_a_key() {
    use crate::tailcfg::MachinePublic;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let s = open_with(dir.path(), PolicySource::Database).unwrap();
    let (alice, bob) = (user(&s, "alice"), user(&s, "bob"));
    let now = clock::build_epoch() + 1000;
    let login = |m: u8, tags: &[&str], who: u64| {
        let req = register_request(m, serde_json::json!({"Hostname": "web", "RequestTags": tags}));
        let id = s.start_login(MachinePublic([m; 32]), &req, [192, 0, 2, 1].into(), Instant::now()).unwrap();
        s.approve_login(&id, who, "cli", None, now, Instant::now())
    };
    // No policy: nobody may ask for a tag.
    let e = login(1, &["tag:web"], alice.id).unwrap_err().to_string();
    assert!(e.contains("tag:web") && e.contains("not permitted"), "{e}");
    s.set_policy(r#"{"tagOwners": {"tag:web": ["alice@"]}}"#).unwrap();
    let e = login(2, &["tag:web"], bob.id).unwrap_err().to_string();
    assert!(e.contains("tag:web"), "bob does not own tag:web: {e}");
    let e = login(3, &["tag:web", "tag:db"], alice.id).unwrap_err().to_string();
    assert!(e.contains("tag:db") && !e.contains("tag:web"), "only the refused tag is named: {e}");
    let n = login(4, &["tag:web", "tag:web"], alice.id).unwrap();
    assert_eq!((n.tags.clone(), n.user_id, n.expiry), (vec!["tag:web".to_string()], register::TAGGED_DEVICES, None));
    // Logging in again without asking makes it personal again.
    let n = login(4, &[], alice.id).unwrap();
    assert_eq!((n.tags.len(), n.user_id), (0, alice.id));

    // With a pre-auth key, tags come from the key; asking is refused.
    let (_, k) = s
        .create_preauth_key(
            NewPreAuthKey {
                user: Some(alice.id),
                reusable: true,
                ephemeral: false,
                tags: vec![],
                expiration: now + 99,
            },
            now,
        )
        .unwrap();
    let mut req = register_request(5, serde_json::json!({"Hostname": "x", "RequestTags": ["tag:web"]}));
    req.auth = serde_json::from_value(serde_json::json!({"AuthKey": k})).unwrap();
    let e = s.register(MachinePublic([5; 32]), &req, now).unwrap_err();
    assert!(format!("{e:?}").contains("pre-auth key"), "{e:?}");
    assert_eq!(s.snapshot().nodes.len(), 1, "nothing joined");
}

/// Review 11: a device asking for one tag thousands of times (its Hostinfo
/// may hold some 2,000) had the tailnet's users indexed once per copy,
/// inside the write lock, and its refusal listed every copy.
#[test]
fn a_tag_asked_for_many_times_is_judged_and_named_once() {
    use crate::tailcfg::MachinePublic;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let s = open_with(dir.path(), PolicySource::Database).unwrap();
    let (alice, bob) = (user(&s, "alice"), user(&s, "bob"));
    s.set_policy(r#"{"tagOwners": {"tag:web": ["alice@"]}}"#).unwrap();
    let now = clock::build_epoch() + 1000;
    let many = vec!["tag:web"; 1500];
    let login = |m: u8, who: u64| {
        let req = register_request(m, serde_json::json!({"Hostname": "web", "RequestTags": many}));
        let id = s.start_login(MachinePublic([m; 32]), &req, [192, 0, 2, 1].into(), Instant::now()).unwrap();
        s.approve_login(&id, who, "cli", None, now, Instant::now())
    };
    let e = login(1, bob.id).unwrap_err().to_string();
    assert_eq!(e.matches("tag:web").count(), 1, "the refusal names the tag once: {} bytes", e.len());
    assert_eq!(login(2, alice.id).unwrap().tags, ["tag:web"]);
    let policy = s.snapshot().policy.clone().unwrap();
    let users = [Snapshot::user_ref(&alice), Snapshot::user_ref(&bob)];
    let asked: Vec<String> = ["tag:web", "tag:db", "tag:web", "tag:db"].map(String::from).into();
    assert_eq!(policy.refused_tags(&asked, Some(&users[0]), &[], &users), ["tag:db"]);
}

/// Review 11: a Hostinfo too large to keep lost the tags it asked for, and
/// the device joined untagged as the approver's; now the tags are read
/// before the Hostinfo is dropped. More than 16 distinct tags are refused.
#[test]
fn tags_asked_for_in_a_large_hostinfo_are_not_dropped_and_their_number_is_bounded() {
    use crate::tailcfg::MachinePublic;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let s = open_with(dir.path(), PolicySource::Database).unwrap();
    let bob = user(&s, "bob");
    s.set_policy(r#"{"tagOwners": {"tag:web": ["alice@"]}}"#).unwrap();
    let now = clock::build_epoch() + 1000;
    let login = |m: u8, hostinfo: serde_json::Value| {
        let req = register_request(m, hostinfo);
        let id = s.start_login(MachinePublic([m; 32]), &req, [192, 0, 2, 1].into(), Instant::now()).unwrap();
        s.approve_login(&id, bob.id, "cli", None, now, Instant::now())
    };
    let pad = "x".repeat(super::presence::MAX_HOSTINFO);
    let e = login(1, serde_json::json!({"Hostname": "web", "RequestTags": ["tag:web"], "Pad": pad})).unwrap_err();
    assert!(e.to_string().contains("tag:web"), "{e}");
    let many: Vec<String> = (0..20).map(|i| format!("tag:t{i}")).collect();
    let e = login(2, serde_json::json!({"Hostname": "web", "RequestTags": many})).unwrap_err();
    assert!(e.to_string().contains("at most 16"), "{e}");
    // A keyless device's waiting login holds no more than 129 bytes a tag.
    let long = format!("tag:{}", "a".repeat(60_000));
    let req = register_request(3, serde_json::json!({"Hostname": "web", "RequestTags": [long]}));
    let tags = super::policy::requested_tags(req.hostinfo.as_deref());
    assert_eq!(tags[0].len(), super::policy::MAX_TAG_LEN + 1);
    let e = login(3, serde_json::json!({"Hostname": "web", "RequestTags": [format!("tag:{}", "a".repeat(60_000))]}))
        .unwrap_err();
    assert!(e.to_string().contains("at most 128 bytes") && e.to_string().len() < 200, "{e}");
    assert!(s.snapshot().nodes.is_empty());
}
