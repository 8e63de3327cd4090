//! One upgraded Noise connection served as HTTP/2: how many streams it may
//! open and when it is closed. It must bring its first request within
//! [`FIRST_REQUEST`] of the upgrade, and is closed [`IDLE`] after its last
//! request finished; a request in flight (a map stream, a client waiting up
//! to 10 minutes for its login) keeps it open. HTTP/2 pings find peers that
//! vanished without closing.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::body::Payer;
use super::{Body, Control, NoiseIo};
use crate::tailcfg::MachinePublic;

/// HTTP/2 streams a registered machine may have open at once (map stream,
/// lite updates, and whatever a newer client adds).
const STREAMS_REGISTERED: u32 = 16;
/// A machine without a node yet only registers and waits for its login.
/// (A real client over it opens another connection rather than fail.)
const STREAMS_UNKNOWN: u32 = 4;
/// Noise connections one machine key may hold: a client that reconnects
/// may still have its old one. A newer one closes the oldest.
pub const CONNS_PER_MACHINE: usize = 2;
/// From the upgrade to the first request (the HTTP/2 preface included).
pub const FIRST_REQUEST: Duration = Duration::from_secs(15);
/// How long a connection with nothing in flight stays open.
pub const IDLE: Duration = Duration::from_secs(90);
/// How long a finished answer (anything but a live map stream: a map
/// session's own frames have `session::FRAME_TAKEN`) may take to be sent.
/// A client that grants no window holds it in the server's buffers, so it
/// must not hold it for long: past it the connection is closed.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
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

/// What is going on on one connection: the requests in flight (at most
/// its stream limit), each with the time its answer must be sent by once
/// one is set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Activity {
    flights: Vec<(u64, Option<Instant>)>,
    next_id: u64,
    started: bool,
}

impl Activity {
    /// When the first answer in flight is overdue.
    fn overdue_at(&self) -> Option<Instant> {
        self.flights.iter().filter_map(|(_, due)| *due).min()
    }
}

/// How long the connection may stay as it is: `None` while a request is in
/// flight, else until the first request or the idle timeout.
pub(super) fn quiet_limit(a: &Activity) -> Option<Duration> {
    match (a.flights.len(), a.started) {
        (0, false) => Some(FIRST_REQUEST),
        (0, true) => Some(IDLE),
        _ => None,
    }
}

/// Counts one request as in flight until it is dropped: with the response
/// body, so a streaming answer counts until its last byte or its reset.
struct InFlight(Answer);

impl InFlight {
    fn start(tx: &Arc<watch::Sender<Activity>>) -> InFlight {
        let mut id = 0;
        tx.send_modify(|a| {
            id = a.next_id;
            a.next_id += 1;
            a.flights.push((id, None));
            a.started = true;
        });
        InFlight(Answer { id, tx: tx.clone() })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let id = self.0.id;
        self.0.tx.send_modify(|a| a.flights.retain(|(i, _)| *i != id));
    }
}

/// A request's handle on its answer's deadline: the handler (or the map
/// session that answers it) says when the answer is complete and must go.
#[derive(Clone)]
pub(super) struct Answer {
    id: u64,
    tx: Arc<watch::Sender<Activity>>,
}

impl Answer {
    fn due(&self, by: Instant) {
        // A request no longer in flight (its stream was reset) keeps no deadline.
        self.tx.send_if_modified(|a| match a.flights.iter_mut().find(|(i, _)| *i == self.id) {
            Some((_, due)) => {
                *due = Some(due.map_or(by, |d| d.min(by)));
                true
            }
            None => false,
        });
    }

    /// Nothing more is coming: what is left must be sent within [`ANSWER_DEADLINE`].
    pub(super) fn finished(&self) {
        self.due(Instant::now() + ANSWER_DEADLINE);
    }

    /// The client does not take its answer: the connection closes now.
    pub(super) fn abandon(&self) {
        self.due(Instant::now());
    }

    /// An answer that is no request's (unit tests drive a session directly).
    #[cfg(test)]
    pub(super) fn detached() -> Answer {
        Answer { id: 0, tx: Arc::new(watch::channel(Activity::default()).0) }
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

/// The Noise connections of each machine key, oldest first, each with what
/// closes it. Pure bookkeeping: who has to go is the caller's to tell.
#[derive(Default)]
pub(super) struct MachineConns {
    by_machine: HashMap<MachinePublic, VecDeque<(u64, Arc<Notify>)>>,
    next_id: u64,
}

impl MachineConns {
    /// Counts a new connection of `machine`; returns its id, and the
    /// connection that has to close to stay within [`CONNS_PER_MACHINE`].
    fn open(&mut self, machine: MachinePublic, close: Arc<Notify>) -> (u64, Option<Arc<Notify>>) {
        let id = self.next_id;
        self.next_id += 1;
        let conns = self.by_machine.entry(machine).or_default();
        conns.push_back((id, close));
        let oldest = (conns.len() > CONNS_PER_MACHINE).then(|| conns.pop_front()).flatten();
        (id, oldest.map(|(_, c)| c))
    }

    fn close(&mut self, machine: MachinePublic, id: u64) {
        if let Some(conns) = self.by_machine.get_mut(&machine) {
            conns.retain(|(i, _)| *i != id);
            if conns.is_empty() {
                self.by_machine.remove(&machine);
            }
        }
    }
}

/// One connection's entry in [`MachineConns`], taken out when dropped.
struct Registered<'a> {
    conns: &'a Mutex<MachineConns>,
    machine: MachinePublic,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).close(self.machine, self.id);
    }
}

impl Control {
    /// Serves HTTP/2 on an upgraded Noise stream of `machine`, which came
    /// from `from`; `known`: the machine had a node when it connected.
    pub(super) async fn serve_h2<S>(
        self: Arc<Self>,
        io: NoiseIo<S>,
        machine: MachinePublic,
        version: u16,
        from: IpAddr,
        known: bool,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        log::debug!("ts2021: {machine} connected from {from} (capability version {version}, known: {known})");
        let closer = Arc::new(Notify::new());
        let (id, oldest) = self.machine_conns().open(machine, closer.clone());
        let _registered = Registered { conns: &self.machine_conns, machine, id };
        if let Some(oldest) = oldest {
            log::debug!("ts2021: {machine} has {CONNS_PER_MACHINE} other connections; closing its oldest");
            oldest.notify_one();
        }
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
                    let answer = in_flight.0.clone();
                    async move {
                        let resp = this.machine_request(req, machine, payer, answer.clone()).await;
                        // A map stream's session says when it is finished; any other answer is now.
                        if resp.extensions().get::<super::session::Streaming>().is_none() {
                            answer.finished();
                        }
                        Ok::<_, Infallible>(resp.map(|body| Tracked { body, _in_flight: in_flight }))
                    }
                }),
            );
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        loop {
            let (quiet, overdue, started) = {
                let a = activity.borrow_and_update();
                (quiet_limit(&a), a.overdue_at(), a.started)
            };
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
                    if !started {
                        // Nothing was ever said: no goodbye either.
                        return log::debug!("ts2021: {machine} from {from} sent no request; closed");
                    }
                    log::debug!("ts2021: closing the quiet connection of {machine}");
                    break;
                }
                _ = tokio::time::sleep_until(overdue.unwrap_or_else(Instant::now)), if overdue.is_some() => {
                    // Its buffered answer would otherwise be held for as long as it likes.
                    return log::debug!("ts2021: {machine} from {from} does not take its answers; closed");
                }
                // Its machine has newer connections: this one is stale, or one too many.
                _ = closer.notified() => return log::debug!("ts2021: closed an older connection of {machine}"),
                _ = shutdown.changed() => break,
            }
        }
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(CLOSE_GRACE, conn).await.is_err() {
            log::debug!("ts2021: {machine} did not take its goodbye; dropped");
        }
    }

    fn machine_conns(&self) -> std::sync::MutexGuard<'_, MachineConns> {
        self.machine_conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_quiet_only_with_nothing_in_flight() {
        let fresh = Activity::default();
        assert_eq!(quiet_limit(&fresh), Some(FIRST_REQUEST));
        let busy = Activity { flights: vec![(0, None)], next_id: 1, started: true };
        assert_eq!(quiet_limit(&busy), None);
        assert_eq!(quiet_limit(&Activity { flights: vec![], next_id: 1, started: true }), Some(IDLE));
        assert!(FIRST_REQUEST <= Duration::from_secs(30) && (60..=120).contains(&IDLE.as_secs()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_due_only_while_its_request_is_in_flight() {
        let tx = Arc::new(watch::channel(Activity::default()).0);
        let (a, b) = (InFlight::start(&tx), InFlight::start(&tx));
        assert_eq!(tx.borrow().overdue_at(), None, "a request being handled has no deadline");
        let t = Instant::now();
        b.0.finished();
        assert_eq!(tx.borrow().overdue_at(), Some(t + ANSWER_DEADLINE));
        // A later deadline never pushes an earlier one out.
        a.0.abandon();
        a.0.finished();
        assert_eq!(tx.borrow().overdue_at(), Some(t));
        let late = a.0.clone();
        drop(a);
        late.abandon();
        assert_eq!(tx.borrow().overdue_at(), Some(t + ANSWER_DEADLINE), "a finished request keeps no deadline");
        drop(b);
        assert_eq!(quiet_limit(&tx.borrow()), Some(IDLE));
    }

    #[test]
    fn a_machine_keeps_its_two_newest_connections() {
        let mut m = MachineConns::default();
        let k = MachinePublic([1; 32]);
        let c: Vec<_> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let (first, none) = m.open(k, c[0].clone());
        assert!(none.is_none());
        assert!(m.open(k, c[1].clone()).1.is_none());
        assert!(m.open(MachinePublic([2; 32]), c[3].clone()).1.is_none(), "another machine's are its own");
        let (_, oldest) = m.open(k, c[2].clone());
        assert!(Arc::ptr_eq(&oldest.unwrap(), &c[0]), "the third closes the first");
        m.close(k, first);
        assert_eq!(m.by_machine[&k].len(), 2);
    }
}
