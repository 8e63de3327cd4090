//! One upgraded Noise connection served as HTTP/2: how many streams it may
//! open and when it is closed. It must bring its first request within
//! [`FIRST_REQUEST`] of the upgrade, and is closed [`IDLE`] after its last
//! request finished; a request in flight (a map stream, a client waiting up
//! to 10 minutes for its login) keeps it open. HTTP/2 pings find peers that
//! vanished without closing.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::body::Payer;
use super::{Body, Control, NoiseIo};
use crate::tailcfg::MachinePublic;

/// HTTP/2 streams a registered machine may have open at once (map stream,
/// lite updates, and whatever a newer client adds).
const STREAMS_REGISTERED: u32 = 16;
/// A machine without a node yet only registers and waits for its login.
/// (A real client over it opens another connection rather than fail.)
const STREAMS_UNKNOWN: u32 = 4;
/// From the upgrade to the first request (the HTTP/2 preface included).
pub const FIRST_REQUEST: Duration = Duration::from_secs(15);
/// How long a connection with nothing in flight stays open.
pub const IDLE: Duration = Duration::from_secs(90);
/// HTTP/2 pings on a quiet connection, and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a closing connection may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Unread request bytes HTTP/2 buffers per stream and per connection before
/// the handler reads them: requests are a few KB, and the handler reads at
/// once (or refuses the stream, which frees them).
const STREAM_WINDOW: u32 = 32 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024;

/// What is going on on one connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Activity {
    in_flight: usize,
    started: bool,
}

/// How long the connection may stay as it is: `None` while a request is in
/// flight, else until the first request or the idle timeout.
pub(super) fn quiet_limit(a: Activity) -> Option<Duration> {
    match (a.in_flight, a.started) {
        (0, false) => Some(FIRST_REQUEST),
        (0, true) => Some(IDLE),
        _ => None,
    }
}

/// Counts one request as in flight until it is dropped: with the response
/// body, so a streaming answer counts until its last byte or its reset.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(tx: &Arc<watch::Sender<Activity>>) -> InFlight {
        tx.send_modify(|a| {
            a.in_flight += 1;
            a.started = true;
        });
        InFlight(tx.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as in flight.
pub(super) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Control {
    /// Serves HTTP/2 on an upgraded Noise stream of `machine`, which came from `from`.
    pub(super) async fn serve_h2<S>(self: Arc<Self>, io: NoiseIo<S>, machine: MachinePublic, version: u16, from: IpAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let known = self.state.snapshot().node_by_machine(&machine).is_some();
        log::debug!("ts2021: {machine} connected from {from} (capability version {version}, known: {known})");
        let (tx, mut activity) = watch::channel(Activity::default());
        let tx = Arc::new(tx);
        let this = self.clone();
        let payer = Payer { from, known };
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(if known { STREAMS_REGISTERED } else { STREAMS_UNKNOWN })
            .max_header_list_size(16 * 1024)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // Answers are written as they are made: a small send buffer keeps an idle client cheap.
            .max_send_buf_size(32 * 1024)
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .serve_connection(
                TokioIo::new(io),
                hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    let in_flight = InFlight::start(&tx);
                    async move {
                        let resp = this.machine_request(req, machine, payer).await;
                        Ok::<_, Infallible>(resp.map(|body| Tracked { body, _in_flight: in_flight }))
                    }
                }),
            );
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        loop {
            let now = *activity.borrow_and_update();
            let quiet = quiet_limit(now);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        log::debug!("ts2021: {machine}: {e}");
                    }
                    return;
                }
                // The sender lives in the service, as long as `conn` runs.
                r = activity.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(quiet.unwrap_or_default()), if quiet.is_some() => {
                    if !now.started {
                        // Nothing was ever said: no goodbye either.
                        return log::debug!("ts2021: {machine} from {from} sent no request; closed");
                    }
                    log::debug!("ts2021: closing the quiet connection of {machine}");
                    break;
                }
                _ = shutdown.changed() => break,
            }
        }
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(CLOSE_GRACE, conn).await.is_err() {
            log::debug!("ts2021: {machine} did not take its goodbye; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_quiet_only_with_nothing_in_flight() {
        let fresh = Activity::default();
        assert_eq!(quiet_limit(fresh), Some(FIRST_REQUEST));
        assert_eq!(quiet_limit(Activity { in_flight: 1, started: true }), None);
        assert_eq!(quiet_limit(Activity { in_flight: 0, started: true }), Some(IDLE));
        assert!(FIRST_REQUEST <= Duration::from_secs(30) && (60..=120).contains(&IDLE.as_secs()));
    }
}
