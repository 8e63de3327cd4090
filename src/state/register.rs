//! `/machine/register`: who may join, as protocol.md §5.3 lays it out.
//!
//! Identity is the machine key (from Noise) plus the node key. Pre-auth keys
//! admit directly; otherwise the client is sent to a login URL and a pending
//! registration (`pending.rs`) waits until an admin or the identity provider
//! approves it.

use std::sync::Arc;
use std::time::Instant;

use super::{has_passed, Node, PreAuthKey, State, StateError, Tx};
use crate::clock;
use crate::secrets::{secret_matches, split_key, AUTH_KEY_PREFIX};
use crate::tailcfg::{HostinfoView, MachinePublic, NodePublic, RegisterRequest};
/// The owner of nodes that joined with a tags-only key (Tailscale's "tagged-devices").
pub const TAGGED_DEVICES: u64 = 2_147_455_555;

/// What a new node is made from.
pub struct NodeSpec {
    /// `None` for a node made without a device (`debug create-node`).
    pub machine_key: Option<MachinePublic>,
    pub node_key: NodePublic,
    pub user_id: u64,
    pub hostname: String,
    pub register_method: &'static str,
    pub auth_key_id: Option<u64>,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub expiry: super::expiry::Planned,
}

#[derive(Debug)]
pub enum Registered {
    /// The node may use the tailnet.
    Authorized(Arc<Node>),
    /// Logged out, or its key expired: the client must log in again.
    Expired,
    /// The client must log in: the caller opens a pending login
    /// ([`State::start_login`]) and sends it to `/register/<id>`.
    NeedsLogin,
}

#[derive(Debug)]
pub enum RegisterError {
    /// The machine key does not own the node key it names (HTTP 401).
    Unauthorized(String),
    BadRequest(String),
    /// Refused with a reason the client shows (`Error` in the response).
    Refused(String),
    State(StateError),
}

impl From<StateError> for RegisterError {
    fn from(e: StateError) -> Self {
        RegisterError::State(e)
    }
}

/// How a pending login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Approved(u64),
    Rejected(String),
}

/// An auth id from a followup URL (`…/register/<id>`), if it looks like one of ours.
pub fn auth_id_of(followup: &str) -> Option<&str> {
    let id = followup.rsplit('/').next()?;
    valid_auth_id(id).then_some(id)
}

pub fn valid_auth_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn requested_logout(req: &RegisterRequest, now: i64) -> bool {
    let Some(t) = req.expiry.as_deref().and_then(clock::parse_rfc3339) else { return false };
    // Zero time is "no preference". Anything before the build is surely the
    // past even when the router's clock still reads 1970.
    t > clock::parse_rfc3339(crate::tailcfg::ZERO_TIME).unwrap_or(i64::MIN) && (t <= now || t < clock::build_epoch())
}

/// The node registered with `node_key`, if any; refused when another machine owns it.
fn owned_by(
    snap: &super::Snapshot,
    machine: MachinePublic,
    node_key: NodePublic,
) -> Result<Option<Arc<Node>>, RegisterError> {
    match snap.node_by_key(&node_key) {
        Some(n) if n.machine_key != Some(machine) => {
            Err(RegisterError::Unauthorized("node key belongs to another machine".into()))
        }
        other => Ok(other.cloned()),
    }
}

fn check_auth_key(snap: &super::Snapshot, text: &str, now: i64) -> Result<Arc<PreAuthKey>, RegisterError> {
    let invalid = || RegisterError::Refused("invalid auth key".into());
    let (prefix, secret) = split_key(AUTH_KEY_PREFIX, text).ok_or_else(invalid)?;
    let key = snap.preauth_keys.values().find(|k| k.prefix == prefix).ok_or_else(invalid)?;
    if !secret_matches(secret, &key.hash) {
        return Err(invalid());
    }
    if has_passed(key.expiration, now) {
        return Err(RegisterError::Refused("auth key expired".into()));
    }
    if key.used && !key.reusable {
        return Err(RegisterError::Refused("auth key already used".into()));
    }
    Ok(key.clone())
}

impl State {
    fn default_expiry(&self, tags: &[String], now: i64) -> super::expiry::Planned {
        // Tagged nodes never expire.
        let span = if tags.is_empty() { self.settings.node_expiry } else { clock::Span(0) };
        super::expiry::Planned::of(span, now)
    }

    fn is_expired(n: &Node, now: i64) -> bool {
        n.expiry.is_some_and(|e| has_passed(e, now))
    }

    /// Decides a register request (all but the followup wait, which the
    /// caller does with [`State::login_waiter`]).
    ///
    /// Answers that write nothing are read off the snapshot; every write
    /// re-checks its rules (who owns the node key, whether the pre-auth key
    /// is valid and unspent) inside its transaction, so racing requests
    /// cannot both pass a check that only one of them may pass.
    pub fn register(
        &self,
        machine: MachinePublic,
        req: &RegisterRequest,
        now: i64,
    ) -> Result<Registered, RegisterError> {
        if req.node_key.is_zero() {
            return Err(RegisterError::BadRequest("no NodeKey".into()));
        }
        let nk = req.node_key;
        let by_key = owned_by(&self.snapshot(), machine, nk)?;

        if requested_logout(req, now) {
            let removed = self.mutate(|tx| {
                let Some(n) = owned_by(tx.snap(), machine, nk)? else { return Ok::<_, RegisterError>(None) };
                if n.ephemeral {
                    tx.remove_node(n.id);
                    return Ok(Some(n.id));
                }
                let expiry = Some(super::expiry::expired_now(now));
                tx.put_node(Arc::new(Node { expiry, expiry_deferred: None, ..(*n).clone() }));
                Ok(None)
            })?;
            if let Some(id) = removed {
                self.forget_presence(id);
            }
            return Ok(Registered::Expired);
        }

        if let Some(text) = req.auth.as_ref().map(|a| a.auth_key.as_str()).filter(|k| !k.is_empty()) {
            // tsnet re-sends its key with the same node key at every start:
            // the machine that registered with it stays in.
            if let Some(n) = by_key.as_ref().filter(|n| !Self::is_expired(n, now)) {
                self.remember_hostinfo(n.id, req);
                return Ok(Registered::Authorized(n.clone()));
            }
            let hostname = hostname_of(req);
            let requested = super::policy::requested_tags(req.hostinfo.as_deref());
            super::policy::no_tags_with_a_key(&requested).map_err(|e| RegisterError::Refused(e.to_string()))?;
            let node = self.mutate(|tx| {
                owned_by(tx.snap(), machine, nk)?;
                let key = check_auth_key(tx.snap(), text, now)?;
                let spec = NodeSpec {
                    machine_key: Some(machine),
                    node_key: nk,
                    // A tagged key's nodes are owned by their tags, as in Headscale.
                    user_id: if key.tags.is_empty() { key.user_id.unwrap_or(TAGGED_DEVICES) } else { TAGGED_DEVICES },
                    hostname,
                    register_method: "authkey",
                    auth_key_id: Some(key.id),
                    tags: key.tags.clone(),
                    ephemeral: key.ephemeral || req.ephemeral,
                    expiry: self.default_expiry(&key.tags, now),
                };
                let node = self.upsert_machine(tx, spec, now)?;
                if !key.used {
                    tx.put_key(Arc::new(PreAuthKey { used: true, ..(*key).clone() }));
                }
                Ok::<_, RegisterError>(node)
            })?;
            self.remember_hostinfo(node.id, req);
            return Ok(Registered::Authorized(node));
        }

        if let Some(n) = by_key {
            if Self::is_expired(&n, now) {
                return Ok(Registered::Expired);
            }
            self.remember_hostinfo(n.id, req);
            return Ok(Registered::Authorized(n));
        }

        Ok(Registered::NeedsLogin)
    }

    fn remember_hostinfo(&self, id: u64, req: &RegisterRequest) {
        if let Some(h) = &req.hostinfo {
            self.report_blocking(id, Some(h.clone()), req.version);
        }
    }

    /// The node of `spec.machine_key` takes the new key, owner and expiry;
    /// a machine seen for the first time becomes a new node.
    fn upsert_machine(&self, tx: &mut Tx, spec: NodeSpec, now: i64) -> Result<Arc<Node>, StateError> {
        // A new node or a new owner: autoApprovers may approve what it announces.
        tx.review_routes();
        match spec.machine_key.and_then(|m| tx.snap().node_by_machine(&m).cloned()) {
            Some(old) => {
                if spec.expiry.deferred().is_some() {
                    self.expiry.note_deferred();
                }
                let node = Arc::new(Node {
                    node_key: spec.node_key,
                    user_id: spec.user_id,
                    expiry: spec.expiry.at(),
                    expiry_deferred: spec.expiry.deferred(),
                    register_method: spec.register_method.into(),
                    auth_key_id: spec.auth_key_id.or(old.auth_key_id),
                    tags: spec.tags,
                    ephemeral: spec.ephemeral,
                    ..(*old).clone()
                });
                tx.put_node(node.clone());
                Ok(node)
            }
            None => self.new_node(tx, spec, now),
        }
    }

    /// Approves the pending login `auth_id` for `user_id`: the device joins
    /// (or, when it is known, takes its new key) and its waiting client is answered.
    /// `expiry`: the node's key expiry when the login dictates one
    /// (`oidc.use_expiry_from_token`); otherwise `node.expiry` applies.
    /// `mono`: the monotonic time, which the login's lifetime is measured on.
    pub fn approve_login(
        &self,
        auth_id: &str,
        user_id: u64,
        method: &'static str,
        expiry: Option<i64>,
        now: i64,
        mono: Instant,
    ) -> Result<Arc<Node>, StateError> {
        let reg = self.take_pending(auth_id, mono).ok_or_else(|| {
            StateError::NotFound(format!("no registration is waiting with id {auth_id:?} (they last 15 minutes)"))
        })?;
        let result = self.mutate(|tx| {
            if !tx.snap().users.contains_key(&user_id) {
                return Err(StateError::NotFound(format!("no user with id {user_id}")));
            }
            if let Some(other) = tx.snap().node_by_key(&reg.node_key) {
                if other.machine_key != Some(reg.machine) {
                    return Err(StateError::Exists("that node key belongs to another machine".into()));
                }
            }
            let tags = super::policy::login_tags(tx.snap(), user_id, reg.machine, reg.request_tags.clone())?;
            let spec = NodeSpec {
                machine_key: Some(reg.machine),
                node_key: reg.node_key,
                // A node that asked for tags (and may have them) is owned by them.
                user_id: if tags.is_empty() { user_id } else { TAGGED_DEVICES },
                hostname: reg.hostname.clone(),
                register_method: method,
                auth_key_id: None,
                expiry: match expiry {
                    Some(at) if tags.is_empty() => super::expiry::Planned::At(at),
                    _ => self.default_expiry(&tags, now),
                },
                tags,
                ephemeral: reg.ephemeral,
            };
            self.upsert_machine(tx, spec, now)
        });
        match &result {
            Ok(node) => {
                if reg.hostinfo.is_some() {
                    self.report_blocking(node.id, reg.hostinfo.clone(), 0);
                }
                let _ = reg.done.send(Some(Approval::Approved(node.id)));
            }
            Err(e) => {
                let _ = reg.done.send(Some(Approval::Rejected(e.to_string())));
            }
        }
        result
    }
}

/// The device's hostname, cut to `pending::MAX_HOSTNAME` bytes.
pub(super) fn hostname_of(req: &RegisterRequest) -> String {
    req.hostinfo
        .as_ref()
        .map(|h| super::pending::bounded_hostname(HostinfoView::of(h).hostname))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Allocation, Prefixes};
    use crate::state::{NewPreAuthKey, NewUser, Settings};
    use crate::store::Store;
    use crate::tailcfg::NodePublic;

    fn state(dir: &std::path::Path) -> State {
        let p = Prefixes { v4: Some("100.64.0.0/24".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
        let mut s = Settings::new(p);
        s.node_expiry = crate::clock::Span(3600);
        State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), s).unwrap()
    }

    fn req(node: u8, extra: serde_json::Value) -> RegisterRequest {
        let mut v = serde_json::json!({"Version": 130, "NodeKey": NodePublic([node; 32]).to_string(), "Hostinfo": {"Hostname": "h"}});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn now() -> i64 {
        clock::build_epoch() + 1000
    }

    #[test]
    fn pre_auth_key_rules() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let u = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
        let mk = |reusable, ephemeral, expiration, tags: Vec<String>| {
            s.create_preauth_key(NewPreAuthKey { user: Some(u.id), reusable, ephemeral, tags, expiration }, 1)
                .unwrap()
                .1
        };
        let once = mk(false, false, now() + 100, vec![]);
        let m1 = MachinePublic([1; 32]);
        let Registered::Authorized(n) =
            s.register(m1, &req(1, serde_json::json!({"Auth": {"AuthKey": once}})), now()).unwrap()
        else {
            panic!()
        };
        assert_eq!(n.expiry, Some(now() + 3600), "node.expiry applies");
        // The same machine and node key again (tsnet): fine; another machine: spent.
        assert!(matches!(
            s.register(m1, &req(1, serde_json::json!({"Auth": {"AuthKey": once}})), now()),
            Ok(Registered::Authorized(_))
        ));
        let m2 = MachinePublic([2; 32]);
        let r = s.register(m2, &req(2, serde_json::json!({"Auth": {"AuthKey": once}})), now());
        assert!(matches!(r, Err(RegisterError::Refused(ref m)) if m == "auth key already used"), "{r:?}");
        // Expired key; a clock in 1970 expires nothing.
        let old = mk(true, false, now() - 10, vec![]);
        let r = s.register(m2, &req(2, serde_json::json!({"Auth": {"AuthKey": old.clone()}})), now());
        assert!(matches!(r, Err(RegisterError::Refused(ref m)) if m == "auth key expired"));
        assert!(matches!(
            s.register(m2, &req(2, serde_json::json!({"Auth": {"AuthKey": old}})), 5),
            Ok(Registered::Authorized(_))
        ));
        // A node key owned by another machine.
        assert!(matches!(s.register(m2, &req(1, serde_json::json!({})), now()), Err(RegisterError::Unauthorized(_))));
        // Tags-only keys: owned by tagged-devices, never expire.
        let tag_key = s
            .create_preauth_key(
                NewPreAuthKey {
                    user: None,
                    reusable: false,
                    ephemeral: true,
                    tags: vec!["tag:srv".into()],
                    expiration: now() + 99,
                },
                1,
            )
            .unwrap()
            .1;
        let Registered::Authorized(t) = s
            .register(MachinePublic([3; 32]), &req(3, serde_json::json!({"Auth": {"AuthKey": tag_key}})), now())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!((t.user_id, t.expiry, t.ephemeral), (TAGGED_DEVICES, None, true));
        assert_eq!(t.tags, ["tag:srv"]);
    }

    /// Item 3 of issue 10: the key was checked against a snapshot taken
    /// before the write, so machines racing one single-use key all got in.
    #[test]
    fn a_single_use_key_admits_exactly_one_of_many_racing_machines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(state(dir.path()));
        let u = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
        let (_, once) = s
            .create_preauth_key(
                NewPreAuthKey {
                    user: Some(u.id),
                    reusable: false,
                    ephemeral: false,
                    tags: vec![],
                    expiration: now() + 100,
                },
                1,
            )
            .unwrap();
        let start = Arc::new(std::sync::Barrier::new(12));
        let racers: Vec<_> = (1..=12u8)
            .map(|i| {
                let (s, once, start) = (s.clone(), once.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    s.register(MachinePublic([i; 32]), &req(i, serde_json::json!({"Auth": {"AuthKey": once}})), now())
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| matches!(r, Ok(Registered::Authorized(_)))).count();
        let spent = results
            .iter()
            .filter(|r| matches!(r, Err(RegisterError::Refused(m)) if m == "auth key already used"))
            .count();
        assert_eq!((admitted, spent), (1, 11), "{results:?}");
        assert_eq!(s.snapshot().nodes.len(), 1);
    }

    #[test]
    fn logout_and_interactive_logins() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let u = s.create_user(NewUser { name: "bob".into(), ..Default::default() }, 1).unwrap();
        let m = MachinePublic([9; 32]);
        let first = req(9, serde_json::json!({}));
        assert!(matches!(s.register(m, &first, now()).unwrap(), Registered::NeedsLogin));
        let t = Instant::now();
        let id = s.start_login(m, &first, [192, 0, 2, 1].into(), t).unwrap();
        assert!(valid_auth_id(&id));
        assert_eq!(auth_id_of(&format!("http://x/register/{id}")), Some(id.as_str()));
        // Only the machine that asked may wait on it.
        assert!(s.login_waiter(&id, MachinePublic([8; 32]), t).is_none());
        let rx = s.login_waiter(&id, m, t).unwrap().outcome;
        let n = s.approve_login(&id, u.id, "cli", None, now(), t).unwrap();
        assert_eq!(*rx.borrow(), Some(Approval::Approved(n.id)));
        assert!(s.approve_login(&id, u.id, "cli", None, now(), t).is_err(), "single use");
        // Logout with the 1970 timestamp, even on a clock still in 1970.
        let r = s.register(m, &req(9, serde_json::json!({"Expiry": "1970-01-01T00:02:03Z"})), 200).unwrap();
        assert!(matches!(r, Registered::Expired));
        assert!(matches!(s.register(m, &req(9, serde_json::json!({})), now()).unwrap(), Registered::Expired));
        // Zero expiry is not a logout.
        let m2 = MachinePublic([7; 32]);
        let r = s.register(m2, &req(7, serde_json::json!({"Expiry": "0001-01-01T00:00:00Z"})), now()).unwrap();
        assert!(matches!(r, Registered::NeedsLogin));
    }
}
