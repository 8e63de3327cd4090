//! The relay server: one task per client reading its frames, and a writer
//! task draining a small bounded queue. A client that does not read loses
//! packets (its queue is full, so new ones are dropped) and never makes
//! anyone else wait or the server grow.
//!
//! Until a client has proven its key it holds one of a few handshake places
//! (never a client's place under `derp.server.max_clients`), may send only
//! a small ClientInfo frame, and gets no queue or writer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::frame::{self, Frame, Key};
use super::handshake::{self, ClientInfo};
use crate::state::{has_passed, State};
use crate::tailcfg::NodePublic;

/// Frames queued towards one client before new ones are dropped.
const QUEUE: usize = 64;
/// Frames the writer gathers into one write.
const BATCH: usize = 64 * 1024;
/// Peers a client remembers sending to (told when it leaves).
const MAX_PEERS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once, apart from the admitted clients.
pub const MAX_HANDSHAKING: usize = 32;
/// A ClientInfo frame: the key, the box's nonce and tag, and a JSON of tens
/// of bytes (a mesh key is 64 more).
pub const MAX_CLIENT_INFO: usize = 4 * 1024;
/// Keep-alive period (plus up to 5 s of jitter).
const KEEPALIVE: Duration = Duration::from_secs(60);

struct Peer {
    conn: usize,
    tx: mpsc::Sender<Bytes>,
}

pub struct Relay {
    private: [u8; 32],
    public: [u8; 32],
    peers: Mutex<HashMap<Key, Peer>>,
    /// `derp.server.verify_clients`: only registered node keys may connect.
    verify: Option<Arc<State>>,
    slots: Arc<Semaphore>,
    handshaking: Arc<Semaphore>,
    next_conn: AtomicUsize,
    /// Per connected key: what ends its connections ([`Relay::close_node`])
    /// and how many there are (a key may connect more than once).
    closers: Mutex<HashMap<Key, (Arc<Notify>, usize)>>,
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
            peers: Mutex::new(HashMap::new()),
            verify,
            slots: Arc::new(Semaphore::new(max_clients)),
            handshaking: Arc::new(Semaphore::new(MAX_HANDSHAKING)),
            next_conn: AtomicUsize::new(0),
            closers: Mutex::new(HashMap::new()),
        }
    }

    /// Ends every connection of `key` (its node was deleted, expired or took
    /// a new key). Returns whether there was one.
    pub fn close_node(&self, key: NodePublic) -> bool {
        match self.closers.lock().unwrap_or_else(|e| e.into_inner()).get(&key.0) {
            Some((close, _)) => {
                close.notify_waiters();
                true
            }
            None => false,
        }
    }

    fn closer(&self, key: Key) -> Arc<Notify> {
        let mut c = self.closers.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.entry(key).or_insert_with(|| (Arc::new(Notify::new()), 0));
        e.1 += 1;
        e.0.clone()
    }

    fn release_closer(&self, key: Key) {
        let mut c = self.closers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = c.get_mut(&key) {
            e.1 -= 1;
            if e.1 == 0 {
                c.remove(&key);
            }
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// A place for one more handshake, if the relay has room for a client.
    /// The client's own place is taken only once it has proven its key.
    pub fn try_handshake(&self) -> Result<OwnedSemaphorePermit, &'static str> {
        if self.slots.available_permits() == 0 {
            return Err("relay full");
        }
        self.handshaking.clone().try_acquire_owned().map_err(|_| "too many relay handshakes at once; retry")
    }

    pub fn client_count(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
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
    pub async fn serve<S>(self: Arc<Self>, io: S, handshaking: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut rd, &mut wr)).await;
        drop(handshaking);
        let (key, _slot) = match hello {
            Ok(Ok(k)) => k,
            Ok(Err(End::Refused(why))) => return log::info!("client refused: {why}"),
            Ok(Err(End::Io(e))) => return log::debug!("handshake: {e}"),
            Err(_) => return log::debug!("handshake timed out"),
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let close = self.closer(key);
        // Registered before anyone can find this connection, so no close is missed.
        let closed = close.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        // The newest connection of a key is the one packets go to.
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Peer { conn, tx: tx.clone() });
        log::debug!("{} connected", NodePublic(key).short());
        let writer = tokio::spawn(write_loop(wr, rx));
        let mut sent_to = HashSet::new();
        let end = tokio::select! {
            end = self.read_loop(&mut rd, key, &tx, &mut sent_to) => end,
            _ = &mut closed => Err(End::Refused("its node was deleted or expired".into())),
        };
        self.release_closer(key);
        if let Err(End::Refused(why)) = &end {
            log::info!("closing {}: {why}", NodePublic(key).short());
        }
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if peers.get(&key).is_some_and(|p| p.conn == conn) {
                peers.remove(&key);
            }
            // Whoever heard from this client learns it is gone.
            let gone = encoded(&Frame::PeerGone { key, reason: frame::GONE_DISCONNECTED });
            for k in &sent_to {
                if let Some(p) = peers.get(k) {
                    let _ = p.tx.try_send(gone.clone());
                }
            }
        }
        drop(tx);
        let _ = writer.await;
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
        own: &mpsc::Sender<Bytes>,
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
                let target = self.peers.lock().unwrap_or_else(|e| e.into_inner()).get(&dst).map(|p| p.tx.clone());
                match target {
                    Some(tx) => {
                        buf[0] = frame::RECV_PACKET;
                        buf[1..frame::HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
                        buf[frame::HEADER_LEN..frame::HEADER_LEN + frame::KEY_LEN].copy_from_slice(&me);
                        // A full queue means a slow reader: drop, never wait.
                        let _ = tx.try_send(Bytes::from(buf));
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
                            let _ = own.try_send(encoded(&Frame::PeerGone { key: dst, reason: frame::GONE_NOT_HERE }));
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
                    let _ = own.try_send(encoded(&Frame::Pong(data)));
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

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Bytes>) {
    let keepalive = encoded(&Frame::KeepAlive);
    let mut next = keepalive_deadline();
    loop {
        let first = tokio::select! {
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = tokio::time::sleep_until(next) => keepalive.clone(),
        };
        // Whatever else is queued goes out in the same write.
        let out = match rx.try_recv() {
            Err(_) => first,
            Ok(second) => {
                let mut batch = Vec::with_capacity(BATCH.min(first.len() + second.len() * 8));
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(f) => batch.extend_from_slice(&f),
                        Err(_) => break,
                    }
                }
                Bytes::from(batch)
            }
        };
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        next = keepalive_deadline();
    }
    let _ = wr.shutdown().await;
}
