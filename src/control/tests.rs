//! Session lifecycle with tokio's paused clock: the offline grace period and
//! the removal of ephemeral nodes run on monotonic timers, never the wall clock.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};

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
    // Asked for more, as HTTP/2 does once the frame is out, the session
    // goes on (comes online).
    std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut *body).poll_frame(cx);
        std::task::Poll::Ready(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1)).await;
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

/// A server with its housekeeping running (stopped when the sender drops)
/// and one ephemeral node.
fn ephemeral_with_housekeeping(dir: &std::path::Path) -> (Arc<Control>, watch::Sender<bool>, u64) {
    let (c, stop) = control(dir);
    tokio::spawn(crate::server::housekeeping::run(c.state.clone(), Duration::from_secs(120), stop.subscribe()));
    let id = ephemeral_node(&c);
    (c, stop, id)
}

#[tokio::test(start_paused = true)]
async fn a_gone_ephemeral_node_is_announced_offline_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop, id) = ephemeral_with_housekeeping(dir.path());
    let watcher = c.state.subscribe(999);
    let mut body = session::start(c.clone(), id, true, conn::Answer::detached(), Default::default());
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

/// Peers hear of a new stream's report and of the node coming online only
/// once its first map is out (else the map waits behind their deltas); a
/// client that never takes it still has its report announced, and one
/// that never asks for more, after [`session::FRAME_TAKEN`].
#[tokio::test(start_paused = true)]
async fn peers_hear_of_a_new_stream_after_its_first_map() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop, id) = ephemeral_with_housekeeping(dir.path());
    let watcher = c.state.subscribe(999);
    let report = || crate::state::presence::Update { endpoints: true, ..Default::default() };
    let mut body = session::start(c.clone(), id, true, conn::Answer::detached(), report());
    // The map is built (on a blocking thread) and queued, but not taken.
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::thread::sleep(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(watcher.take().changes.is_empty(), "nothing announced before the first map is taken");
    assert!(c.state.is_online(id), "streaming (not reaped as idle) from the start");
    first_frame(&mut body).await;
    let changes = watcher.take().changes;
    assert!(changes.contains(&Change::Endpoints(id)), "{changes:?}");
    assert!(changes.contains(&Change::Online(id, true)), "{changes:?}");
    assert!(c.state.is_online(id));
    drop(body);

    // Taken, but never asked for more (a window held shut): the session
    // goes on after FRAME_TAKEN.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _ = watcher.take();
    let mut body = session::start(c.clone(), id, true, conn::Answer::detached(), report());
    let f = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
    assert!(f.is_some());
    tokio::time::sleep(session::FRAME_TAKEN / 2).await;
    assert!(watcher.take().changes.is_empty());
    tokio::time::sleep(session::FRAME_TAKEN / 2 + Duration::from_millis(10)).await;
    let changes = watcher.take().changes;
    assert!(changes.contains(&Change::Endpoints(id)), "{changes:?}");
    assert!(changes.contains(&Change::Online(id, true)), "{changes:?}");
    drop(body);

    // Gone before taking anything: the report is announced all the same,
    // the node not online.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _ = watcher.take();
    let body = session::start(c.clone(), id, true, conn::Answer::detached(), report());
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::thread::sleep(Duration::from_millis(200));
    drop(body);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let changes = watcher.take().changes;
    assert!(changes.contains(&Change::Endpoints(id)), "{changes:?}");
    assert!(!changes.contains(&Change::Online(id, true)), "{changes:?}");
}

/// Issue 10, item 8: an ephemeral node that never opened a map stream (or
/// did not come back after a restart: it is loaded without a stream just the
/// same) was never removed; only a closing stream started the count.
#[tokio::test(start_paused = true)]
async fn an_ephemeral_node_that_never_streams_is_removed_too() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop, id) = ephemeral_with_housekeeping(dir.path());
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(c.state.snapshot().nodes.contains_key(&id), "not yet removed");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(removed(&c, id).await, "removed after node.ephemeral.inactivity_timeout without ever streaming");
}

#[tokio::test(start_paused = true)]
async fn a_node_that_comes_back_within_the_grace_period_stays_online_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop, id) = ephemeral_with_housekeeping(dir.path());
    let watcher = c.state.subscribe(999);
    let mut body = session::start(c.clone(), id, true, conn::Answer::detached(), Default::default());
    first_frame(&mut body).await;
    drop(body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut again = session::start(c.clone(), id, true, conn::Answer::detached(), Default::default());
    first_frame(&mut again).await;
    // The client reads what it is sent (keep-alives).
    let reading = tokio::spawn(async move {
        while std::future::poll_fn(|cx| std::pin::Pin::new(&mut again).poll_frame(cx)).await.is_some() {}
    });
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(!reading.is_finished(), "the session ended");
    assert!(!watcher.take().changes.contains(&Change::Online(id, false)));
    assert!(c.state.snapshot().nodes.contains_key(&id));
    assert!(c.state.is_online(id));
}

/// A Noise stream pair over an in-memory pipe: the server's half served by
/// `serve_h2` as `machine`, the client's half speaking HTTP/2.
async fn connection(
    c: &Arc<Control>,
    machine: MachinePublic,
) -> (tokio::task::JoinHandle<()>, NoiseIo<tokio::io::DuplexStream>) {
    let server = [5u8; 32];
    let (init, i) =
        crate::noise::Initiator::start(130, &[3u8; 32], &[4u8; 32], &crate::noise::public_key(&server)).unwrap();
    let (resp, srv) = crate::noise::respond(&server, &[6u8; 32], &init).unwrap();
    let cli = i.finish(&resp).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let served = NoiseIo::new(b, srv.rx, srv.tx, Vec::new());
    let task = tokio::spawn(c.clone().serve_h2(served, machine, 130, [192, 0, 2, 1].into(), true));
    (task, NoiseIo::new(a, cli.rx, cli.tx, Vec::new()))
}

type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>;

async fn h2(io: NoiseIo<tokio::io::DuplexStream>) -> H2 {
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    send
}

fn post(path: &str, body: serde_json::Value) -> Request<http_body_util::Full<Bytes>> {
    Request::post(format!("https://tinyscale{path}"))
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let (task, _client) = connection(&c, MachinePublic([7; 32])).await;
    tokio::time::sleep(FIRST_REQUEST - Duration::from_secs(1)).await;
    assert!(!task.is_finished());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(task.is_finished(), "a silent connection outlived the first-request deadline");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_login_keeps_its_connection_and_an_idle_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let machine = MachinePublic([7; 32]);
    let node = crate::tailcfg::NodePublic([8; 32]);
    let req = serde_json::json!({"Version": 130, "NodeKey": node.to_string()});
    let id = c.state.start_login(machine, &serde_json::from_value(req).unwrap(), [192, 0, 2, 1].into(), Instant::now());
    let followup = format!("http://x/register/{}", id.unwrap());
    let (task, io) = connection(&c, machine).await;
    let mut send = h2(io).await;
    let waiting = send.send_request(post(
        "/machine/register",
        serde_json::json!({"Version": 130, "NodeKey": node.to_string(), "Followup": followup}),
    ));
    let waiting = tokio::spawn(waiting);
    // Nine minutes of waiting for the login: far past the idle timeout, still open.
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert!(!task.is_finished() && !waiting.is_finished(), "a client waiting for its login was cut off");
    // At ten minutes the client is told to ask again; then the connection is idle.
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(IDLE - Duration::from_secs(5)).await;
    assert!(!task.is_finished(), "closed before the idle timeout");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(task.is_finished(), "an idle connection was kept past the idle timeout");
}

#[tokio::test(start_paused = true)]
async fn a_map_stream_keeps_its_connection_open_for_as_long_as_it_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    ephemeral_node(&c);
    let (task, io) = connection(&c, MachinePublic([5; 32])).await;
    let mut send = h2(io).await;
    let map = serde_json::json!({
        "Version": 130, "NodeKey": crate::tailcfg::NodePublic([5; 32]).to_string(), "Stream": true, "Compress": "zstd"
    });
    let r = send.send_request(post("/machine/map", map)).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let mut frames = 0;
    // Thirty minutes of a quiet tailnet: keep-alives flow, the connection stays.
    let end = tokio::time::Instant::now() + Duration::from_secs(30 * 60);
    while let Ok(Some(f)) = tokio::time::timeout_at(end, http_body_util::BodyExt::frame(&mut body)).await {
        assert!(f.is_ok());
        frames += 1;
    }
    assert!(frames >= 30, "{frames} frames in 30 minutes");
    assert!(!task.is_finished(), "a live map stream's connection was closed");
    // The stream ends: the connection is idle, and goes.
    drop(body);
    tokio::time::sleep(IDLE + Duration::from_secs(5)).await;
    assert!(task.is_finished());
}

/// An HTTP/2 client that grants the server no window: it takes no answer.
async fn h2_shut(io: NoiseIo<tokio::io::DuplexStream>) -> H2 {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn stream_request() -> serde_json::Value {
    serde_json::json!({
        "Version": 130, "NodeKey": crate::tailcfg::NodePublic([5; 32]).to_string(), "Stream": true, "Compress": "zstd"
    })
}

/// Review finding 5: an answer the client never grants a window for kept
/// its request in flight, and the connection open for good.
#[tokio::test(start_paused = true)]
async fn an_answer_the_client_does_not_take_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let (task, io) = connection(&c, MachinePublic([7; 32])).await;
    let mut send = h2_shut(io).await;
    let r = send.send_request(post("/machine/whatever", serde_json::json!({}))).await.unwrap();
    assert_eq!(r.status(), 501);
    // Pings are answered, but the answer's body never goes out.
    tokio::time::sleep(ANSWER_DEADLINE - Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "closed before the answer deadline");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(task.is_finished(), "a connection whose answer is never taken outlived the answer deadline");
}

/// Review finding 3: one node could hold any number of map streams.
#[tokio::test(start_paused = true)]
async fn a_new_map_stream_of_a_node_ends_its_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    ephemeral_node(&c);
    let (_task, io) = connection(&c, MachinePublic([5; 32])).await;
    let mut send = h2(io).await;
    let first = send.send_request(post("/machine/map", stream_request())).await.unwrap();
    let mut first = first.into_body();
    assert!(http_body_util::BodyExt::frame(&mut first).await.is_some(), "the first stream's full map");
    let second = send.send_request(post("/machine/map", stream_request())).await.unwrap();
    let mut second = second.into_body();
    assert!(http_body_util::BodyExt::frame(&mut second).await.is_some(), "the second stream's full map");
    // The first ends; the second lives on.
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut first).await {}
    });
    assert!(ended.await.is_ok(), "the older stream was not ended");
    let more = tokio::time::timeout(Duration::from_secs(70), http_body_util::BodyExt::frame(&mut second)).await;
    assert!(matches!(more, Ok(Some(Ok(_)))), "the newer stream got no keep-alive");
}

/// Review finding 3: a map stream the client reads nothing of kept its
/// frames queued, and its connection open, for good.
#[tokio::test(start_paused = true)]
async fn a_map_stream_that_is_not_read_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    ephemeral_node(&c);
    let (task, io) = connection(&c, MachinePublic([5; 32])).await;
    let mut send = h2_shut(io).await;
    let r = send.send_request(post("/machine/map", stream_request())).await.unwrap();
    assert_eq!(r.status(), 200);
    // The full map and a keep-alive wait; the next keep-alive finds no room,
    // and after FRAME_TAKEN more the session gives up.
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    assert!(task.is_finished(), "a map stream that is never read kept its connection");
    drop(r);
}

/// Review finding 3: any number of Noise connections per machine key.
#[tokio::test(start_paused = true)]
async fn a_machines_newest_connections_close_its_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let machine = MachinePublic([7; 32]);
    let mut held = Vec::new();
    for _ in 0..CONNS_PER_MACHINE + 1 {
        let (task, io) = connection(&c, machine).await;
        let mut send = h2(io).await;
        // Each says something, so no first-request deadline is at play.
        assert_eq!(send.send_request(post("/machine/nope", serde_json::json!({}))).await.unwrap().status(), 501);
        held.push((task, send));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let open: Vec<bool> = held.iter().map(|(t, _)| !t.is_finished()).collect();
    assert_eq!(open, [false, true, true], "the oldest goes, the newest stay");
}

/// Review finding 5: any number of requests could wait on one login.
#[tokio::test(start_paused = true)]
async fn a_newer_followup_replaces_the_older_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let machine = MachinePublic([7; 32]);
    let node = crate::tailcfg::NodePublic([8; 32]);
    let req = serde_json::json!({"Version": 130, "NodeKey": node.to_string()});
    let id = c.state.start_login(machine, &serde_json::from_value(req).unwrap(), [192, 0, 2, 1].into(), Instant::now());
    let followup = format!("http://x/register/{}", id.unwrap());
    let (_task, io) = connection(&c, machine).await;
    let mut send = h2(io).await;
    let ask = serde_json::json!({"Version": 130, "NodeKey": node.to_string(), "Followup": followup});
    let first = tokio::spawn(send.send_request(post("/machine/register", ask.clone())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!first.is_finished());
    let second = tokio::spawn(send.send_request(post("/machine/register", ask)));
    // The older one is answered at once (with its URL: it asks again); the newer one waits.
    let r = tokio::time::timeout(Duration::from_secs(1), first).await.expect("the older waiter was kept").unwrap();
    let body = http_body_util::BodyExt::collect(r.unwrap().into_body()).await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("/register/"), "{body:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!second.is_finished());
}

/// The login going (approved) drops its waiter's replacement signal too:
/// that must not read as "replaced". Several rounds, since it was a race.
#[tokio::test(start_paused = true)]
async fn an_approved_login_always_answers_its_waiter_as_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = control(dir.path());
    let alice = c.state.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
    for i in 0..8u8 {
        let machine = MachinePublic([20 + i; 32]);
        let node = crate::tailcfg::NodePublic([40 + i; 32]);
        let req = serde_json::json!({"Version": 130, "NodeKey": node.to_string()});
        let id =
            c.state.start_login(machine, &serde_json::from_value(req).unwrap(), [192, 0, 2, 1].into(), Instant::now());
        let id = id.unwrap();
        let (_task, io) = connection(&c, machine).await;
        let mut send = h2(io).await;
        let ask = serde_json::json!({"Version": 130, "NodeKey": node.to_string(), "Followup": format!("http://x/register/{id}")});
        let waiting = tokio::spawn(send.send_request(post("/machine/register", ask)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.state.approve_login(&id, alice.id, "cli", None, crate::clock::build_epoch() + 10, Instant::now()).unwrap();
        let r = waiting.await.unwrap().unwrap();
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["MachineAuthorized"], true, "round {i}: {v}");
    }
}
