//! Pre-auth keys: made, expired, deleted, found. Checking and spending one
//! is part of registration (`register.rs`).

use std::sync::Arc;

use super::{expiry, not_found, secrets, PreAuthKey, State, StateError};

/// What a new pre-auth key should be.
#[derive(Debug, Clone)]
pub struct NewPreAuthKey {
    pub user: Option<u64>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub expiration: i64,
}

/// Pre-auth keys kept at once, expired ones included until deleted.
pub const MAX_PREAUTH_KEYS: usize = 1_000;

/// Tags as an admin or a key gives them: the bounds a login's requested
/// tags have (at most 16, each at most 128 bytes), and Tailscale's form.
pub(super) fn check_tags(tags: &[String]) -> Result<(), StateError> {
    use super::policy::{MAX_REQUESTED_TAGS, MAX_TAG_LEN};
    if tags.len() > MAX_REQUESTED_TAGS {
        return Err(StateError::Invalid(format!("at most {MAX_REQUESTED_TAGS} tags")));
    }
    for t in tags {
        if t.len() > MAX_TAG_LEN {
            return Err(StateError::Invalid(format!("a tag is at most {MAX_TAG_LEN} bytes")));
        }
        let name = t.strip_prefix("tag:").unwrap_or("");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(StateError::Invalid(format!("tag {t:?} must look like tag:name (letters, digits, '-', '_')")));
        }
    }
    Ok(())
}

impl State {
    /// Makes a pre-auth key; returns the record and the whole key (shown once).
    pub fn create_preauth_key(&self, new: NewPreAuthKey, now: i64) -> Result<(Arc<PreAuthKey>, String), StateError> {
        check_tags(&new.tags)?;
        if new.user.is_none() && new.tags.is_empty() {
            return Err(StateError::Invalid("a pre-auth key needs a user (--user) or tags (--tags)".into()));
        }
        let key = secrets::new_key_from(secrets::AUTH_KEY_PREFIX, self.settings.random)?;
        self.mutate(|tx| {
            if tx.snap().preauth_keys.len() >= MAX_PREAUTH_KEYS {
                return Err(StateError::PoolFull(format!(
                    "{MAX_PREAUTH_KEYS} pre-auth keys exist; delete expired ones first (tinyscale preauthkeys delete)"
                )));
            }
            if let Some(u) = new.user {
                if !tx.snap().users.contains_key(&u) {
                    return Err(not_found("user", u));
                }
            }
            let rec = Arc::new(PreAuthKey {
                id: tx.next_key_id(),
                prefix: key.prefix,
                hash: key.hash,
                user_id: new.user,
                reusable: new.reusable,
                ephemeral: new.ephemeral,
                used: false,
                tags: new.tags,
                created_at: now,
                expiration: new.expiration,
            });
            tx.put_key(rec.clone());
            Ok((rec, key.full))
        })
    }

    /// Expires a key now, on any clock (it stays listed until deleted).
    pub fn expire_preauth_key(&self, id: u64, now: i64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|tx| {
            let old = tx.snap().preauth_keys.get(&id).cloned().ok_or_else(|| not_found("pre-auth key", id))?;
            let rec =
                Arc::new(PreAuthKey { expiration: old.expiration.min(expiry::expired_now(now)), ..(*old).clone() });
            tx.put_key(rec.clone());
            Ok(rec)
        })
    }

    pub fn delete_preauth_key(&self, id: u64) -> Result<Arc<PreAuthKey>, StateError> {
        self.mutate(|tx| tx.remove_key(id).ok_or_else(|| not_found("pre-auth key", id)))
    }

    /// Finds a pre-auth key by its prefix or its whole text.
    pub fn find_preauth_key(&self, text: &str) -> Option<Arc<PreAuthKey>> {
        let prefix = secrets::split_key(secrets::AUTH_KEY_PREFIX, text).map(|(p, _)| p).unwrap_or(text);
        let prefix = prefix.strip_prefix(secrets::AUTH_KEY_PREFIX).unwrap_or(prefix);
        self.snapshot().preauth_keys.values().find(|k| k.prefix == prefix).cloned()
    }
}
