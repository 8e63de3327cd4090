use super::*;
use crate::tailcfg::{MachinePublic, NodePublic};

fn node(id: u64, v4: &str) -> Node {
    Node::example(id, 1, v4.parse().unwrap())
}

#[test]
fn commit_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path, 1 << 20).unwrap();
        let mut b = Batch::new();
        b.put_user(&User::named(1, "alice"));
        b.put_user(&User::named(2, "bob"));
        b.put_node(&node(1, "100.64.0.1"));
        b.set_next_ids(&NextIds { user: 3, node: 2, preauth_key: 1, api_key: 1 });
        b.set_policy("{}");
        s.commit(&b).unwrap();
        let mut b = Batch::new();
        b.delete_user(2);
        s.commit(&b).unwrap();
    }
    let s = Store::open(&path, 1 << 20).unwrap();
    let c = s.load().unwrap();
    assert_eq!(c.users, vec![User::named(1, "alice")]);
    assert_eq!(c.nodes.len(), 1);
    assert_eq!(c.next_ids.user, 3);
    assert_eq!(c.policy.as_deref(), Some("{}"));
    assert_eq!(s.schema_version().unwrap(), CURRENT_SCHEMA);
}

#[test]
fn the_store_refuses_a_duplicate_address_and_frees_it_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
    let mut b = Batch::new();
    b.put_node(&node(1, "100.64.0.1"));
    s.commit(&b).unwrap();
    let mut b = Batch::new();
    b.put_user(&User::named(9, "not-written"));
    b.put_node(&node(2, "100.64.0.1"));
    match s.commit(&b) {
        Err(StoreError::AddressTaken { owner: 1, .. }) => {}
        other => panic!("expected AddressTaken, got {other:?}"),
    }
    // The whole batch was refused, including the user.
    assert!(s.load().unwrap().users.is_empty());
    // Re-putting node 1 with a new address frees the old one.
    let mut b = Batch::new();
    b.put_node(&node(1, "100.64.0.5"));
    b.put_node(&node(2, "100.64.0.1"));
    s.commit(&b).unwrap();
    let mut b = Batch::new();
    b.delete_node(2);
    b.put_node(&node(3, "100.64.0.1"));
    s.commit(&b).unwrap();
}

/// A store as schema 1 left it: records, no address index.
fn write_schema_1(path: &std::path::Path, nodes: &[Node]) {
    let db = sled::Config::new().path(path).open().unwrap();
    db.insert(layout::SCHEMA_VERSION_KEY, &1u32.to_be_bytes()).unwrap();
    db.insert(layout::id_key(layout::USERS, 1), encode(&User::named(1, "alice"))).unwrap();
    for n in nodes {
        db.insert(layout::id_key(layout::NODES, n.id), encode(n)).unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn opening_a_schema_1_store_migrates_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write_schema_1(&path, &[node(1, "100.64.0.1"), node(2, "100.64.0.2")]);
    let s = Store::open(&path, 1 << 20).unwrap();
    assert_eq!(s.schema_version().unwrap(), 2);
    let c = s.load().unwrap();
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.nodes.len(), 2);
    // The index built by the migration guards the old addresses.
    let mut b = Batch::new();
    b.put_node(&node(3, "100.64.0.2"));
    assert!(matches!(s.commit(&b), Err(StoreError::AddressTaken { owner: 2, .. })));
}

#[test]
fn a_schema_1_store_with_duplicate_addresses_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write_schema_1(&path, &[node(1, "100.64.0.1"), node(2, "100.64.0.1")]);
    match Store::open(&path, 1 << 20) {
        Err(StoreError::Migration { to: 2, reason }) => assert!(reason.contains("100.64.0.1"), "{reason}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a store with duplicate addresses migrated"),
    }
    let db = sled::Config::new().path(&path).open().unwrap();
    assert_eq!(migrations::version(&db).unwrap(), 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = sled::Config::new().path(&path).open().unwrap();
        db.insert(layout::SCHEMA_VERSION_KEY, &(CURRENT_SCHEMA + 1).to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(Store::open(&path, 1 << 20), Err(StoreError::SchemaTooNew { .. })));
}

#[test]
fn a_corrupt_record_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path, 1 << 20).unwrap();
        s.db().unwrap().insert(layout::id_key(layout::USERS, 1), &b"{not json"[..]).unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(&path, 1 << 20).unwrap();
    assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_store_held_open_is_refused_and_one_just_closed_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let held = Store::open(&path, 1 << 20).unwrap();
    let again = Store::open(&path, 1 << 20);
    assert!(matches!(again, Err(StoreError::Locked { .. })), "second open must be refused while the first is held");
    drop(held);
    // Dropped with writes possibly still in sled's I/O pool: the wait covers them.
    for _ in 0..20 {
        let s = Store::open(&path, 1 << 20).expect("a closed store reopens");
        drop(s);
    }
}

/// sled's page cache records every page access in per-shard queues and drains a
/// queue once 64 accesses fill it. On targets without 64-bit atomics (MIPS, and
/// armv5te through sled's `mutex` feature) the drained slots are shims that sled
/// 0.34.7 made from zeroed memory, and reading one panicked: the router would
/// abort after a few hundred store operations. This drives thousands of them,
/// so under qemu-mips (tests/run-all.sh) it fails without vendor/sled's fix.
#[test]
fn thousands_of_store_operations_drain_the_page_cache_queues() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
    for i in 1..=200u64 {
        let mut b = Batch::new();
        b.put_user(&User::named(i, &format!("user{i}")));
        b.put_node(&node(i, &format!("100.64.{}.{}", i / 200, i % 200 + 1)));
        s.commit(&b).unwrap();
    }
    for _ in 0..20 {
        let c = s.load().unwrap();
        assert_eq!((c.users.len(), c.nodes.len()), (200, 200));
    }
}

/// Records keep their text on flash with typed keys: a record written before
/// the keys were typed decodes, and encodes back to the very same bytes.
#[test]
fn old_node_records_decode_and_re_encode_byte_for_byte() {
    let device = concat!(
        r#"{"id":7,"machine_key":"mkey:0707070707070707070707070707070707070707070707070707070707070707","#,
        r#""node_key":"nodekey:abababababababababababababababababababababababababababababababab","user_id":1,"#,
        r#""hostname":"Laptop","given_name":"laptop","ipv4":"100.64.0.7","ipv6":"fd7a:115c:a1e0::7","#,
        r#""created_at":1764257821,"expiry":1771000000,"last_seen":1764258000,"register_method":"authkey","#,
        r#""auth_key_id":3,"tags":["tag:x"],"ephemeral":true}"#
    );
    let cli = concat!(
        r#"{"id":8,"machine_key":"mkey:0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""node_key":"nodekey:0808080808080808080808080808080808080808080808080808080808080808","user_id":1,"#,
        r#""hostname":"x","given_name":"x","ipv4":null,"ipv6":null,"created_at":1,"expiry":null,"#,
        r#""last_seen":null,"register_method":"cli","auth_key_id":null,"tags":[],"ephemeral":false}"#
    );
    let n: Node = serde_json::from_str(device).unwrap();
    assert_eq!(n.machine_key, Some(MachinePublic([7; 32])));
    assert_eq!(n.node_key, NodePublic([0xab; 32]));
    assert_eq!(serde_json::to_string(&n).unwrap(), device);
    let c: Node = serde_json::from_str(cli).unwrap();
    assert_eq!(c.machine_key, None, "the all-zero placeholder is no machine");
    assert_eq!(serde_json::to_string(&c).unwrap(), cli);
    // A record with a key that is not one is corrupt, not a zero key.
    assert!(serde_json::from_str::<Node>(&cli.replace("nodekey:08", "nodekey:zz")).is_err());
}
