//! The STUN listener: answers binding requests with the address it saw.
//! Each source address gets a small token bucket, so the router cannot be
//! used to reflect a flood; the table of sources is bounded too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Requests a source may burst, and how many it earns back each second.
const BURST: f64 = 20.0;
const PER_SECOND: f64 = 10.0;
/// Sources remembered at once; beyond it the table starts over.
const MAX_SOURCES: usize = 4096;

/// A per-source token bucket.
#[derive(Default)]
pub struct Limiter {
    sources: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources.clear();
        }
        let (tokens, last) = self.sources.entry(ip).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * PER_SECOND).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn serve(socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
    let mut limiter = Limiter::default();
    let mut buf = [0u8; 1500];
    loop {
        let (n, from): (usize, SocketAddr) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    log::debug!("stun: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(txid) = super::parse_request(&buf[..n]) else { continue };
        if !limiter.allow(from.ip(), Instant::now()) {
            continue;
        }
        if let Err(e) = socket.send_to(&super::response(&txid, from), from).await {
            log::debug!("stun: answering {from}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_from_one_source_is_cut_off_others_are_not() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(a, t)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(l.allow("192.0.2.2".parse().unwrap(), t));
        assert!(l.allow(a, t + Duration::from_millis(200)), "tokens come back");
    }
}
