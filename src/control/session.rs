//! A map session: the long-poll stream of one node. It sends the full map,
//! then the smallest delta for each batch of changes, and keep-alives when
//! quiet. A node has one session: a new one ends the one before (as
//! Headscale does), so one node cannot make the server hold many maps.
//! Its outgoing queue is one frame: a client that does not read stalls only
//! its own session, whose change queue then coalesces into one fresh full
//! map; a frame it leaves untaken for [`FRAME_TAKEN`] closes its connection,
//! which is all that frees what HTTP/2 holds for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::Answer;
use super::Control;
use crate::clock;
use crate::mapper::{self, frame, Delta};
use crate::secrets::random_bytes;
use crate::state::events::Subscription;
use crate::state::presence::Update;
use crate::tailcfg::MapResponse;

/// How long a frame may wait for the client to take it (HTTP/2 sends
/// only what the client's window allows): past it the client is gone or
/// holds its window shut, and its connection is closed.
pub const FRAME_TAKEN: Duration = Duration::from_secs(30);
/// Keep-alive period (plus up to 9 s of jitter); clients give up after 120 s.
const KEEPALIVE: Duration = Duration::from_secs(50);
/// How long a node may be gone before peers are told it is offline.
const OFFLINE_GRACE: Duration = Duration::from_secs(10);

/// Marks a response whose body is a map session (its session says when it is finished).
#[derive(Clone, Copy)]
pub struct Streaming;

/// The live session of each node and what ends it.
#[derive(Default)]
pub struct Sessions {
    by_node: HashMap<u64, (u64, Arc<Notify>)>,
    next_id: u64,
}

impl Sessions {
    /// A new session of `node`; returns its id and the older one's closer, if any.
    fn open(&mut self, node: u64, end: Arc<Notify>) -> (u64, Option<Arc<Notify>>) {
        let id = self.next_id;
        self.next_id += 1;
        (id, self.by_node.insert(node, (id, end)).map(|(_, old)| old))
    }

    fn close(&mut self, node: u64, id: u64) {
        if self.by_node.get(&node).is_some_and(|(i, _)| *i == id) {
            self.by_node.remove(&node);
        }
    }
}

/// The one frame queued towards a client, besides the one HTTP/2 is
/// sending, between its session and its response body. (A tokio mpsc
/// channel of one place allocated its slots in blocks of 32: 2 KiB per
/// stream once a second block was needed.)
struct Slot {
    state: std::sync::Mutex<SlotState>,
    /// Wakes the session: the frame was taken, or the body is gone.
    taken: Notify,
}

#[derive(Default)]
struct SlotState {
    frame: Option<Bytes>,
    /// The body waiting for a frame.
    waiting: Option<Waker>,
    /// The body was dropped: the stream is over.
    body_gone: bool,
    /// The session ended: no frame comes after the one in `frame`.
    ended: bool,
    /// HTTP/2 has taken a frame.
    took: bool,
    /// HTTP/2 asked for more after taking one: hyper (1.12) asks once it
    /// handed the frame to h2 and the stream has window, and the
    /// connection's task, to write it, is then queued on the runtime.
    asked_again: bool,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session's side of its [`Slot`]; dropping it ends the body.
struct Outbox(Arc<Slot>);

enum Put {
    Full(Bytes),
    Gone,
}

impl Outbox {
    fn try_put(&self, frame: Bytes) -> Result<(), Put> {
        let mut s = self.0.state();
        if s.body_gone {
            return Err(Put::Gone);
        }
        if s.frame.is_some() {
            return Err(Put::Full(frame));
        }
        s.frame = Some(frame);
        let waiting = s.waiting.take();
        drop(s);
        if let Some(w) = waiting {
            w.wake();
        }
        Ok(())
    }

    /// Until the body is dropped.
    async fn closed(&self) {
        self.until(|s| s.body_gone.then_some(())).await
    }

    /// Waits until `seen` finds what it looks for in the slot, looking
    /// again each time the body takes a frame, asks for more or is dropped.
    async fn until<T>(&self, mut seen: impl FnMut(&SlotState) -> Option<T>) -> T {
        loop {
            // Made before the look, so a wake-up in between is not missed;
            // a permit left by an earlier one only makes it look again.
            let notified = self.0.taken.notified();
            if let Some(found) = seen(&self.0.state()) {
                return found;
            }
            notified.await;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.ended = true;
        let waiting = s.waiting.take();
        drop(s);
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

/// The streaming response body: frames as the session produces them.
pub struct MapBody {
    slot: Arc<Slot>,
}

impl hyper::body::Body for MapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut s = self.slot.state();
        let news = s.took && !std::mem::replace(&mut s.asked_again, true);
        if let Some(frame) = s.frame.take() {
            s.took = true;
            drop(s);
            self.slot.taken.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if !s.waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waiting = Some(cx.waker().clone());
        }
        drop(s);
        if news {
            self.slot.taken.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for MapBody {
    fn drop(&mut self) {
        let mut s = self.slot.state();
        s.body_gone = true;
        s.frame = None;
        drop(s);
        self.slot.taken.notify_one();
    }
}

/// One frame of `resp`: a zstd frame if the client asked for one
/// (`Compress: "zstd"`), compressed if `compress` (`tuning.compress_maps`).
fn encode(resp: &MapResponse, zstd: bool, compress: bool) -> Bytes {
    encode_json(resp, zstd, compress).0
}

/// The frame of `resp` and its JSON's length.
fn encode_json(resp: &MapResponse, zstd: bool, compress: bool) -> (Bytes, usize) {
    // MapResponse holds only strings, numbers and raw JSON: it always serializes.
    let json = serde_json::to_vec(resp).unwrap_or_default();
    let frame = if zstd {
        frame::map_frame(&json, compress)
    } else {
        let mut v = Vec::with_capacity(4 + json.len());
        v.extend_from_slice(&(json.len() as u32).to_le_bytes());
        v.extend_from_slice(&json);
        v
    };
    (Bytes::from(frame), json.len())
}

/// A full map for `node_id`, built off the async runtime (it is O(peers)).
pub async fn full_frame(control: &Arc<Control>, node_id: u64, zstd: bool) -> Option<Bytes> {
    full_frame_sent(control, node_id, zstd).await.map(|f| f.bytes)
}

struct FullFrame {
    bytes: Bytes,
    /// The JSON's length, before the frame's compression.
    json_len: usize,
    sent: mapper::Sent,
    /// Whether it lists peers: a full map without `Peers` does not clear
    /// the peers a client holds (Tailscale reads an empty list as "no news").
    has_peers: bool,
}

/// A full map and what it told the client.
async fn full_frame_sent(control: &Arc<Control>, node_id: u64, zstd: bool) -> Option<FullFrame> {
    let ctx = control.state.map_context();
    let state = control.state.clone();
    let compress = control.compress_maps;
    tokio::task::spawn_blocking(move || {
        let snap = state.snapshot();
        let now = clock::now_unix();
        let resp = state.with_presence(|p| mapper::full(&ctx, &snap, p, node_id, now))?;
        let (bytes, json_len) = encode_json(&resp, zstd, compress);
        Some(FullFrame {
            bytes,
            json_len,
            sent: mapper::Sent::after_full(&snap, node_id, now),
            has_peers: resp.peers.is_some(),
        })
    })
    .await
    .ok()
    .flatten()
}

/// The keep-alive jitter of one session: seeded once from the system's
/// generator, then xorshift, so a frame costs no system call. (It only
/// spreads the keep-alives of many sessions; nothing depends on it.)
struct Jitter(u32);

impl Jitter {
    fn new() -> Jitter {
        let mut b = [0u8; 4];
        let _ = random_bytes(&mut b);
        // Xorshift must not start from zero.
        Jitter(u32::from_le_bytes(b) | 1)
    }

    fn next_deadline(&mut self) -> Instant {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        Instant::now() + KEEPALIVE + Duration::from_millis(u64::from(x % 9001))
    }
}

/// Starts the map session of `node_id`, which answers the request `answer`,
/// and ends the node's older one. Peers hear of `report` (what the request
/// reported, recorded but not yet announced) once the first map is out.
pub fn start(control: Arc<Control>, node_id: u64, zstd: bool, answer: Answer, report: Update) -> MapBody {
    let slot = Arc::new(Slot { state: std::sync::Mutex::default(), taken: Notify::new() });
    let tx = Outbox(slot.clone());
    // Subscribe before the full map is built, so no change falls between them.
    let sub = control.state.subscribe(node_id);
    let end = Arc::new(Notify::new());
    let (id, older) = control.sessions().open(node_id, end.clone());
    if let Some(older) = older {
        older.notify_one();
    }
    tokio::spawn(async move {
        let taken = run(&control, node_id, zstd, sub, tx, &end, report).await;
        control.sessions().close(node_id, id);
        // What is left (the last frames, the end of the stream) must go soon,
        // or at once when the client took nothing for too long.
        if taken {
            answer.finished();
        } else {
            answer.abandon();
        }
    });
    MapBody { slot }
}

impl Control {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queues `frame`, waiting at most [`FRAME_TAKEN`] for room. `Err(true)`:
/// the client is gone; `Err(false)`: it left the frame before untaken.
async fn send(tx: &Outbox, frame: Bytes) -> Result<(), bool> {
    // Mostly there is room: then no timer is set (a change goes to every stream).
    let mut frame = match tx.try_put(frame) {
        Ok(()) => return Ok(()),
        Err(Put::Gone) => return Err(true),
        Err(Put::Full(frame)) => frame,
    };
    let room = async {
        loop {
            // Made before the look, so a take in between is not missed.
            let notified = tx.0.taken.notified();
            frame = match tx.try_put(frame) {
                Ok(()) => return Ok(()),
                Err(Put::Gone) => return Err(true),
                Err(Put::Full(frame)) => frame,
            };
            notified.await;
        }
    };
    tokio::time::timeout(FRAME_TAKEN, room).await.unwrap_or(Err(false))
}

/// Waits until HTTP/2 has the first frame and asked for more, or
/// [`FRAME_TAKEN`] has passed (a client may hold its window shut: the
/// frames after it see to that); `Err(true)`: the client is gone, a newer session replaces
/// this one or the server stops.
async fn first_out(tx: &Outbox, control: &Control, end: &Notify) -> Result<(), bool> {
    let asked = tx.until(|s| match (s.body_gone, s.asked_again) {
        (true, _) => Some(Err(true)),
        (false, true) => Some(Ok(())),
        (false, false) => None,
    });
    let mut shutdown = control.shutdown.clone();
    tokio::select! {
        r = asked => r,
        _ = tokio::time::sleep(FRAME_TAKEN) => Ok(()),
        _ = shutdown.changed() => Err(true),
        _ = end.notified() => Err(true),
    }
}

/// Runs the session until it ends; whether the client took its frames.
/// The node counts as streaming (not idle, not reaped) from the start,
/// and online to peers once its first map is out.
async fn run(
    control: &Arc<Control>,
    node_id: u64,
    zstd: bool,
    sub: Subscription,
    tx: Outbox,
    end: &Notify,
    report: Update,
) -> bool {
    let state = &control.state;
    state.stream_started(node_id);
    let taken = serve(control, node_id, zstd, &sub, &tx, end, report).await;
    drop(sub);
    log::debug!("node {node_id}: map stream closed");
    if state.stream_closed(node_id, clock::now_unix(), clock::mono_secs()) {
        tokio::spawn(went_away(control.clone(), node_id));
    }
    taken
}

/// [`run`]'s stream: the first map, then deltas until it ends.
async fn serve(
    control: &Arc<Control>,
    node_id: u64,
    zstd: bool,
    sub: &Subscription,
    tx: &Outbox,
    end: &Notify,
    report: Update,
) -> bool {
    let state = &control.state;
    let began = Instant::now();
    let first = match full_frame_sent(control, node_id, zstd).await {
        Some(f) => {
            log::debug!(
                "node {node_id}: first map of {} B ({} B of JSON) built in {:?}",
                f.bytes.len(),
                f.json_len,
                began.elapsed()
            );
            send(tx, f.bytes).await.map(|()| f.sent)
        }
        None => Err(true),
    };
    // Peers hear of this node (what it reported, then that it is online)
    // only once h2 has its first map: their deltas are tasks on the
    // runtime's one thread, run in the order they are woken, and woken
    // before the connection's task that writes the map they held it back
    // by the whole fan-out.
    let first = match first {
        Ok(sent) => first_out(tx, control, end).await.map(|()| sent),
        Err(gone) => Err(gone),
    };
    log::debug!("node {node_id}: first map out after {:?}", began.elapsed());
    state.announce_report(node_id, &report, Some(sub));
    let mut sent = match first {
        Ok(sent) => sent,
        Err(gone) => return gone,
    };
    if state.show_online(node_id) {
        elect_primaries(state.clone());
    }
    log::debug!("node {node_id}: map stream open");
    let mut jitter = Jitter::new();
    // One timer for the session, moved at each frame rather than made anew.
    let keepalive = tokio::time::sleep_until(jitter.next_deadline());
    tokio::pin!(keepalive);
    let mut shutdown = control.shutdown.clone();
    let mut taken = true;
    loop {
        // A keep-alive tick also looks for a key that expired by the clock.
        let (changes, resync, quiet) = tokio::select! {
            _ = sub.changed() => {
                let p = sub.take();
                (p.changes, p.resync, false)
            }
            _ = &mut keepalive => (Vec::new(), false, true),
            _ = tx.closed() => break,
            _ = shutdown.changed() => break,
            _ = end.notified() => {
                log::debug!("node {node_id}: a newer map stream replaces this one");
                break;
            }
        };
        let delta = if resync {
            Delta::Full
        } else {
            let ctx = control.state.map_context();
            let snap = state.snapshot();
            let now = clock::now_unix();
            state.with_presence(|p| mapper::delta(&ctx, &snap, p, node_id, &changes, now, &mut sent))
        };
        let out = match delta {
            // Deltas are encoded here, on the runtime's one thread, once per
            // session: never compressed (a node's own change could make each
            // one large). Only full maps are, on the blocking pool.
            Delta::Nothing if quiet => encode(&mapper::keepalive(), zstd, false),
            Delta::Nothing => continue,
            Delta::Send(resp) => encode(&resp, zstd, false),
            Delta::Full => match full_frame_sent(control, node_id, zstd).await {
                Some(f) if f.has_peers => {
                    sent = f.sent;
                    f.bytes
                }
                // No peers to replace the client's with: end the stream, and
                // the client's next one starts from nothing.
                _ => break,
            },
            Delta::SelfGone => break,
        };
        if let Err(gone) = send(tx, out).await {
            if !gone {
                log::debug!("node {node_id}: a map frame went untaken for {FRAME_TAKEN:?}; closing");
            }
            taken = gone;
            break;
        }
        keepalive.as_mut().reset(jitter.next_deadline());
    }
    taken
}

/// After a node's last stream closed: tell peers it is offline unless it
/// came back within the grace period. (An ephemeral node that stays away is
/// removed by `server::housekeeping`.)
async fn went_away(control: Arc<Control>, node_id: u64) {
    tokio::time::sleep(OFFLINE_GRACE).await;
    if control.state.announce_if_offline(node_id) {
        elect_primaries(control.state.clone());
    }
}

/// Who is online changed: the primary routers are elected again, off the
/// runtime (it takes the state's writer lock, which a store write may hold).
fn elect_primaries(state: Arc<crate::state::State>) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = state.elect_primaries() {
            log::warn!("electing the primary routers failed: {e}");
        }
    });
}
