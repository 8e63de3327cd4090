//! Who may use the API over the network: a request with
//! `Authorization: Bearer <API key>`. Failed attempts are counted per
//! source; past [`FREE_FAILURES`] a minute a source's failures are answered
//! 429 instead of 401, while a valid key always passes. The table is
//! bounded: a flood of addresses evicts stale counts first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::quota::source_key;
use crate::state::State;

/// Failures a source may have in a [`WINDOW`] before it is told to wait.
pub const FREE_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once (about 40 bytes each).
pub const MAX_SOURCES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No key, a malformed, unknown, wrong or expired one: 401.
    Unauthorized,
    /// As `Unauthorized`, from a source past its free failures: 429.
    TooManyFailures,
}

#[derive(Default)]
pub struct Failures {
    /// Per source (IPv6 by /64): when its window began and its failures in it.
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    /// Records a failure of `ip` at `now`; returns whether the source is
    /// past its free failures.
    fn fail(&self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip).unwrap_or(ip);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.contains_key(&key) && t.len() >= MAX_SOURCES {
            t.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if t.len() >= MAX_SOURCES {
                if let Some(oldest) = t.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let e = t.entry(key).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 > FREE_FAILURES
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

/// The key in an `Authorization` header value, if it is a bearer token.
fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?;
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request with this `Authorization` header from `ip` may use the API.
pub fn check(state: &State, failures: &Failures, header: Option<&str>, ip: IpAddr, now: i64, mono: Instant) -> Verdict {
    if bearer(header).is_some_and(|k| state.api_key_valid(k, now)) {
        return Verdict::Allowed;
    }
    if failures.fail(ip, mono) {
        Verdict::TooManyFailures
    } else {
        Verdict::Unauthorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_source_and_forgotten_after_a_minute() {
        let f = Failures::default();
        let t0 = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(!f.fail(a, t0));
        }
        assert!(f.fail(a, t0), "the 11th failure in a minute");
        assert!(!f.fail(b, t0), "another source is not charged");
        for _ in 1..FREE_FAILURES {
            f.fail(b_same_64, t0);
        }
        assert!(f.fail(b, t0), "one /64 is one source");
        assert!(!f.fail(a, t0 + WINDOW), "a new window");
    }

    #[test]
    fn the_table_stays_bounded() {
        let f = Failures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 * 3) {
            f.fail(IpAddr::from(0x0a00_0000u32.wrapping_add(i).to_be_bytes()), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(f.len(), MAX_SOURCES);
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }
}
