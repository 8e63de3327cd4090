//! Session lifecycle with tokio's paused clock: the offline grace period and
//! the removal of ephemeral nodes run on monotonic timers, never the wall clock.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;

use super::*;
use crate::config::{Allocation, Prefixes};
use crate::state::events::Change;
use crate::state::register::Registered;
use crate::state::{NewPreAuthKey, NewUser, Settings};
use crate::store::Store;

fn control(dir: &std::path::Path) -> (Arc<Control>, watch::Sender<bool>) {
    let p = Prefixes { v4: Some("100.64.0.0/24".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
    let state = Arc::new(State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(p)).unwrap());
    let (tx, rx) = watch::channel(false);
    (Arc::new(Control::new(state, &MachinePrivate::from_random([1; 32]), "http://x", rx)), tx)
}

fn ephemeral_node(c: &Control) -> u64 {
    let s = &c.state;
    let u = s.create_user(NewUser { name: "eve".into(), ..Default::default() }, 1).unwrap();
    let (_, key) = s
        .create_preauth_key(
            NewPreAuthKey { user: Some(u.id), reusable: false, ephemeral: true, tags: vec![], expiration: i64::MAX },
            1,
        )
        .unwrap();
    let req = serde_json::from_value(serde_json::json!({
        "NodeKey": crate::tailcfg::NodePublic([5; 32]).to_string(), "Auth": {"AuthKey": key}
    }))
    .unwrap();
    match s.register(MachinePublic([5; 32]), &req, crate::clock::now_unix()).unwrap() {
        Registered::Authorized(n) => n.id,
        other => panic!("{other:?}"),
    }
}

async fn first_frame(body: &mut session::MapBody) {
    let f = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
    assert!(f.is_some(), "the session sent its full map");
}

/// Waits (in real time: the removal runs on a blocking thread) until `id` is gone.
async fn removed(c: &Control, id: u64) -> bool {
    for _ in 0..100 {
        if !c.state.snapshot().nodes.contains_key(&id) {
            return true;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn housekeeping(c: &Control, stop: &watch::Sender<bool>) {
    tokio::spawn(crate::server::housekeeping::run(c.state.clone(), Duration::from_secs(120), stop.subscribe()));
}

#[tokio::test(start_paused = true)]
async fn a_gone_ephemeral_node_is_announced_offline_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (c, stop) = control(dir.path());
    housekeeping(&c, &stop);
    let id = ephemeral_node(&c);
    let watcher = c.state.hub.subscribe(999);
    let mut body = session::start(c.clone(), id, true);
    first_frame(&mut body).await;
    assert!(c.state.is_online(id));
    drop(body);
    // Within the grace period nothing is announced.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!watcher.take().changes.contains(&Change::Online(id, false)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(watcher.take().changes.contains(&Change::Online(id, false)), "offline after the grace period");
    assert!(c.state.snapshot().nodes.contains_key(&id), "not yet removed");
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(c.state.snapshot().nodes.contains_key(&id), "not yet removed");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(removed(&c, id).await, "removed after node.ephemeral.inactivity_timeout");
}

/// Issue 10, item 8: an ephemeral node that never opened a map stream (or
/// did not come back after a restart: it is loaded without a stream just the
/// same) was never removed; only a closing stream started the count.
#[tokio::test(start_paused = true)]
async fn an_ephemeral_node_that_never_streams_is_removed_too() {
    let dir = tempfile::tempdir().unwrap();
    let (c, stop) = control(dir.path());
    housekeeping(&c, &stop);
    let id = ephemeral_node(&c);
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(c.state.snapshot().nodes.contains_key(&id), "not yet removed");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(removed(&c, id).await, "removed after node.ephemeral.inactivity_timeout without ever streaming");
}

#[tokio::test(start_paused = true)]
async fn a_node_that_comes_back_within_the_grace_period_stays_online_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (c, stop) = control(dir.path());
    housekeeping(&c, &stop);
    let id = ephemeral_node(&c);
    let watcher = c.state.hub.subscribe(999);
    let mut body = session::start(c.clone(), id, true);
    first_frame(&mut body).await;
    drop(body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut again = session::start(c.clone(), id, true);
    first_frame(&mut again).await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(!watcher.take().changes.contains(&Change::Online(id, false)));
    assert!(c.state.snapshot().nodes.contains_key(&id));
    assert!(c.state.is_online(id));
}
