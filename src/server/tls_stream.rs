//! Server-side TLS over rustls's unbuffered (sans-io) API, with buffers that
//! are ours to size and to free.
//!
//! tokio-rustls drives rustls's buffered `ServerConnection`, whose receive
//! buffer is resized to 4 KiB before every read and never given back: every
//! idle client parked in a read held 4 KiB, most of what a TLS relay client
//! cost. Here received bytes, and decrypted bytes the caller had no room
//! for, live in buffers freed when a read parks holding no partial record
//! (an idle client holds none); encrypted bytes in one freed by a flush.
//! Within a burst they are reused.
//!
//! Every buffer is bounded: what the peer sends by rustls's own limits (a
//! 64 KiB handshake message; after the handshake one record of the largest
//! size rustls accepts), what we send by one record of the caller's data at a
//! time. Anything else the peer sends is an error that ends the connection.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest record rustls accepts: 16 KiB of plaintext plus the 2 KiB of
/// expansion TLS 1.2 allows (TLS 1.3 needs 256), and its 5-byte header.
const MAX_RECORD: usize = 5 + 16_384 + 2048;
/// rustls refuses handshake messages over 64 KiB; the client's flight waits
/// in our buffer while rustls joins its fragments, so that is the cap there.
const MAX_HANDSHAKE: usize = 0x1_0000;
/// The most plaintext one record carries: one `poll_write` encrypts at most this.
const MAX_FRAGMENT: usize = 16_384;
/// A first read when no record header says how much is coming: several small
/// records at once, as rustls's own buffer reads.
const READ_SIZE: usize = 4096;
/// Room for a record's header, nonce, tag and content type beyond its
/// plaintext, so that encrypting rarely needs a second try.
const RECORD_OVERHEAD: usize = 64;

/// Why a TLS connection failed or ended without a clean close.
#[derive(Debug)]
pub enum TlsError {
    Io(io::Error),
    /// rustls refused what the peer sent (the handshake included).
    Tls(rustls::Error),
    /// The peer sent more than a handshake message or a record may hold.
    TooLarge {
        limit: usize,
    },
    /// The connection ended during the handshake or inside a record.
    Truncated,
    /// TCP ended without a close_notify: the data may have been cut short.
    NoCloseNotify,
    /// Writing after shutdown or after an error.
    Closed,
    /// rustls reached a state this server never asks for (early data).
    Unexpected(&'static str),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "{e}"),
            TlsError::Tls(e) => write!(f, "TLS: {e}"),
            TlsError::TooLarge { limit } => write!(f, "TLS: the peer sent more than {limit} bytes in one message"),
            TlsError::Truncated => f.write_str("TLS: the connection ended inside a record or the handshake"),
            TlsError::NoCloseNotify => f.write_str("TLS: the peer closed the connection without a close_notify"),
            TlsError::Closed => f.write_str("TLS: the connection is closed"),
            TlsError::Unexpected(what) => write!(f, "TLS: unexpected {what}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<io::Error> for TlsError {
    fn from(e: io::Error) -> Self {
        TlsError::Io(e)
    }
}

/// The socket's own errors as they were; ours inside one of the kind callers look for.
impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        let kind = match &e {
            TlsError::Io(_) => io::ErrorKind::Other,
            TlsError::Truncated | TlsError::NoCloseNotify => io::ErrorKind::UnexpectedEof,
            TlsError::Closed => io::ErrorKind::BrokenPipe,
            TlsError::Tls(_) | TlsError::TooLarge { .. } | TlsError::Unexpected(_) => io::ErrorKind::InvalidData,
        };
        match e {
            TlsError::Io(e) => e,
            e => io::Error::new(kind, e),
        }
    }
}

/// Accepts TLS connections with one server configuration.
#[derive(Clone)]
pub struct TlsAcceptor(Arc<ServerConfig>);

impl TlsAcceptor {
    pub fn new(config: ServerConfig) -> Self {
        TlsAcceptor(Arc::new(config))
    }

    /// Runs the handshake on `tcp`. The caller bounds it in time.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream, TlsError> {
        let conn = UnbufferedServerConnection::new(self.0.clone()).map_err(TlsError::Tls)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            start: 0,
            received: 0,
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            plain_read: 0,
            peer_closed: false,
            close_queued: false,
            broken: false,
        };
        match poll_fn(|cx| s.poll_handshake(cx)).await {
            Ok(()) => {
                // The flight's room (up to 64 KiB) is not kept for the traffic.
                s.release_idle();
                s.outgoing = Vec::new();
                Ok(s)
            }
            Err(e) => Err(s.fail(e)),
        }
    }
}

/// What the caller asks of the connection once rustls lets it write.
#[derive(Clone, Copy)]
enum Op<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where rustls stopped.
enum Turn {
    /// Decrypted bytes are waiting in `plain`.
    Data,
    /// The handshake needs more bytes from the peer.
    Blocked,
    /// The connection is open for writing (the op was done) and rustls has
    /// no whole record left to read.
    Open,
    /// Both sides sent close_notify.
    Closed,
}

/// A failed encode or encrypt: too little room (and how much it needs), or a real failure.
enum Short {
    Need(usize),
    Fail(TlsError),
}

/// One TLS connection over TCP, as `AsyncRead + AsyncWrite`.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not done with, in
    /// `incoming[start..received]`: a partial record, or the client's flight
    /// while rustls joins a handshake message. What rustls is done with is
    /// skipped (`start`) and moved out of the way once per read, not once a
    /// record. The rest of `incoming` is room for the next read.
    incoming: Vec<u8>,
    start: usize,
    received: usize,
    /// Encrypted bytes for the peer; `sent` of them already went out.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes the caller has not read yet; `plain_read` of them were.
    plain: Vec<u8>,
    plain_read: usize,
    /// The peer's close_notify came: reads end.
    peer_closed: bool,
    /// Our close_notify is queued: writes are refused.
    close_queued: bool,
    /// An error ended the connection: everything is refused.
    broken: bool,
}

impl TlsStream {
    /// Turns rustls's state machine until it waits for the peer, has data for
    /// the reader, or has done `op`. Each turn consumes input or emits output
    /// rustls queued, so this ends.
    fn advance(&mut self, op: Op<'_>) -> Result<Turn, TlsError> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[self.start..self.received]);
            let next = match state {
                Err(e) => Err(TlsError::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    // rustls stops after each record with plaintext, so this is one record.
                    let mut next = Ok(Some(Turn::Data));
                    while let Some(record) = r.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                self.plain.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                next = Err(TlsError::Tls(e));
                                break;
                            }
                        }
                    }
                    next
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut self.outgoing, &mut e).map(|()| None),
                // `outgoing` is the queue: it goes out, in order, before anything written later.
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Turn::Blocked)),
                // The reader sees the end once it has read what came before.
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(Some(Turn::Closed))
                }
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let done = match op {
                        Op::Nothing => Ok(()),
                        // A queued KeyUpdate answer goes out ahead of the data, in this same call.
                        Op::Encrypt(data) => append(&mut self.outgoing, data.len() + RECORD_OVERHEAD, |b| {
                            w.encrypt(data, b).map_err(encrypt_error)
                        }),
                        Op::CloseNotify => append(&mut self.outgoing, RECORD_OVERHEAD, |b| {
                            w.queue_close_notify(b).map_err(encrypt_error)
                        }),
                    };
                    done.map(|()| Some(Turn::Open))
                }
                Ok(_) => Err(TlsError::Unexpected("early data")),
            };
            self.consume(discard);
            if let Some(turn) = next? {
                return Ok(turn);
            }
        }
    }

    /// Drops `n` bytes rustls is done with from the front of `incoming`.
    fn consume(&mut self, n: usize) {
        self.start += n.min(self.received - self.start);
        if self.start == self.received {
            self.start = 0;
            self.received = 0;
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        loop {
            let turn = self.advance(Op::Nothing)?;
            // A flight goes out whole before rustls waits for the answer to it.
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed || matches!(turn, Turn::Closed) {
                return Poll::Ready(Err(TlsError::Truncated));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Frees the receive and plaintext buffers if they hold nothing. Done
    /// when a read parks, not each time they empty: a busy connection reuses
    /// them (one allocation and zeroing a burst, not one a record), and an
    /// idle one, parked in a read, holds neither.
    fn release_idle(&mut self) {
        if self.received == 0 {
            self.incoming = Vec::new();
        }
        if self.plain_read == self.plain.len() {
            self.plain = Vec::new();
            self.plain_read = 0;
        }
    }

    /// Reads more of what the peer sent into `incoming`, never past the
    /// limit. The buffer grows [`READ_SIZE`] at a time and only once full,
    /// so it follows what arrived, not what a record header claims (five
    /// bytes would otherwise hold a record's worth), and a trickled flight
    /// grows it at most 16 times.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        let limit = if self.conn.is_handshaking() { MAX_HANDSHAKE } else { MAX_RECORD };
        if self.start > 0 {
            self.incoming.copy_within(self.start..self.received, 0);
            self.received -= self.start;
            self.start = 0;
        }
        let have = self.received;
        if have >= limit {
            return Poll::Ready(Err(TlsError::TooLarge { limit }));
        }
        if self.incoming.len() > limit {
            // Room grown for the handshake's flight is not kept for the
            // traffic, even when a partial record keeps the buffer alive.
            self.incoming.truncate(have);
            self.incoming.shrink_to_fit();
        }
        loop {
            // Readiness first, so that a parked read holds no buffer.
            if self.tcp.poll_read_ready(cx)?.is_pending() {
                self.release_idle();
                return Poll::Pending;
            }
            if self.incoming.len() == have {
                // `have < limit`, so this always makes room.
                let want = (have + READ_SIZE).next_multiple_of(READ_SIZE).min(limit);
                self.incoming.reserve_exact(want - have);
                self.incoming.resize(want, 0);
            }
            let got = self.tcp.try_read(&mut self.incoming[have..]);
            self.received += got.as_ref().map_or(0, |n| *n);
            match got {
                // The readiness was stale; tokio cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(0) if have == 0 && !self.conn.is_handshaking() => return Poll::Ready(Err(TlsError::NoCloseNotify)),
                Ok(0) => return Poll::Ready(Err(TlsError::Truncated)),
                Ok(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Writes `outgoing` out. The buffer stays for the next record of a
    /// burst; a flush frees it (every caller flushes after a burst).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// [`Self::poll_send`] without waiting, for the read side: were it to
    /// wait, its waker would replace the writer's (tokio keeps one per
    /// direction) and the writer could sleep forever. What stays is sent
    /// by the next write or flush.
    fn try_send(&mut self) -> Result<(), TlsError> {
        if self.outgoing.is_empty() {
            // Nothing queued: the buffer stays for the writer's burst.
            return Ok(());
        }
        while self.sent < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Marks the connection broken; for a protocol error, also sends the
    /// alert rustls queued, if the socket takes it at once.
    fn fail(&mut self, e: TlsError) -> TlsError {
        if self.broken {
            return e;
        }
        self.broken = true;
        if matches!(e, TlsError::Tls(_)) {
            // rustls queued its alert with the error, and hands it out before
            // it looks at the input again. One call only: a second would read
            // the bad input again (and trip rustls's debug assertion on a
            // second fatal alert).
            let UnbufferedStatus { state, .. } =
                self.conn.process_tls_records(&mut self.incoming[self.start..self.received]);
            if let Ok(ConnectionState::EncodeTlsData(mut a)) = state {
                if encode(&mut self.outgoing, &mut a).is_ok() {
                    let _ = self.try_send();
                }
            }
        }
        e
    }

    fn poll_read_tls(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<Result<(), TlsError>> {
        loop {
            if self.broken {
                return Poll::Ready(Err(TlsError::Closed));
            }
            if self.plain_read < self.plain.len() {
                let n = buf.remaining().min(self.plain.len() - self.plain_read);
                buf.put_slice(&self.plain[self.plain_read..self.plain_read + n]);
                self.plain_read += n;
                if self.plain_read == self.plain.len() {
                    self.plain.clear();
                    self.plain_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            match self.advance(Op::Nothing)? {
                Turn::Data | Turn::Closed => continue,
                Turn::Blocked | Turn::Open if self.peer_closed => continue,
                Turn::Blocked | Turn::Open => {}
            }
            // Reading adds to `outgoing` only what rustls answers on its own
            // (a refused renegotiation, an alert): few bytes, and counted by
            // rustls, so this side never waits for the socket to take them.
            self.try_send()?;
            ready!(self.poll_fill(cx))?;
        }
    }

    fn poll_write_tls(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, TlsError>> {
        if self.broken || self.close_queued {
            return Poll::Ready(Err(TlsError::Closed));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // One record waits at most: the next one waits for the socket to take it.
        ready!(self.poll_send(cx))?;
        let data = &buf[..buf.len().min(MAX_FRAGMENT)];
        loop {
            match self.advance(Op::Encrypt(data))? {
                Turn::Open => break,
                // A record the reader has not asked for yet is kept for it (it
                // came with what the reader already read, so no more than that).
                Turn::Data => continue,
                Turn::Blocked | Turn::Closed => return Poll::Ready(Err(TlsError::Closed)),
            }
        }
        // Out at once if the socket has room; if not, the next write or flush sends it.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_shutdown_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        if !self.broken && !self.close_queued {
            self.close_queued = true;
            // A record the reader has not asked for yet comes first and is kept for it.
            while let Turn::Data = self.advance(Op::CloseNotify)? {}
        }
        if !self.broken {
            ready!(self.poll_send(cx))?;
        }
        self.outgoing = Vec::new();
        Pin::new(&mut self.tcp).poll_shutdown(cx).map_err(TlsError::Io)
    }

    /// The capacities of the incoming, outgoing and plaintext buffers.
    #[cfg(test)]
    pub(crate) fn buffer_capacities(&self) -> (usize, usize, usize) {
        (self.incoming.capacity(), self.outgoing.capacity(), self.plain.capacity())
    }
}

/// Appends a record rustls made (handshake, alert) to `out`.
fn encode(out: &mut Vec<u8>, e: &mut EncodeTlsData<'_, ServerConnectionData>) -> Result<(), TlsError> {
    append(out, 0, |b| {
        e.encode(b).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Short::Need(s.required_size),
            EncodeError::AlreadyEncoded => Short::Fail(TlsError::Unexpected("second encoding of a record")),
        })
    })
}

fn encrypt_error(e: EncryptError) -> Short {
    match e {
        EncryptError::InsufficientSize(s) => Short::Need(s.required_size),
        EncryptError::EncryptExhausted => Short::Fail(TlsError::Unexpected("end of the keys' usable life")),
    }
}

/// Appends what `f` writes to `out`: first into `guess` bytes of room, then,
/// if rustls says that is short, into exactly what it asked for.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> Result<(), TlsError> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match f(&mut out[start..]) {
        Err(Short::Need(n)) => {
            out.resize(start + n, 0);
            f(&mut out[start..])
        }
        r => r,
    };
    match written {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(match e {
                Short::Need(_) => TlsError::Unexpected("record size"),
                Short::Fail(e) => e,
            })
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_read_tls(cx, buf).map_err(|e| this.fail(e).into())
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.poll_write_tls(cx, buf).map_err(|e| this.fail(e).into())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Err(TlsError::Closed.into()));
        }
        ready!(this.poll_send(cx)).map_err(|e| this.fail(e))?;
        this.outgoing = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_shutdown_tls(cx).map_err(|e| this.fail(e).into())
    }
}

#[cfg(test)]
#[path = "tls_stream_tests.rs"]
mod tests;
