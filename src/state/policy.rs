//! The tailnet policy as state holds it: where it comes from
//! (`policy.mode`), how a new one is checked before it replaces the old,
//! and node tags, which the policy reads. A refused policy never replaces
//! the one in force: the old one keeps applying.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::register::TAGGED_DEVICES;
use super::{keys, not_found, Node, Snapshot, State, StateError};
use crate::policy::{hujson, Policy, UserRef};
use crate::tailcfg::{HostinfoView, MachinePublic};

/// Where the policy lives (Headscale's `policy.mode` and `policy.path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PolicySource {
    /// Read from `policy.path` at start and on SIGHUP; `None`: no policy,
    /// every node reaches every other.
    #[default]
    NoFile,
    File(PathBuf),
    /// Kept in the store, set with `tinyscale policy set`.
    Database,
}

/// A policy that was put in force.
#[derive(Debug)]
pub struct Applied {
    /// Sections read and checked but not acted on yet (for the log).
    pub not_applied: Vec<&'static str>,
    /// Whether it differs from the one it replaced.
    pub changed: bool,
}

/// Reads and checks a policy, naming where it came from in the refusal.
fn checked(text: &str, origin: &str) -> Result<Policy, StateError> {
    Policy::parse(text).map_err(|e| StateError::Invalid(format!("the policy {origin} is refused:\n{e}")))
}

/// A file's text, read no further than a policy may be long.
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(hujson::MAX_LEN as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > hujson::MAX_LEN {
        return Err(std::io::Error::other(format!("larger than the {} bytes a policy may have", hujson::MAX_LEN)));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

impl State {
    /// The policy in force at start: the store's (database mode) or the
    /// file's. A policy that does not check stops the start rather than
    /// letting every node reach every other.
    pub(super) fn load_policy(&self, stored: Option<String>) -> Result<Option<Applied>, StateError> {
        match &self.settings.policy {
            PolicySource::NoFile => Ok(None),
            PolicySource::File(_) => self.reload_policy_file().map(Some),
            PolicySource::Database => {
                let Some(text) = stored.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
                let policy = checked(&text, "in the database")?;
                self.put_policy(policy, text, false).map(Some)
            }
        }
    }

    /// The text of the policy in force, if any.
    pub fn policy_text(&self) -> Option<Arc<str>> {
        self.snapshot().policy_text.clone()
    }

    /// Checks `text` as `set_policy` would, in any mode, and keeps nothing.
    pub fn check_policy(&self, text: &str) -> Result<(), StateError> {
        checked(text, "given").map(|_| ())
    }

    /// `tinyscale policy set`: checks `text` and, if it is a policy, stores
    /// it and puts it in force. Only in database mode: a file policy is
    /// changed by editing the file.
    pub fn set_policy(&self, text: &str) -> Result<Applied, StateError> {
        match &self.settings.policy {
            PolicySource::Database => {}
            PolicySource::File(path) => {
                return Err(StateError::Invalid(format!(
                    "policy.mode is file: edit {} and send tinyscale SIGHUP (kill -HUP) to load it, or set policy.mode: database to set it here",
                    path.display()
                )))
            }
            PolicySource::NoFile => {
                return Err(StateError::Invalid(
                    "policy.mode is file and policy.path is not set: set policy.path (and send SIGHUP) or policy.mode: database"
                        .into(),
                ))
            }
        }
        let policy = checked(text, "given")?;
        self.put_policy(policy, text.to_string(), true)
    }

    /// Reads `policy.path` again (at start and on SIGHUP). A file that cannot
    /// be read or does not check leaves the policy in force as it was.
    pub fn reload_policy_file(&self) -> Result<Applied, StateError> {
        let PolicySource::File(path) = &self.settings.policy else {
            return Err(StateError::Invalid("policy.mode is not file, or policy.path is not set".into()));
        };
        let text = read_bounded(path)
            .map_err(|e| StateError::Invalid(format!("cannot read the policy file {}: {e}", path.display())))?;
        let policy = checked(&text, &format!("in {}", path.display()))?;
        self.put_policy(policy, text, false)
    }

    fn put_policy(&self, policy: Policy, text: String, persist: bool) -> Result<Applied, StateError> {
        let not_applied = policy.not_applied();
        let rules = policy.rule_count();
        let applied = self.mutate(|tx| {
            let changed = tx.snap().policy_text.as_deref() != Some(text.as_str());
            if changed {
                tx.set_policy(Some(Arc::new(policy)), text.into(), persist);
            }
            Ok::<_, StateError>(Applied { not_applied, changed })
        })?;
        if applied.changed {
            log::info!("policy: in force ({rules} rule(s))");
            if !applied.not_applied.is_empty() {
                log::info!("policy: {} read and checked but not applied yet", applied.not_applied.join(", "));
            }
        }
        Ok(applied)
    }

    /// `tinyscale nodes tag`: the node is owned by these tags from now on,
    /// not by its user (Headscale's `tagged-devices`). Set by the admin, so
    /// not checked against `tagOwners`, which governs what a node may ask
    /// for. A tagged node becomes personal again by logging in again
    /// (`tailscale up --force-reauth --advertise-tags=`), as in Headscale.
    pub fn set_tags(&self, id: u64, tags: Vec<String>) -> Result<Arc<Node>, StateError> {
        keys::check_tags(&tags)?;
        if tags.is_empty() {
            return Err(StateError::Invalid(
                "give at least one tag; a tagged node becomes personal again when it logs in again (tailscale up --force-reauth --advertise-tags=)"
                    .into(),
            ));
        }
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            let node = Arc::new(Node { tags: tags.clone(), user_id: TAGGED_DEVICES, ..(*old).clone() });
            tx.put_node(node.clone());
            tx.review_routes();
            Ok(node)
        })
    }
}

/// Distinct tags one device may ask for.
pub const MAX_REQUESTED_TAGS: usize = 16;
/// The longest tag a device may ask for, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// The distinct tags a device asks for in its Hostinfo (`--advertise-tags`),
/// sorted; more than [`MAX_REQUESTED_TAGS`] are cut to one more than that,
/// which `login_tags` refuses.
pub(super) fn requested_tags(hostinfo: Option<&RawValue>) -> Vec<String> {
    let mut tags = hostinfo.and_then(|h| HostinfoView::of(h).request_tags).unwrap_or_default();
    // A keyless device's login is held in RAM until approved: each tag is
    // kept to one byte past the longest allowed, which `login_tags` refuses.
    for t in &mut tags {
        let cut = crate::text::head_bytes(t, MAX_TAG_LEN + 1).len();
        t.truncate(cut);
    }
    tags.sort();
    tags.dedup();
    tags.truncate(MAX_REQUESTED_TAGS + 1);
    tags
}

fn refused_tags(tags: &[String]) -> StateError {
    StateError::Invalid(format!(
        "requested tags {tags:?} are invalid or not permitted (the policy's tagOwners decide who may ask for a tag)"
    ))
}

/// The tags a device logging in as `user_id` gets for the tags it asks for:
/// none asked, none given (a personal node); otherwise every one must be
/// the user's to give by `tagOwners` (or owned by a tag the machine's node
/// holds), or the login is refused, as in Headscale. Without a policy no
/// tag may be asked for.
pub(super) fn login_tags(
    snap: &Snapshot,
    user_id: u64,
    machine: MachinePublic,
    requested: Vec<String>,
) -> Result<Vec<String>, StateError> {
    if requested.is_empty() {
        return Ok(requested);
    }
    if requested.len() > MAX_REQUESTED_TAGS {
        return Err(StateError::Invalid(format!("a device may ask for at most {MAX_REQUESTED_TAGS} tags")));
    }
    if requested.iter().any(|t| t.len() > MAX_TAG_LEN) {
        return Err(StateError::Invalid(format!("a tag a device asks for has at most {MAX_TAG_LEN} bytes")));
    }
    keys::check_tags(&requested).map_err(|_| refused_tags(&requested))?;
    let Some(policy) = &snap.policy else { return Err(refused_tags(&requested)) };
    let users: Vec<UserRef> = snap.users.values().map(|u| Snapshot::user_ref(u)).collect();
    let user = snap.users.get(&user_id).map(|u| Snapshot::user_ref(u));
    let held = snap.node_by_machine(&machine).map(|n| n.tags.clone()).unwrap_or_default();
    let rejected = policy.refused_tags(&requested, user.as_ref(), &held, &users);
    if !rejected.is_empty() {
        return Err(refused_tags(&rejected));
    }
    let mut tags = requested;
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// A pre-auth key's node gets the key's tags; asking for tags with one is
/// refused, as in Headscale.
pub(super) fn no_tags_with_a_key(requested: &[String]) -> Result<(), StateError> {
    if requested.is_empty() {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "requested tags {requested:?} are invalid or not permitted: a node joining with a pre-auth key gets the key's tags (preauthkeys create --tags)"
        )))
    }
}
