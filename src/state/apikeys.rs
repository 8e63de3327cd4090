//! API keys for the REST API and the admin web UI: made (shown whole
//! once), listed by prefix, expired, deleted, and checked. Stored as the
//! SHA-256 of a 256-bit secret: a fast hash is enough for a secret nobody
//! can guess, and a slow one (Headscale's bcrypt) would hand anyone on the
//! internet a second of the router's CPU per attempt.

use std::sync::Arc;

use super::{expiry, ApiKey, State, StateError};
use crate::secrets::{self, API_KEY_PREFIX};

/// API keys a tailnet may hold: a household needs a few.
pub const MAX_API_KEYS: usize = 100;

/// The 12-hex prefix in any of the forms a user may give it: the whole
/// key, the listed `hskey-api-<prefix>-***`, `hskey-api-<prefix>` or bare.
pub fn prefix_of(text: &str) -> &str {
    let rest = text.strip_prefix(API_KEY_PREFIX).unwrap_or(text);
    rest.split_once('-').map_or(rest, |(p, _)| p)
}

/// Whether a key may be used at `now`: unexpired, on a clock that can tell.
/// Nothing is usable on a clock that reads before the build: a router
/// without a battery-backed clock boots in the past, where an expired or
/// revoked key would look valid until NTP answers.
fn usable(k: &ApiKey, now: i64) -> bool {
    crate::clock::clock_is_sane(now) && !super::has_passed(k.expiration, now)
}

impl State {
    /// Whether a usable key of this prefix still exists (a web session an
    /// API key started lives no longer than the key).
    pub fn api_key_live(&self, prefix: &str, now: i64) -> bool {
        self.snapshot().api_keys.values().any(|k| k.prefix == prefix && usable(k, now))
    }

    /// Makes an API key valid until `expiration`; returns it and the whole
    /// key (shown once).
    pub fn create_api_key(&self, expiration: i64, now: i64) -> Result<(Arc<ApiKey>, String), StateError> {
        if expiration <= now {
            return Err(StateError::Invalid("the expiration is in the past".into()));
        }
        let key = secrets::new_api_key_from(self.settings.random)?;
        self.mutate(|tx| {
            if tx.snap().api_keys.len() >= MAX_API_KEYS {
                return Err(StateError::PoolFull(format!(
                    "{MAX_API_KEYS} API keys exist; delete one first (tinyscale apikeys delete --prefix P)"
                )));
            }
            if tx.snap().api_keys.values().any(|k| k.prefix == key.prefix) {
                return Err(StateError::Exists("an API key with this prefix exists; try again".into()));
            }
            let rec = Arc::new(ApiKey {
                id: tx.next_api_key_id(),
                prefix: key.prefix,
                hash: key.hash,
                created_at: now,
                expiration,
                last_seen: None,
            });
            tx.put_api_key(rec.clone());
            Ok((rec, key.full))
        })
    }

    fn api_key_id(&self, prefix: &str) -> Result<u64, StateError> {
        let p = prefix_of(prefix);
        self.snapshot()
            .api_keys
            .values()
            .find(|k| k.prefix == p)
            .map(|k| k.id)
            .ok_or_else(|| StateError::NotFound(format!("no API key with prefix {p:?}")))
    }

    /// Expires a key now (it stays listed until deleted).
    pub fn expire_api_key(&self, prefix: &str, now: i64) -> Result<Arc<ApiKey>, StateError> {
        let id = self.api_key_id(prefix)?;
        self.mutate(|tx| {
            let old = tx.snap().api_keys.get(&id).cloned().ok_or_else(|| super::not_found("API key", id))?;
            let rec = Arc::new(ApiKey { expiration: old.expiration.min(expiry::expired_now(now)), ..(*old).clone() });
            tx.put_api_key(rec.clone());
            Ok(rec)
        })
    }

    pub fn delete_api_key(&self, prefix: &str) -> Result<Arc<ApiKey>, StateError> {
        let id = self.api_key_id(prefix)?;
        self.mutate(|tx| tx.remove_api_key(id).ok_or_else(|| super::not_found("API key", id)))
    }

    /// Whether `text` is a whole, unexpired API key. The secret is compared
    /// in constant time; an unknown prefix costs the same hash.
    /// See [`usable`] for the clock.
    pub fn api_key_valid(&self, text: &str, now: i64) -> bool {
        let Some((prefix, secret)) = secrets::split_key(API_KEY_PREFIX, text) else { return false };
        // Only the shape a key has is hashed: a long header costs no CPU.
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(prefix, 12) || !hex(secret, 64) {
            return false;
        }
        let snap = self.snapshot();
        match snap.api_keys.values().find(|k| k.prefix == prefix) {
            Some(k) => secrets::secret_matches(secret, &k.hash) && usable(k, now),
            None => {
                let _ = secrets::secret_matches(secret, "");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Allocation, Prefixes};
    use crate::state::Settings;
    use crate::store::Store;

    fn open(dir: &std::path::Path) -> State {
        let prefixes =
            Prefixes { v4: Some("100.64.0.0/10".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
        State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(prefixes)).unwrap()
    }

    #[test]
    fn api_keys_are_shown_once_checked_expired_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let now = crate::clock::build_epoch() + 100;
        let (k, full) = s.create_api_key(now + 3600, now).unwrap();
        let rest = full.strip_prefix("hskey-api-").unwrap();
        let (prefix, secret) = rest.split_once('-').unwrap();
        assert_eq!((prefix.len(), secret.len()), (12, 64), "{full}");
        assert!(prefix.bytes().chain(secret.bytes()).all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k.prefix, prefix);
        assert!(!k.hash.contains(secret));
        assert!(s.api_key_valid(&full, now));
        assert!(!s.api_key_valid(&full, now + 3600), "expired");
        assert!(!s.api_key_valid(&full, 0), "a clock before the build trusts no key");
        assert!(!s.api_key_valid(&format!("{full}{}", "0".repeat(30_000)), now));
        assert!(!s.api_key_valid(&full[..full.len() - 1], now));
        let flip = if full.ends_with('0') { '1' } else { '0' };
        assert!(!s.api_key_valid(&format!("{}{flip}", &full[..full.len() - 1]), now));
        assert!(!s.api_key_valid(&format!("hskey-api-000000000000-{secret}"), now));
        assert!(!s.api_key_valid("", now) && !s.api_key_valid(prefix, now));
        assert!(s.create_api_key(now - 1, now).is_err());

        assert_eq!(prefix_of(&format!("hskey-api-{prefix}-***")), prefix);
        s.expire_api_key(&format!("hskey-api-{prefix}-***"), now).unwrap();
        assert!(!s.api_key_valid(&full, now));
        assert!(matches!(s.delete_api_key("nope"), Err(StateError::NotFound(_))));
        s.delete_api_key(prefix).unwrap();
        assert!(s.snapshot().api_keys.is_empty());
    }

    #[test]
    fn api_keys_survive_a_restart_and_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::build_epoch() + 100;
        let full = {
            let s = open(dir.path());
            s.create_api_key(now + 3600, now).unwrap().1
        };
        let s = open(dir.path());
        assert!(s.api_key_valid(&full, now));
        for _ in 1..MAX_API_KEYS {
            s.create_api_key(now + 3600, now).unwrap();
        }
        assert!(matches!(s.create_api_key(now + 3600, now), Err(StateError::PoolFull(_))));
    }
}
