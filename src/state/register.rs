//! `/machine/register`: who may join, as protocol.md §5.3 lays it out.
//!
//! Identity is the machine key (from Noise) plus the node key. Pre-auth keys
//! admit directly; otherwise the client is sent to a login URL and a pending
//! registration (`pending.rs`) waits until an admin or the identity provider
//! approves it.

use std::sync::Arc;
use std::time::Instant;

use super::secrets::{secret_matches, split_key, AUTH_KEY_PREFIX};
use super::{has_passed, State, StateError, Tx};
use crate::clock;
use crate::store::{Node, PreAuthKey};
use crate::tailcfg::{HostinfoView, MachinePublic, RegisterRequest};
/// The owner of nodes that joined with a tags-only key (Tailscale's "tagged-devices").
pub const TAGGED_DEVICES: u64 = 2_147_455_555;

/// What a new node is made from.
pub struct NodeSpec {
    pub machine_key: String,
    pub node_key: String,
    pub user_id: u64,
    pub hostname: String,
    pub register_method: &'static str,
    pub auth_key_id: Option<u64>,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub expiry: Option<i64>,
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
    fn default_expiry(&self, tags: &[String], now: i64) -> Option<i64> {
        // Tagged nodes never expire; nor does anything while the clock reads 1970.
        let span = self.settings.node_expiry;
        (!span.is_zero() && tags.is_empty() && clock::clock_is_sane(now)).then(|| now + span.secs() as i64)
    }

    fn is_expired(n: &Node, now: i64) -> bool {
        n.expiry.is_some_and(|e| has_passed(e, now))
    }

    /// Decides a register request (all but the followup wait, which the
    /// caller does with [`State::login_waiter`]).
    pub fn register(
        &self,
        machine: MachinePublic,
        req: &RegisterRequest,
        now: i64,
    ) -> Result<Registered, RegisterError> {
        if req.node_key.is_zero() {
            return Err(RegisterError::BadRequest("no NodeKey".into()));
        }
        let (mk, nk) = (machine.to_string(), req.node_key.to_string());
        let snap = self.snapshot();
        let by_key = snap.node_by_key(&nk).cloned();
        if let Some(n) = &by_key {
            if n.machine_key != mk {
                return Err(RegisterError::Unauthorized("node key belongs to another machine".into()));
            }
        }

        if requested_logout(req, now) {
            if let Some(n) = by_key {
                if n.ephemeral {
                    self.delete_node(n.id)?;
                } else {
                    self.expire_node(n.id, now)?;
                }
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
            let key = check_auth_key(&snap, text, now)?;
            let hostname = hostname_of(req);
            let node = self.mutate(|tx| {
                let spec = NodeSpec {
                    machine_key: mk.clone(),
                    node_key: nk.clone(),
                    user_id: key.user_id.unwrap_or(TAGGED_DEVICES),
                    hostname,
                    register_method: "authkey",
                    auth_key_id: Some(key.id),
                    tags: key.tags.clone(),
                    ephemeral: key.ephemeral || req.ephemeral,
                    expiry: self.default_expiry(&key.tags, now),
                };
                let node = self.upsert_machine(tx, spec, now)?;
                let used = Arc::new(PreAuthKey { used: true, ..(*key).clone() });
                tx.put_key(used);
                Ok(node)
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
            self.report(id, Default::default(), None, Some(h.clone()), req.version);
        }
    }

    /// The node of `spec.machine_key` takes the new key, owner and expiry;
    /// a machine seen for the first time becomes a new node.
    fn upsert_machine(&self, tx: &mut Tx, spec: NodeSpec, now: i64) -> Result<Arc<Node>, StateError> {
        match tx.snap.node_by_machine(&spec.machine_key).cloned() {
            Some(old) => {
                let node = Arc::new(Node {
                    node_key: spec.node_key,
                    user_id: spec.user_id,
                    expiry: spec.expiry,
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
        let (mk, nk) = (reg.machine.to_string(), reg.node_key.to_string());
        let result = self.mutate(|tx| {
            if !tx.snap.users.contains_key(&user_id) {
                return Err(StateError::NotFound(format!("no user with id {user_id}")));
            }
            if let Some(other) = tx.snap.node_by_key(&nk) {
                if other.machine_key != mk {
                    return Err(StateError::Exists("that node key belongs to another machine".into()));
                }
            }
            let spec = NodeSpec {
                machine_key: mk.clone(),
                node_key: nk.clone(),
                user_id,
                hostname: reg.hostname.clone(),
                register_method: method,
                auth_key_id: None,
                tags: Vec::new(),
                ephemeral: reg.ephemeral,
                expiry: expiry.or_else(|| self.default_expiry(&[], now)),
            };
            self.upsert_machine(tx, spec, now)
        });
        match &result {
            Ok(node) => {
                if reg.hostinfo.is_some() {
                    self.report(node.id, Default::default(), None, reg.hostinfo.clone(), 0);
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

pub(super) fn hostname_of(req: &RegisterRequest) -> String {
    req.hostinfo
        .as_ref()
        .map(|h| HostinfoView::of(h).hostname)
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
        let rx = s.login_waiter(&id, m, t).unwrap();
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
