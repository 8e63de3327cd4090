//! Admin sessions of the web UI: in RAM only (a restart signs everyone
//! out), few, expiring, each with its own CSRF token. The cookie holds a
//! 256-bit random token; forms carry the session's CSRF token, compared in
//! constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secrets::{random_bytes, RandomUnavailable};
use crate::tailcfg::encode_hex;

/// The session cookie's name over http; over https it is `__Host-ts_admin`,
/// which no other host or path can set.
pub const COOKIE: &str = "ts_admin";

/// The cookie's name for a server on https (`secure`) or not.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-ts_admin"
    } else {
        COOKIE
    }
}
/// How long a session lasts from sign-in, whatever it does.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions at once: a household has an admin or two, each with a phone
/// and a laptop. A new sign-in past the cap ends the oldest session.
pub const MAX_SESSIONS: usize = 16;

#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in (an email and the provider's id, or "API key …").
    pub who: String,
    pub csrf: String,
    /// The prefix of the API key that signed in, if one did: the session
    /// ends when the key expires or is deleted.
    pub api_key: Option<String>,
    /// A message for the next page, shown once.
    pub flash: Option<(String, bool)>,
    started: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn token() -> Result<String, RandomUnavailable> {
    let mut b = [0u8; 32];
    random_bytes(&mut b)?;
    Ok(encode_hex(&b))
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Starts a session for `who` (signed in with the API key of prefix
    /// `api_key`, if any); returns the cookie's token.
    pub fn start(&self, who: &str, api_key: Option<&str>, now: Instant) -> Result<String, RandomUnavailable> {
        let (id, csrf) = (token()?, token()?);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| now.duration_since(s.started) < LIFETIME);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        let s = Session { who: who.to_string(), csrf, api_key: api_key.map(str::to_string), flash: None, started: now };
        map.insert(id.clone(), s);
        Ok(id)
    }

    /// The live session of a cookie's token.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if now.duration_since(s.started) < LIFETIME => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, id: &str, text: String, bad: bool) {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            s.flash = Some((text, bad));
        }
    }

    /// Takes the message left for this page, if any.
    pub fn take_flash(&self, id: &str) -> Option<(String, bool)> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id).and_then(|s| s.flash.take())
    }

    pub fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_stay_few() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.start("alice", None, t0).unwrap();
        assert_eq!(id.len(), 64);
        s.set_flash(&id, "done".into(), false);
        assert_eq!(s.take_flash(&id), Some(("done".to_string(), false)));
        assert_eq!(s.take_flash(&id), None, "shown once");
        let got = s.get(&id, t0).unwrap();
        assert_eq!(got.who, "alice");
        assert_ne!(got.csrf, id);
        assert!(s.get("nope", t0).is_none());
        assert!(s.get(&id, t0 + LIFETIME).is_none(), "expired");
        let id = s.start("alice", None, t0).unwrap();
        s.end(&id);
        assert!(s.get(&id, t0).is_none());
        let first = s.start("first", None, t0).unwrap();
        for i in 1..=MAX_SESSIONS {
            s.start("x", Some("0123456789ab"), t0 + Duration::from_secs(i as u64)).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, t0).is_none(), "the oldest made room");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
