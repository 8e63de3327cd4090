//! Request bodies inside Noise, which anyone with a machine key (any random
//! key will do) can send: each path has a small limit, decided before a byte
//! is read; a body's bytes are charged, as they arrive, to one budget shared
//! by all connections, and a request that finds its share spent is refused
//! at once (503, the client retries). The first byte must come within
//! [`FIRST_BYTE`] and the whole body within [`BODY_DEADLINE`]: headers alone
//! cost nothing and hold their stream only briefly.
//!
//! Machines without a node may use only part of the budget, so keyless
//! clients cannot stall the map requests of registered ones, and one source
//! address (and its IPv6 /56, twice over) only a smaller part, so a few
//! attackers cannot stall everyone's registrations.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;

use hyper::StatusCode;

use crate::quota::PerSource;

/// Bytes of request bodies all connections together may hold while they arrive.
pub const BODY_BUDGET: usize = 4 << 20;
/// Of it, what machines without a node may hold; what one source address
/// may, with a node and without.
const UNKNOWN_SHARE: usize = BODY_BUDGET / 2;
const SOURCE_SHARE: usize = BODY_BUDGET / 8;
const UNKNOWN_SOURCE_SHARE: usize = BODY_BUDGET / 16;
/// From the request's headers to the first byte of its body.
pub const FIRST_BYTE: Duration = Duration::from_secs(5);
/// From the request's headers to the end of its body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// A RegisterRequest is 1–3 KB, mostly its Hostinfo (kept up to 16 KiB):
/// the limit leaves room for a Hostinfo 4 times that.
const MAX_REGISTER: usize = 64 * 1024;
/// A MapRequest is the same Hostinfo plus endpoints and a few flags.
const MAX_MAP: usize = 64 * 1024;

// The smallest share holds four of the largest bodies (and a hundred real
// ones); the whole is small on a 64 MB router.
const _: () = assert!(UNKNOWN_SOURCE_SHARE / MAX_MAP >= 4 && UNKNOWN_SOURCE_SHARE / MAX_REGISTER >= 4);
const _: () = assert!(BODY_BUDGET <= 8 << 20);

/// The largest body `path` may carry; `None` for paths tinyscale does not serve.
pub fn limit(path: &str) -> Option<usize> {
    match path {
        "/machine/register" => Some(MAX_REGISTER),
        "/machine/map" => Some(MAX_MAP),
        _ => None,
    }
}

/// The most a body may bring: its declared length, or the path's limit
/// when it declares none. `None`: it declares more than the limit.
pub fn allowed(declared: Option<u64>, limit: usize) -> Option<usize> {
    match declared {
        Some(n) if n > limit as u64 => None,
        Some(n) => Some(n as usize),
        None => Some(limit),
    }
}

/// Who a body is charged to.
#[derive(Debug, Clone, Copy)]
pub struct Payer {
    pub from: IpAddr,
    /// The machine has a node.
    pub known: bool,
}

/// The budget's shares in use. Pure rules.
#[derive(Debug, Default)]
pub struct Shares {
    total: usize,
    unknown: usize,
    by_source: PerSource,
    unknown_by_source: PerSource,
}

impl Shares {
    /// Takes `bytes` for `payer` if every share it falls under has room.
    pub fn take(&mut self, bytes: usize, payer: Payer) -> bool {
        let from = payer.from;
        if self.total + bytes > BODY_BUDGET || !self.by_source.fits(from, bytes, SOURCE_SHARE) {
            return false;
        }
        if !payer.known
            && (self.unknown + bytes > UNKNOWN_SHARE || !self.unknown_by_source.fits(from, bytes, UNKNOWN_SOURCE_SHARE))
        {
            return false;
        }
        self.total += bytes;
        self.by_source.add(from, bytes);
        if !payer.known {
            self.unknown += bytes;
            self.unknown_by_source.add(from, bytes);
        }
        true
    }

    pub fn give_back(&mut self, bytes: usize, payer: Payer) {
        self.total = self.total.saturating_sub(bytes);
        self.by_source.sub(payer.from, bytes);
        if !payer.known {
            self.unknown = self.unknown.saturating_sub(bytes);
            self.unknown_by_source.sub(payer.from, bytes);
        }
    }
}

/// The budget every connection draws from.
#[derive(Default)]
pub struct Budget {
    shares: Mutex<Shares>,
}

impl Budget {
    fn shares(&self) -> std::sync::MutexGuard<'_, Shares> {
        self.shares.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(self: &Arc<Self>, payer: Payer) -> Lease {
        Lease { budget: self.clone(), bytes: 0, payer }
    }
}

/// Bytes taken from the budget; given back when dropped.
struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
    payer: Payer,
}

impl Lease {
    /// Grows the lease to `bytes` in all, if the shares allow.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more > 0 && !self.budget.shares().take(more, self.payer) {
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.shares().give_back(self.bytes, self.payer);
    }
}

/// A body read whole, holding its part of the budget until dropped.
pub struct Held {
    pub bytes: Vec<u8>,
    _lease: Lease,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    /// The budget is spent: retry later.
    Busy,
    Slow,
    /// The client reset the stream or the connection broke.
    Broken,
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Slow => StatusCode::REQUEST_TIMEOUT,
            Refused::Broken => StatusCode::BAD_REQUEST,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refused::TooLarge => "request body too large",
            Refused::Busy => "server busy; retry",
            Refused::Slow => "request body too slow",
            Refused::Broken => "request body broken",
        }
    }
}

/// Reads `body` (at most `limit` bytes) within the deadlines, out of
/// `budget`, which is charged what the body holds as it arrives.
pub async fn read<B>(budget: &Arc<Budget>, mut body: B, limit: usize, payer: Payer) -> Result<Held, Refused>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
{
    let max = allowed(body.size_hint().exact(), limit).ok_or(Refused::TooLarge)?;
    let mut lease = budget.lease(payer);
    let started = tokio::time::Instant::now();
    let collect = async {
        let mut bytes = Vec::new();
        loop {
            let next = body.frame();
            let frame = if bytes.is_empty() {
                tokio::time::timeout_at(started + FIRST_BYTE, next).await.map_err(|_| Refused::Slow)?
            } else {
                next.await
            };
            let Some(frame) = frame else { return Ok(bytes) };
            let Ok(data) = frame.map_err(|_| Refused::Broken)?.into_data() else { continue };
            if bytes.len() + data.len() > max {
                return Err(Refused::TooLarge);
            }
            // Charged what is allocated, before it is.
            if !lease.grow_to(bytes.len() + data.len()) {
                return Err(Refused::Busy);
            }
            bytes.reserve_exact(data.len());
            if !lease.grow_to(bytes.capacity()) {
                return Err(Refused::Busy);
            }
            bytes.extend_from_slice(&data);
        }
    };
    let bytes = tokio::time::timeout_at(started + BODY_DEADLINE, collect).await.map_err(|_| Refused::Slow)??;
    Ok(Held { bytes, _lease: lease })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::{Bytes, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    #[test]
    fn limits_are_known_before_the_body() {
        assert_eq!(limit("/machine/register"), Some(MAX_REGISTER));
        assert_eq!(limit("/machine/nope"), None);
        assert_eq!(allowed(Some(3000), MAX_MAP), Some(3000));
        assert_eq!(allowed(None, MAX_MAP), Some(MAX_MAP));
        assert_eq!(allowed(Some(MAX_MAP as u64 + 1), MAX_MAP), None);
        assert_eq!(allowed(Some(u64::MAX), MAX_MAP), None);
    }

    #[test]
    fn keyless_clients_and_single_sources_get_only_their_share() {
        let mut s = Shares::default();
        let stranger = |n: u8| Payer { from: IpAddr::from([203, 0, 113, n]), known: false };
        let node = |n: u8| Payer { from: IpAddr::from([198, 51, 100, n]), known: true };
        // One keyless source: a sixteenth of the budget, then no more.
        let mut held = 0;
        while s.take(MAX_REGISTER, stranger(1)) {
            held += MAX_REGISTER;
        }
        assert_eq!(held, UNKNOWN_SOURCE_SHARE);
        // Keyless sources together: half.
        for n in 2..20 {
            while s.take(MAX_REGISTER, stranger(n)) {}
        }
        assert_eq!(s.unknown, UNKNOWN_SHARE);
        assert!(!s.take(1, stranger(99)));
        // Registered machines still have the rest, an eighth per source.
        let mut held = 0;
        while s.take(MAX_MAP, node(1)) {
            held += MAX_MAP;
        }
        assert_eq!(held, SOURCE_SHARE);
        assert!(s.take(3000, node(2)));
        s.give_back(3000, node(2));
        // Given back, it can be taken again; a source with nothing left is forgotten.
        s.give_back(MAX_REGISTER, stranger(1));
        assert!(s.take(MAX_REGISTER, stranger(99)));
        assert!(s.take(0, stranger(200)) && s.by_source.of(IpAddr::from([203, 0, 113, 200])) == 0);
    }

    #[test]
    fn an_ipv6_56_is_one_source_at_twice_the_share() {
        let mut s = Shares::default();
        let in_block = |n: u16| Payer {
            from: IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0x4200 + n, 0, 0, 0, 1)),
            known: false,
        };
        let mut held = 0;
        for n in 0..=255 {
            while s.take(MAX_REGISTER, in_block(n)) {
                held += MAX_REGISTER;
            }
        }
        assert_eq!(held, 2 * UNKNOWN_SOURCE_SHARE, "256 /64s of one /56");
    }

    /// A request body fed through a channel.
    struct Fed(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn stranger() -> Payer {
        Payer { from: IpAddr::from([203, 0, 113, 1]), known: false }
    }

    #[tokio::test(start_paused = true)]
    async fn headers_alone_cost_nothing_and_end_at_the_first_byte_deadline() {
        let budget = Arc::new(Budget::default());
        let (_tx, rx) = mpsc::channel(1);
        let reading = tokio::spawn({
            let budget = budget.clone();
            async move { read(&budget, Fed(rx), MAX_REGISTER, stranger()).await.map(|h| h.bytes) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(budget.shares().total, 0, "a body that sent nothing is charged nothing");
        tokio::time::sleep(FIRST_BYTE).await;
        assert_eq!(reading.await.unwrap(), Err(Refused::Slow));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_charged_as_they_arrive_and_given_back() {
        let budget = Arc::new(Budget::default());
        let (tx, rx) = mpsc::channel(4);
        let reading = tokio::spawn({
            let budget = budget.clone();
            async move { read(&budget, Fed(rx), MAX_REGISTER, stranger()).await.map(|h| h.bytes.len()) }
        });
        tx.send(Bytes::from(vec![b'{'; 1000])).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let charged = budget.shares().total;
        assert!((1000..2000).contains(&charged), "{charged} bytes charged for 1000");
        // Past the first byte, the body has until its own deadline.
        tokio::time::sleep(FIRST_BYTE).await;
        assert!(!reading.is_finished());
        tx.send(Bytes::from(vec![b'}'; 500])).await.unwrap();
        drop(tx);
        assert_eq!(reading.await.unwrap(), Ok(1500));
        assert_eq!(budget.shares().total, 0, "given back once the body is dropped");
        // A body that stalls is cut at the body deadline.
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"{")).await.unwrap();
        let t = tokio::time::Instant::now();
        assert_eq!(read(&budget, Fed(rx), MAX_REGISTER, stranger()).await.err(), Some(Refused::Slow));
        assert_eq!(t.elapsed(), BODY_DEADLINE);
    }

    #[tokio::test]
    async fn a_spent_share_refuses_the_body_that_would_overrun_it() {
        let budget = Arc::new(Budget::default());
        assert!(budget.shares().take(UNKNOWN_SOURCE_SHARE - 100, stranger()));
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from(vec![0; 200])).await.unwrap();
        drop(tx);
        assert_eq!(read(&budget, Fed(rx), MAX_REGISTER, stranger()).await.err(), Some(Refused::Busy));
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from(vec![0; 50])).await.unwrap();
        drop(tx);
        assert_eq!(read(&budget, Fed(rx), MAX_REGISTER, stranger()).await.map(|h| h.bytes.len()), Ok(50));
    }
}
