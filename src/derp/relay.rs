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

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
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

/// Bytes queued: one client's, and all clients' together.
struct Queued {
    client: AtomicUsize,
    relay: Arc<AtomicUsize>,
}

impl Queued {
    /// Counts `n` more bytes if both stay within their bounds.
    fn take(&self, n: usize) -> bool {
        if self.client.fetch_add(n, Ordering::Relaxed) + n > QUEUE_BYTES {
            self.client.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        if self.relay.fetch_add(n, Ordering::Relaxed) + n > RELAY_QUEUE_BYTES {
            self.relay.fetch_sub(n, Ordering::Relaxed);
            self.client.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.client.fetch_sub(n, Ordering::Relaxed);
        self.relay.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A queued frame; its bytes are given back when it is dropped (written,
/// or thrown away with its queue).
struct Charged {
    bytes: Bytes,
    queued: Arc<Queued>,
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.queued.give_back(self.bytes.len());
    }
}

/// What sends to one client: its bounded queue.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Charged>,
    queued: Arc<Queued>,
}

impl Outbox {
    /// Queues `bytes` unless the queue is full in frames or bytes (or all
    /// queues together are): a slow reader loses packets, nobody waits.
    fn push(&self, bytes: Bytes) -> bool {
        if !self.queued.take(bytes.len()) {
            return false;
        }
        // A refused frame is dropped here, and gives its bytes back.
        self.tx.try_send(Charged { bytes, queued: self.queued.clone() }).is_ok()
    }
}

/// One connection of a key.
struct Conn {
    id: usize,
    outbox: Outbox,
    close: Arc<Notify>,
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
                conns.iter().for_each(|c| c.close.notify_one());
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
            oldest.close.notify_one();
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
    fn outbox(&self, key: &Key) -> Option<Outbox> {
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
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut rd, &mut wr)).await;
        drop(handshaking);
        let (key, _slot) = match hello {
            Ok(Ok(k)) => k,
            // Debug: anyone can have a handshake refused, as often as it connects.
            Ok(Err(End::Refused(why))) => return log::debug!("client refused: {why}"),
            Ok(Err(End::Io(e))) => return log::debug!("handshake: {e}"),
            Err(_) => return log::debug!("handshake timed out"),
        };
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel::<Charged>(QUEUE);
        let queued = Arc::new(Queued { client: AtomicUsize::new(0), relay: self.queued.clone() });
        let outbox = Outbox { tx, queued };
        self.add(key, Conn { id, outbox: outbox.clone(), close: close.clone() });
        log::debug!("{} connected", NodePublic(key).short());
        let mut writer = tokio::spawn(write_loop(wr, rx));
        let mut sent_to = HashSet::new();
        let end = tokio::select! {
            end = self.read_loop(&mut rd, key, &outbox, &mut sent_to) => end,
            _ = close.notified() => Err(End::Refused("its node is gone, or it connected again".into())),
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
        drop(outbox);
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
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Charged>) {
    let keepalive = encoded(&Frame::KeepAlive);
    let mut next = keepalive_deadline();
    loop {
        let mut held = Vec::new();
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => held.push(f),
                None => break,
            },
            _ = tokio::time::sleep_until(next) => {}
        }
        // Whatever else is queued goes out in the same write.
        let mut size = held.first().map_or(0, |f| f.bytes.len());
        while size > 0 && size < BATCH {
            match rx.try_recv() {
                Ok(f) => {
                    size += f.bytes.len();
                    held.push(f);
                }
                Err(_) => break,
            }
        }
        let out = match held.as_slice() {
            [] => keepalive.clone(),
            [one] => one.bytes.clone(),
            many => {
                let mut batch = Vec::with_capacity(size);
                many.iter().for_each(|f| batch.extend_from_slice(&f.bytes));
                Bytes::from(batch)
            }
        };
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            // A client that does not read: no goodbye, it would not be read either.
            Err(_) => return,
        }
        next = keepalive_deadline();
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
}
