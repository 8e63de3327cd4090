//! The Noise transport as an async byte stream, so hyper can speak HTTP/2
//! inside it. Records are decrypted in place as they arrive. Writes are cut
//! into records of at most 4077 plaintext bytes, an HTTP/2 frame's header
//! and payload in one record (vectored writes), and the records of one
//! flush go out in as few socket writes as [`WRITE_AHEAD`] allows: a
//! 600 KB map took a record and a system call for every 4 KB.
//!
//! Memory per connection is bounded: one record in, [`WRITE_AHEAD`] plus
//! one record out (what went out is dropped before more is sealed), and an
//! idle connection gives both buffers back.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::noise::{open_record, record_len, seal_record_parts, CipherState, MAX_PLAINTEXT};

/// Sealed bytes held for one socket write; past it a write waits for the
/// socket.
const WRITE_AHEAD: usize = 16 * 1024;
/// A buffer larger than this is given back once empty, so an idle
/// connection holds no record-sized buffers.
const KEEP_IDLE: usize = 512;

pub struct NoiseIo<S> {
    inner: S,
    rx: CipherState,
    tx: CipherState,
    /// Bytes of the record being read. Once whole it is decrypted in place,
    /// and `plain` is the part of it not yet handed to the reader.
    rbuf: Vec<u8>,
    plain: std::ops::Range<usize>,
    /// A sealed record (or the early bytes) not yet fully written.
    wbuf: Vec<u8>,
    wpos: usize,
}

fn bad(e: crate::noise::NoiseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl<S> NoiseIo<S> {
    /// `pending` is written before anything else (e.g. the handshake response).
    pub fn new(inner: S, rx: CipherState, tx: CipherState, pending: Vec<u8>) -> Self {
        NoiseIo { inner, rx, tx, rbuf: Vec::new(), plain: 0..0, wbuf: pending, wpos: 0 }
    }

    fn release_rbuf(&mut self) {
        if self.rbuf.capacity() > KEEP_IDLE {
            self.rbuf = Vec::new();
        } else {
            self.rbuf.clear();
        }
    }
}

impl<S: AsyncWrite + Unpin> NoiseIo<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Seals what fits in one record of `bufs` behind what is buffered, and
    /// writes only when [`WRITE_AHEAD`] is reached (or at flush).
    fn poll_seal(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.wbuf.len() - self.wpos >= WRITE_AHEAD {
            ready!(self.poll_drain(cx))?;
        }
        // What went out already is dropped before more is added: a client
        // that reads just slower than the server writes must not make the
        // buffer keep everything since its last complete write.
        if self.wpos > 0 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        let mut parts: [&[u8]; 8] = [&[]; 8];
        let (mut n, mut k) = (0, 0);
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            if n == MAX_PLAINTEXT || k == parts.len() {
                break;
            }
            let take = b.len().min(MAX_PLAINTEXT - n);
            parts[k] = &b[..take];
            (n, k) = (n + take, k + 1);
        }
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        seal_record_parts(&mut self.tx, &parts[..k], &mut self.wbuf).map_err(bad)?;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.rbuf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                if this.plain.is_empty() {
                    this.release_rbuf();
                }
                return Poll::Ready(Ok(()));
            }
            let want = match record_len(&this.rbuf).map_err(bad)? {
                Some(len) if this.rbuf.len() == len => {
                    let n = open_record(&mut this.rx, &mut this.rbuf[..len]).map_err(bad)?.len();
                    // An empty record carries nothing: read on.
                    this.plain = if n == 0 { 0..0 } else { crate::noise::HEADER_LEN..crate::noise::HEADER_LEN + n };
                    if n == 0 {
                        this.release_rbuf();
                    }
                    continue;
                }
                Some(len) => len - this.rbuf.len(),
                None => crate::noise::HEADER_LEN - this.rbuf.len(),
            };
            // Read no further than the end of this record.
            let have = this.rbuf.len();
            this.rbuf.resize(have + want, 0);
            let mut rb = ReadBuf::new(&mut this.rbuf[have..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            this.rbuf.truncate(have + got);
            ready!(polled)?;
            if got == 0 {
                return if this.rbuf.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_seal(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_seal(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        // All written: an idle connection keeps no record-sized buffer.
        if self.wbuf.capacity() > KEEP_IDLE {
            self.wbuf = Vec::new();
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{public_key, respond, Initiator};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (crate::noise::Session, crate::noise::Session) {
        let server = [5u8; 32];
        let (init, i) = Initiator::start(130, &[3u8; 32], &[4u8; 32], &public_key(&server)).unwrap();
        let (resp, srv) = respond(&server, &[6u8; 32], &init).unwrap();
        (i.finish(&resp).unwrap(), srv)
    }

    #[tokio::test]
    async fn streams_of_any_size_cross_in_records() {
        let (cli, srv) = pair();
        let (a, b) = tokio::io::duplex(1024);
        let mut c = NoiseIo::new(a, cli.rx, cli.tx, Vec::new());
        let mut s = NoiseIo::new(b, srv.rx, srv.tx, b"early".to_vec());
        let big: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let send = big.clone();
        let w = tokio::spawn(async move {
            c.write_all(&send).await.unwrap();
            c.flush().await.unwrap();
            let mut early = [0u8; 5];
            c.inner.read_exact(&mut early).await.unwrap();
            assert_eq!(&early, b"early");
            c
        });
        let mut got = vec![0u8; big.len()];
        // The server's pending bytes go out with its first write.
        s.write_all(b"").await.unwrap();
        s.flush().await.unwrap();
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        w.await.unwrap();
    }

    #[tokio::test]
    async fn a_vectored_write_is_one_record_and_waits_for_the_flush() {
        let (cli, srv) = pair();
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let mut s = NoiseIo::new(b, srv.rx, srv.tx, Vec::new());
        let parts = [io::IoSlice::new(b"header..."), io::IoSlice::new(&[7u8; 100])];
        assert_eq!(s.write_vectored(&parts).await.unwrap(), 109);
        assert_eq!(s.write(b"and more").await.unwrap(), 8);
        // Nothing reaches the socket before the flush; then both records at once.
        let mut head = [0u8; 3];
        assert!(tokio::time::timeout(Duration::from_millis(50), a.read_exact(&mut head)).await.is_err());
        s.flush().await.unwrap();
        let mut rx = cli.rx;
        for want in [&[&b"header..."[..], &[7u8; 100]].concat()[..], b"and more"] {
            a.read_exact(&mut head).await.unwrap();
            let mut rec = head.to_vec();
            rec.resize(3 + u16::from_be_bytes([head[1], head[2]]) as usize, 0);
            a.read_exact(&mut rec[3..]).await.unwrap();
            assert_eq!(open_record(&mut rx, &mut rec).unwrap(), want);
        }
        // A big write out, its buffer is given back.
        s.write_all(&[1u8; 10_000]).await.unwrap();
        assert!(s.wbuf.capacity() >= 10_000);
        s.flush().await.unwrap();
        assert!(s.wbuf.capacity() <= KEEP_IDLE);
    }

    /// Review finding: a client reading just slower than the server writes
    /// made the buffer keep every byte since its last complete write.
    #[tokio::test]
    async fn a_slow_reader_leaves_the_buffer_bounded() {
        let (_, srv) = pair();
        let (mut a, b) = tokio::io::duplex(8 * 1024);
        let mut s = NoiseIo::new(b, srv.rx, srv.tx, Vec::new());
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 3000];
            while a.read(&mut buf).await.is_ok_and(|n| n > 0) {
                tokio::task::yield_now().await;
            }
        });
        let mut most = 0;
        let chunk = [9u8; 1000];
        for _ in 0..3_000 {
            s.write_all(&chunk).await.unwrap();
            // As h2 does: a flush that cannot finish now is not waited for.
            let _ = futures_poll_once(&mut s).await;
            most = most.max(s.wbuf.capacity());
        }
        reader.abort();
        assert!(most <= 2 * (WRITE_AHEAD + crate::noise::MAX_RECORD), "the write buffer grew to {most} bytes");
    }

    /// Polls a flush once, as h2 does when the socket is busy.
    async fn futures_poll_once<S: AsyncWrite + Unpin>(s: &mut NoiseIo<S>) -> Poll<io::Result<()>> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *s).poll_flush(cx))).await
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (_, srv) = pair();
        let (mut a, b) = tokio::io::duplex(1024);
        let mut s = NoiseIo::new(b, srv.rx, srv.tx, Vec::new());
        a.write_all(&[4, 0, 20]).await.unwrap();
        a.write_all(&[0u8; 20]).await.unwrap();
        let mut buf = [0u8; 10];
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let (mut a, b) = tokio::io::duplex(1024);
        let (_, srv) = pair();
        let mut s = NoiseIo::new(b, srv.rx, srv.tx, Vec::new());
        a.write_all(&[4, 0x20, 0]).await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::InvalidData, "oversized record");
        drop(a);
    }
}
