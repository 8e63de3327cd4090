//! Users: made with the CLI or from an identity provider's login.

use std::sync::Arc;

use super::{names, not_found, State, StateError, User};

/// A person as an identity provider vouched for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// `<issuer without trailing slash>/<sub>`: the one stable key.
    pub provider_id: String,
    pub username: String,
    pub display_name: String,
    /// Empty unless verified or `oidc.email_verified_required` is off.
    pub email: String,
    /// Whether the provider vouched for `email`. Only a verified email links
    /// a login to a user made with the CLI; an unverified one is merely
    /// stored on the login's own user.
    pub email_verified: bool,
    pub picture: String,
}

/// What a new user should be.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub profile_pic_url: String,
}

/// Users a tailnet may hold: each is in the maps of those who see its devices.
pub const MAX_USERS: usize = 1_000;
/// The longest display name, email or picture URL kept (on flash, and in maps).
pub const MAX_FIELD: usize = 256;

fn check_fields(new: &NewUser) -> Result<(), StateError> {
    for (what, v) in [("display name", &new.display_name), ("email", &new.email), ("picture URL", &new.profile_pic_url)]
    {
        if v.len() > MAX_FIELD {
            return Err(StateError::Invalid(format!("the {what} is over {MAX_FIELD} bytes")));
        }
    }
    Ok(())
}

/// What an identity provider sends, cut to what is kept.
fn clipped(s: &str) -> String {
    crate::text::head_bytes(s, MAX_FIELD).to_string()
}

fn room_for_a_user(tx: &super::Tx) -> Result<(), StateError> {
    if tx.snap().users.len() >= MAX_USERS {
        return Err(StateError::PoolFull(format!("the tailnet holds {MAX_USERS} users, the most it may")));
    }
    Ok(())
}

impl State {
    pub fn create_user(&self, new: NewUser, now: i64) -> Result<Arc<User>, StateError> {
        names::check_username(&new.name).map_err(StateError::Invalid)?;
        check_fields(&new)?;
        self.mutate(|tx| {
            room_for_a_user(tx)?;
            if tx.snap().user_by_name(&new.name).is_some() {
                return Err(StateError::Exists(format!("user {:?} already exists", new.name)));
            }
            let user = Arc::new(User {
                id: tx.next_user_id(),
                name: new.name,
                display_name: new.display_name,
                email: new.email,
                profile_pic_url: new.profile_pic_url,
                provider: String::new(),
                provider_id: String::new(),
                created_at: now,
            });
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    /// The user of an identity-provider login. Identities are matched by
    /// issuer + subject only, so two different logins are never one user.
    /// A user made with the CLI is taken over only when it was given the same
    /// email the provider verified: whoever can set an unverified email at
    /// the provider could otherwise claim anyone's account. A mere name
    /// clash makes a new user with a suffixed name (`alice-1`) instead.
    pub fn login_user(&self, id: &ExternalIdentity, now: i64) -> Result<Arc<User>, StateError> {
        self.mutate(|tx| {
            let existing =
                tx.snap().users.values().find(|u| u.provider == "oidc" && u.provider_id == id.provider_id).cloned();
            let claimable = || {
                tx.snap()
                    .users
                    .values()
                    .find(|u| {
                        u.provider.is_empty()
                            && id.email_verified
                            && !id.email.is_empty()
                            && u.email.eq_ignore_ascii_case(&id.email)
                    })
                    .cloned()
            };
            let user = match existing.or_else(claimable) {
                Some(u) => {
                    let updated = User {
                        provider: "oidc".into(),
                        provider_id: id.provider_id.clone(),
                        display_name: if id.display_name.is_empty() {
                            u.display_name.clone()
                        } else {
                            clipped(&id.display_name)
                        },
                        email: if id.email.is_empty() { u.email.clone() } else { clipped(&id.email) },
                        profile_pic_url: if id.picture.is_empty() {
                            u.profile_pic_url.clone()
                        } else {
                            clipped(&id.picture)
                        },
                        ..(*u).clone()
                    };
                    if updated == *u {
                        return Ok(u);
                    }
                    Arc::new(updated)
                }
                None => {
                    room_for_a_user(tx)?;
                    let name = names::unique(&id.username, |n| tx.snap().user_by_name(n).is_some());
                    Arc::new(User {
                        id: tx.next_user_id(),
                        name,
                        display_name: clipped(&id.display_name),
                        email: clipped(&id.email),
                        profile_pic_url: clipped(&id.picture),
                        provider: "oidc".into(),
                        provider_id: id.provider_id.clone(),
                        created_at: now,
                    })
                }
            };
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    pub fn rename_user(&self, id: u64, new_name: &str) -> Result<Arc<User>, StateError> {
        names::check_username(new_name).map_err(StateError::Invalid)?;
        self.mutate(|tx| {
            let old = tx.snap().users.get(&id).cloned().ok_or_else(|| not_found("user", id))?;
            if let Some(other) = tx.snap().user_by_name(new_name) {
                if other.id != id {
                    return Err(StateError::Exists(format!("user {new_name:?} already exists")));
                }
            }
            let user = Arc::new(User { name: new_name.to_string(), ..(*old).clone() });
            tx.put_user(user.clone());
            Ok(user)
        })
    }

    /// Deletes a user and its pre-auth keys; refused while it still owns nodes.
    pub fn destroy_user(&self, id: u64) -> Result<Arc<User>, StateError> {
        self.mutate(|tx| {
            let user = tx.snap().users.get(&id).cloned().ok_or_else(|| not_found("user", id))?;
            let owned = tx.snap().nodes.values().filter(|n| n.user_id == id).count();
            if owned > 0 {
                return Err(StateError::InUse(format!(
                    "user {:?} still owns {owned} node(s); delete them first (tinyscale nodes list --user {})",
                    user.name, user.name
                )));
            }
            let keys: Vec<u64> =
                tx.snap().preauth_keys.values().filter(|k| k.user_id == Some(id)).map(|k| k.id).collect();
            for k in keys {
                tx.remove_key(k);
            }
            tx.remove_user(id);
            Ok(user)
        })
    }
}
