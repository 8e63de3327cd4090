//! The relay server: one task per client reading its frames, and a writer
//! task draining a small bounded queue. A client that does not read loses
//! packets (its queue is full, so new ones are dropped) and never makes
//! anyone else wait or the server grow: its queue is bounded in frames and
//! bytes, all queues together in bytes, and a write that does not complete
//! within [`WRITE_TIMEOUT`] closes it (Tailscale's derper does the same).
//! A key keeps at most [`CONNS_PER_KEY`] connections: a newer one closes
//! the oldest, and packets go to the newest.
//!
//! Until a client has proven its key it holds one of a few handshake places
//! (never a client's place under `derp.server.max_clients`; a few per
//! source address), may send only a small ClientInfo frame, and gets no
//! queue or writer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::frame::{self, Frame, Key};
use super::handshake::{self, ClientInfo};
use crate::quota::Places;
use crate::state::{has_passed, State};
use crate::tailcfg::NodePublic;

/// Frames queued towards one client before new ones are dropped.
const QUEUE: usize = 64;
/// Bytes queued towards one client (four of the largest packets, hundreds
/// of real ones), and towards all of them together.
pub const QUEUE_BYTES: usize = 256 * 1024;
pub const RELAY_QUEUE_BYTES: usize = 4 << 20;
/// How long one write to a client may take before it is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections one key may hold (a client may reconnect before its old
/// connection is noticed gone).
pub const CONNS_PER_KEY: usize = 2;
/// Frames the writer gathers into one write.
const BATCH: usize = 64 * 1024;
/// Peers a client remembers sending to (told when it leaves).
const MAX_PEERS: usize = 256;
/// From the upgrade to the client's proven key.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in flight at once, apart from the admitted clients, and from
/// one source address (its IPv6 /56 twice that).
pub const MAX_HANDSHAKING: usize = 32;
pub const HANDSHAKING_PER_SOURCE: usize = 8;
/// A ClientInfo frame: the key, the box's nonce and tag, and a JSON of tens
/// of bytes (a mesh key is 64 more).
pub const MAX_CLIENT_INFO: usize = 4 * 1024;
/// Keep-alive period (plus up to 5 s of jitter).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// What waits to be written to one client, with its byte count.
#[derive(Default)]
struct Pending {
    frames: VecDeque<Bytes>,
    /// Bytes queued and being written (a frame counts until it is written).
    bytes: usize,
    /// No more frames are taken: the connection is ending.
    closed: bool,
}

/// One connection's outgoing side: its bounded queue, the writer's wake-up
/// and the connection's close signal, in one allocation. An idle client
/// holds no queue memory: the queue's buffer is released whenever the
/// writer empties it (tokio's bounded channel kept a 1.3 KiB block of
/// slots for each client, idle or not).
struct Outbox {
    pending: Mutex<Pending>,
    /// Frames were queued, or the queue closed.
    ready: Notify,
    /// Ends the connection: its node is gone, or it connected again.
    close: Notify,
    /// Bytes queued towards all clients.
    relay: Arc<AtomicUsize>,
}

/// What the writer found queued.
enum Taken {
    /// The bytes to write, and how many bytes they were charged.
    Frames(Bytes, usize),
    Nothing,
    Closed,
}

impl Outbox {
    fn new(relay: Arc<AtomicUsize>) -> Outbox {
        Outbox { pending: Mutex::default(), ready: Notify::new(), close: Notify::new(), relay }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes` unless the queue is full in frames or bytes (or all
    /// queues together are), or closed: a slow reader loses packets, nobody
    /// waits.
    fn push(&self, bytes: Bytes) -> bool {
        let n = bytes.len();
        let mut p = self.pending();
        if p.closed || p.frames.len() >= QUEUE || p.bytes + n > QUEUE_BYTES {
            return false;
        }
        if self.relay.fetch_add(n, Ordering::Relaxed) + n > RELAY_QUEUE_BYTES {
            self.relay.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        p.bytes += n;
        p.frames.push_back(bytes);
        drop(p);
        self.ready.notify_one();
        true
    }

    /// Takes what is queued, up to [`BATCH`] bytes (at least one frame), as
    /// one write.
    fn take(&self) -> Taken {
        let mut p = self.pending();
        let Some(first) = p.frames.pop_front() else {
            // Nothing queued: the buffer goes back, an idle client keeps none.
            p.frames = VecDeque::new();
            return if p.closed { Taken::Closed } else { Taken::Nothing };
        };
        let mut size = first.len();
        if p.frames.is_empty() || size >= BATCH {
            return Taken::Frames(first, size);
        }
        // The frames that join it (while under BATCH, the last one whole),
        // counted first so the write is allocated at its exact size.
        let mut joining = 0;
        for f in &p.frames {
            if size >= BATCH {
                break;
            }
            size += f.len();
            joining += 1;
        }
        let mut batch = Vec::with_capacity(size);
        batch.extend_from_slice(&first);
        for f in p.frames.drain(..joining) {
            batch.extend_from_slice(&f);
        }
        Taken::Frames(Bytes::from(batch), size)
    }

    /// `n` bytes were written (or given up on): they count no longer.
    fn written(&self, n: usize) {
        let mut p = self.pending();
        p.bytes -= n;
        self.relay.fetch_sub(n, Ordering::Relaxed);
    }

    /// No more frames are queued; the writer writes what is there and ends.
    fn finish(&self) {
        self.pending().closed = true;
        self.ready.notify_one();
    }

    /// The writer is gone: what is queued is thrown away and given back.
    fn abandon(&self) {
        let mut p = self.pending();
        p.closed = true;
        let queued: usize = p.frames.iter().map(Bytes::len).sum();
        p.frames = VecDeque::new();
        p.bytes -= queued;
        self.relay.fetch_sub(queued, Ordering::Relaxed);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Whatever is still counted (a writer cancelled mid-write) goes back.
        let p = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        self.relay.fetch_sub(p.bytes, Ordering::Relaxed);
    }
}

/// One connection of a key.
struct Conn {
    id: usize,
    outbox: Arc<Outbox>,
}

pub struct Relay {
    private: [u8; 32],
    public: [u8; 32],
    /// The connections of each key, oldest first; packets go to the newest.
    clients: Mutex<HashMap<Key, Vec<Conn>>>,
    /// `derp.server.verify_clients`: only registered node keys may connect.
    verify: Option<Arc<State>>,
    slots: Arc<Semaphore>,
    handshaking: Arc<Mutex<Places>>,
    next_conn: AtomicUsize,
    /// Bytes queued towards all clients.
    queued: Arc<AtomicUsize>,
}

/// A handshake's place; given back when dropped.
pub struct Handshaking {
    places: Arc<Mutex<Places>>,
    from: IpAddr,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.places.lock().unwrap_or_else(|e| e.into_inner()).give_back(self.from);
    }
}

#[derive(Debug)]
enum End {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

/// A frame's header: its type and the length of the body still to read,
/// refused past `max`.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<(u8, usize), End> {
    let mut h = [0u8; frame::HEADER_LEN];
    r.read_exact(&mut h).await?;
    let (kind, len) = match frame::header(&h) {
        Ok(Some(x)) => x,
        Ok(None) => unreachable!("five bytes were read"),
        Err(e) => return Err(End::Refused(e.to_string())),
    };
    if len > max {
        return Err(End::Refused(format!("frame of {len} bytes")));
    }
    Ok((kind, len))
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<(u8, Vec<u8>), End> {
    let (kind, len) = read_header(r, max).await?;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    Ok((kind, p))
}

fn encoded(f: &Frame) -> Bytes {
    let mut b = Vec::new();
    frame::encode(f, &mut b);
    Bytes::from(b)
}

impl Relay {
    pub fn new(private: [u8; 32], verify: Option<Arc<State>>, max_clients: usize) -> Relay {
        Relay {
            public: crate::noise::public_key(&private),
            private,
            clients: Mutex::new(HashMap::new()),
            verify,
            slots: Arc::new(Semaphore::new(max_clients)),
            handshaking: Arc::new(Mutex::new(Places::new(MAX_HANDSHAKING, HANDSHAKING_PER_SOURCE))),
            next_conn: AtomicUsize::new(0),
            queued: Arc::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Conn>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every connection of `key` (its node was deleted, expired or took
    /// a new key). Returns whether there was one.
    pub fn close_node(&self, key: NodePublic) -> bool {
        match self.clients().get(&key.0) {
            Some(conns) => {
                conns.iter().for_each(|c| c.outbox.close.notify_one());
                true
            }
            None => false,
        }
    }

    /// Adds a connection of `key`; a key past [`CONNS_PER_KEY`] loses its oldest.
    fn add(&self, key: Key, conn: Conn) {
        let mut clients = self.clients();
        let conns = clients.entry(key).or_default();
        conns.push(conn);
        if conns.len() > CONNS_PER_KEY {
            let oldest = conns.remove(0);
            log::debug!(
                "{} connected a {}th time: closing its oldest connection",
                NodePublic(key).short(),
                CONNS_PER_KEY + 1
            );
            oldest.outbox.close.notify_one();
        }
    }

    /// Takes connection `id` of `key` out; whether the key has none left.
    fn remove(&self, key: Key, id: usize) -> bool {
        let mut clients = self.clients();
        let Some(conns) = clients.get_mut(&key) else { return true };
        conns.retain(|c| c.id != id);
        if !conns.is_empty() {
            return false;
        }
        clients.remove(&key);
        true
    }

    /// Where packets for `key` go: its newest connection.
    fn outbox(&self, key: &Key) -> Option<Arc<Outbox>> {
        self.clients().get(key).and_then(|c| c.last()).map(|c| c.outbox.clone())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// A place for one more handshake from `from`, if the relay has room
    /// for a client. The client's own place is taken only once it has
    /// proven its key.
    pub fn try_handshake(&self, from: IpAddr) -> Result<Handshaking, &'static str> {
        if self.slots.available_permits() == 0 {
            return Err("relay full");
        }
        if !self.handshaking.lock().unwrap_or_else(|e| e.into_inner()).take(from) {
            return Err("too many relay handshakes at once; retry");
        }
        Ok(Handshaking { places: self.handshaking.clone(), from })
    }

    /// Keys connected.
    pub fn client_count(&self) -> usize {
        self.clients().len()
    }

    /// Bytes queued towards all clients.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn admitted(&self, key: &Key) -> Result<(), String> {
        let Some(state) = &self.verify else { return Ok(()) };
        let nk = NodePublic(*key);
        let snap = state.snapshot();
        match snap.node_by_key(&nk) {
            None => Err(format!("{nk} is not a node of this tailnet")),
            Some(n) if n.expiry.is_some_and(|e| has_passed(e, crate::clock::now_unix())) => {
                Err(format!("{nk} has expired"))
            }
            Some(_) => Ok(()),
        }
    }

    /// Runs one client connection (after the HTTP upgrade) until it ends.
    /// `handshaking` is its handshake place, given back once the handshake ends.
    pub async fn serve<S>(self: Arc<Self>, io: S, handshaking: Handshaking)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        // Boxed: the handshake's state is freed once it ends instead of
        // sizing this future (and so every idle client's task) for it.
        let hello = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut rd, &mut wr))).await;
        drop(handshaking);
        let (key, _slot) = match hello {
            Ok(Ok(k)) => k,
            // Debug: anyone can have a handshake refused, as often as it connects.
            Ok(Err(End::Refused(why))) => return log::debug!("client refused: {why}"),
            Ok(Err(End::Io(e))) => return log::debug!("handshake: {e}"),
            Err(_) => return log::debug!("handshake timed out"),
        };
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.queued.clone()));
        self.add(key, Conn { id, outbox: outbox.clone() });
        log::debug!("{} connected", NodePublic(key).short());
        let mut writer = tokio::spawn(write_loop(wr, outbox.clone()));
        let mut sent_to = HashSet::new();
        let end = tokio::select! {
            end = self.read_loop(&mut rd, key, &outbox, &mut sent_to) => end,
            _ = outbox.close.notified() => Err(End::Refused("its node is gone, or it connected again".into())),
            _ = &mut writer => Err(End::Refused(format!("a write did not complete within {WRITE_TIMEOUT:?}"))),
        };
        if let Err(End::Refused(why)) = &end {
            log::debug!("closing {}: {why}", NodePublic(key).short());
        }
        if self.remove(key, id) {
            // Whoever heard from this client learns it is gone.
            let gone = encoded(&Frame::PeerGone { key, reason: frame::GONE_DISCONNECTED });
            for k in &sent_to {
                if let Some(o) = self.outbox(k) {
                    o.push(gone.clone());
                }
            }
        }
        // The writer writes what is queued, then ends.
        outbox.finish();
        if !writer.is_finished() {
            let _ = writer.await;
        }
        log::debug!("{} disconnected", NodePublic(key).short());
    }

    /// The key exchange; the proven key and its client place.
    async fn handshake<R, W>(&self, rd: &mut R, wr: &mut W) -> Result<(Key, OwnedSemaphorePermit), End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        wr.write_all(&encoded(&Frame::ServerKey(self.public))).await?;
        wr.flush().await?;
        let (kind, payload) = read_frame(rd, MAX_CLIENT_INFO).await?;
        let Ok(Frame::ClientInfo { key, sealed }) = frame::parse(kind, &payload) else {
            return Err(End::Refused(format!("expected ClientInfo, got frame type {kind:#04x}")));
        };
        let json = handshake::open(&self.private, &key, &sealed).map_err(|e| End::Refused(e.to_string()))?;
        let info: ClientInfo =
            serde_json::from_slice(&json).map_err(|_| End::Refused("ClientInfo is not JSON".into()))?;
        if info.mesh_key.is_some() {
            return Err(End::Refused("a mesh peer, but this relay has no mesh".into()));
        }
        self.admitted(&key).map_err(End::Refused)?;
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| End::Refused("relay full".into()))?;
        let mut nonce = [0u8; handshake::NONCE_LEN];
        crate::secrets::random_bytes(&mut nonce).map_err(|_| End::Refused("no randomness".into()))?;
        let sealed = handshake::seal(&self.private, &key, nonce, handshake::SERVER_INFO);
        wr.write_all(&encoded(&Frame::ServerInfo(sealed))).await?;
        wr.flush().await?;
        Ok((key, slot))
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        me: Key,
        own: &Outbox,
        sent_to: &mut HashSet<Key>,
    ) -> Result<(), End> {
        // PeerGone(not here) answers: a token bucket of 3, one token a second.
        let (mut tokens, mut refilled) = (3u32, Instant::now());
        loop {
            // Reads served from TLS's own buffer never count against tokio's
            // budget; without this a busy sender starves the writers it feeds.
            tokio::task::consume_budget().await;
            let (kind, len) = read_header(rd, frame::KEY_LEN + frame::MAX_PACKET).await?;
            if kind == frame::SEND_PACKET {
                if len < frame::KEY_LEN {
                    return Err(End::Refused(format!("SendPacket of {len} bytes")));
                }
                // The hot path, without a copy: the frame is read after room for
                // a header, and becomes the RecvPacket frame in place (the
                // sender's key takes the place of the destination's, same size).
                let mut buf = vec![0u8; frame::HEADER_LEN + len];
                rd.read_exact(&mut buf[frame::HEADER_LEN..]).await?;
                let mut dst = [0u8; frame::KEY_LEN];
                dst.copy_from_slice(&buf[frame::HEADER_LEN..frame::HEADER_LEN + frame::KEY_LEN]);
                match self.outbox(&dst) {
                    Some(to) => {
                        buf[0] = frame::RECV_PACKET;
                        buf[1..frame::HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
                        buf[frame::HEADER_LEN..frame::HEADER_LEN + frame::KEY_LEN].copy_from_slice(&me);
                        // A full queue means a slow reader: drop, never wait.
                        to.push(Bytes::from(buf));
                        if sent_to.len() < MAX_PEERS {
                            sent_to.insert(dst);
                        }
                    }
                    None if frame::is_disco(&buf[frame::HEADER_LEN + frame::KEY_LEN..]) => {
                        let now = Instant::now();
                        let add = now.duration_since(refilled).as_secs() as u32;
                        if add > 0 {
                            tokens = (tokens + add).min(3);
                            refilled = now;
                        }
                        if tokens > 0 {
                            tokens -= 1;
                            own.push(encoded(&Frame::PeerGone { key: dst, reason: frame::GONE_NOT_HERE }));
                        }
                    }
                    None => {}
                }
                continue;
            }
            let mut payload = vec![0u8; len];
            rd.read_exact(&mut payload).await?;
            match frame::parse(kind, &payload).map_err(|e| End::Refused(e.to_string()))? {
                Frame::Ping(data) => {
                    own.push(encoded(&Frame::Pong(data)));
                }
                Frame::WatchConns | Frame::ClosePeer(_) | Frame::ForwardPacket { .. } => {
                    return Err(End::Refused("mesh frames from a client that is not a mesh peer".into()));
                }
                // NotePreferred, Pong, KeepAlive and anything unknown: nothing to do.
                _ => {}
            }
        }
    }
}

fn keepalive_deadline() -> Instant {
    let mut b = [0u8; 1];
    let _ = crate::secrets::random_bytes(&mut b);
    Instant::now() + KEEPALIVE + Duration::from_millis(b[0] as u64 * 5000 / 255)
}

/// Writes what is queued for one client until its queue closes, a write
/// fails, or a write takes longer than [`WRITE_TIMEOUT`]. Frames stay
/// charged to the queues until they are written.
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, outbox: Arc<Outbox>) {
    let keepalive = encoded(&Frame::KeepAlive);
    let mut next = keepalive_deadline();
    loop {
        let (out, charged) = match outbox.take() {
            Taken::Frames(out, charged) => (out, charged),
            Taken::Closed => break,
            Taken::Nothing => tokio::select! {
                _ = outbox.ready.notified() => continue,
                _ = tokio::time::sleep_until(next) => (keepalive.clone(), 0),
            },
        };
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        let done = tokio::time::timeout(WRITE_TIMEOUT, write).await;
        outbox.written(charged);
        match done {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            // A client that does not read: no goodbye, it would not be read either.
            Err(_) => return outbox.abandon(),
        }
        next = keepalive_deadline();
    }
    outbox.abandon();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn a_queue_is_bounded_in_frames_and_bytes_and_gives_everything_back() {
        let relay = Arc::new(AtomicUsize::new(0));
        let q = Outbox::new(relay.clone());
        for _ in 0..QUEUE {
            assert!(q.push(frame(10)));
        }
        assert!(!q.push(frame(10)), "a 65th frame");
        let Taken::Frames(out, charged) = q.take() else { panic!("frames queued") };
        assert_eq!((out.len(), charged), (QUEUE * 10, QUEUE * 10));
        // Taken but not yet written: still charged.
        assert_eq!(relay.load(Ordering::Relaxed), QUEUE * 10);
        q.written(charged);
        assert_eq!(relay.load(Ordering::Relaxed), 0);
        let big = frame(QUEUE_BYTES / 4);
        for _ in 0..4 {
            assert!(q.push(big.clone()));
        }
        assert!(!q.push(frame(1)), "past QUEUE_BYTES");
        q.abandon();
        assert_eq!(relay.load(Ordering::Relaxed), 0);
        assert!(!q.push(frame(1)), "a closed queue takes nothing");
    }

    #[test]
    fn all_queues_together_are_bounded_and_a_dropped_queue_gives_back() {
        let relay = Arc::new(AtomicUsize::new(RELAY_QUEUE_BYTES - 100));
        let q = Outbox::new(relay.clone());
        assert!(!q.push(frame(101)));
        assert!(q.push(frame(100)));
        let Taken::Frames(_, charged) = q.take() else { panic!("a frame queued") };
        assert_eq!(charged, 100);
        // Dropped mid-write (its task cancelled): the bytes still go back.
        drop(q);
        assert_eq!(relay.load(Ordering::Relaxed), RELAY_QUEUE_BYTES - 100);
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer_and_a_closed_one_drains_first() {
        let q = Outbox::new(Arc::default());
        assert!(q.push(frame(3)) && q.push(frame(4)));
        q.finish();
        assert!(!q.push(frame(5)));
        let Taken::Frames(out, 7) = q.take() else { panic!("two frames in one write") };
        assert_eq!(out.len(), 7);
        q.written(7);
        assert!(matches!(q.take(), Taken::Closed));
        assert_eq!(q.pending().frames.capacity(), 0, "an idle client keeps no queue buffer");
        let q = Outbox::new(Arc::default());
        assert!(matches!(q.take(), Taken::Nothing));
    }

    #[test]
    fn a_write_gathers_at_most_a_batch() {
        let q = Outbox::new(Arc::default());
        for _ in 0..3 {
            assert!(q.push(frame(BATCH / 2)));
        }
        let Taken::Frames(out, n) = q.take() else { panic!("frames queued") };
        assert_eq!((out.len(), n), (BATCH, BATCH));
        let Taken::Frames(out, _) = q.take() else { panic!("one left") };
        assert_eq!(out.len(), BATCH / 2);
    }
}
