//! Wall-clock time as Unix seconds, RFC 3339 text, and Headscale-style durations.
//!
//! Pure functions take `now` as a parameter; only [`now_unix`] and
//! [`mono_secs`] read a clock.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A router without an RTC boots in 1970 until NTP
/// answers; callers that expire things compare against [`build_epoch`] first.
pub fn now_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        // A clock before 1970 is as untrustworthy as one at 1970.
        Err(_) => 0,
    }
}

/// Seconds on a monotonic clock, counted from the first call in this
/// process: for spans that must not jump when NTP sets the wall clock.
/// It is tokio's clock, so tests can pause and advance it.
pub fn mono_secs() -> u64 {
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now().saturating_duration_since(origin).as_secs()
}

/// When this binary was built (Unix seconds). The wall clock is not trusted
/// while it reads earlier than this.
pub fn build_epoch() -> i64 {
    env!("TINYSCALE_BUILD_EPOCH").parse().unwrap_or(0)
}

/// The earliest time there is: what an expiry made "now" records while the
/// clock reads before the build time. It is past on any clock, even one
/// that went back further after a reboot.
pub const LONG_AGO: i64 = 0;

/// Whether the wall clock can be believed (it is not behind the build time).
pub fn clock_is_sane(now: i64) -> bool {
    now >= build_epoch()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Unix timestamp as RFC 3339 UTC, e.g. `2026-11-27T15:37:01Z`.
pub fn rfc3339(unix: i64) -> String {
    // Outside what RFC 3339 can write, the nearest time it can.
    let unix = unix.clamp(MIN_TIME, MAX_TIME);
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    // By hand rather than `format!`: every node of every map carries times.
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo as i64);
    put(8, 2, d as i64);
    put(11, 2, secs / 3600);
    put(14, 2, (secs / 60) % 60);
    put(17, 2, secs % 60);
    // ASCII digits and separators only.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the times RFC 3339 can write.
pub const MIN_TIME: i64 = -62_167_219_200;
pub const MAX_TIME: i64 = 253_402_300_799;

/// Parses RFC 3339 (`2026-11-27T15:37:01Z`, fractional seconds and offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    // Digits only: `parse` would take a sign (`-001`, `+9`).
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':' => {
            let two = |r: std::ops::Range<usize>| -> Option<i64> {
                let t = rest.get(r)?;
                t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
            };
            let (oh, om) = (two(1..3)?, two(4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    // What an offset pushes outside years 0000–9999 cannot be written back
    // as RFC 3339, and clients refuse such times.
    (MIN_TIME..=MAX_TIME).contains(&t).then_some(t)
}

/// A span of time in whole seconds (sub-second parts of a config value are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub u64);

impl Span {
    pub fn secs(self) -> u64 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0;
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= len {
                write!(f, "{}{unit}", s / len)?;
                s %= len;
            }
        }
        Ok(())
    }
}

/// Parses durations as Headscale accepts them: Go's `1h30m`, `90s`, `500ms`, and
/// Prometheus' `90d`, `2w`, `1y`; a bare `0` means zero.
pub fn parse_span(s: &str) -> Result<Span, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Span(0));
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(format!("{s:?} is not a duration (expected e.g. 30s, 15m, 1h, 90d)"));
        }
        let value: u128 = rest[..n].parse().map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[n..];
        let u = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let ms_per: u128 = match &rest[..u] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            "" => return Err(format!("{s:?} needs a unit (ms, s, m, h, d, w, y)")),
            other => return Err(format!("{s:?} has unknown unit {other:?} (use ms, s, m, h, d, w, y)")),
        };
        rest = &rest[u..];
        total_ms = total_ms.saturating_add(value.saturating_mul(ms_per));
    }
    Ok(Span(u64::try_from(total_ms / 1000).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 123, 951_782_400, 1_764_257_821, 4_102_444_800, -86_400] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(123), "1970-01-01T00:02:03Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        // The hand-written digits against `format!`, across the whole range.
        let mut t = MIN_TIME;
        while t <= MAX_TIME {
            let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
            let s = t.rem_euclid(86_400);
            let want = format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, (s / 60) % 60, s % 60);
            assert_eq!(rfc3339(t), want);
            t += 7_777_777;
        }
    }

    #[test]
    fn rfc3339_parses_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.999Z"), Some(1));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00-00:30"), Some(1800));
        for bad in [
            "",
            "1970-01-01",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00",
            "x970-01-01T00:00:00Z",
            // Signs, out-of-range offsets, and what lands outside years 0000–9999 (review 13).
            "-001-12-31T23:00:00Z",
            "1970-01-01T+1:00:00Z",
            "1970-01-01T00:00:00+99:99",
            "1970-01-01T00:00:00+01-00",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00Z"), Some(MIN_TIME));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Some(MAX_TIME));
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn spans_parse_go_and_prometheus_forms() {
        assert_eq!(parse_span("0"), Ok(Span(0)));
        assert_eq!(parse_span("30m"), Ok(Span(1800)));
        assert_eq!(parse_span("1h30m"), Ok(Span(5400)));
        assert_eq!(parse_span("90d"), Ok(Span(90 * 86_400)));
        assert_eq!(parse_span("2w"), Ok(Span(14 * 86_400)));
        assert_eq!(parse_span("1500ms"), Ok(Span(1)));
        assert!(parse_span("10").is_err());
        assert!(parse_span("3 hours").is_err());
        assert!(parse_span("1x").is_err());
        assert!(parse_span("").is_err());
        assert_eq!(Span(5400).to_string(), "1h30m");
        assert_eq!(Span(0).to_string(), "0s");
    }
}
