//! Registrations waiting for a login (in RAM, never on flash): who may hold
//! how many, and how a waiting client learns the outcome.
//!
//! Anyone can open one without a key, so they are capped in total, per
//! machine key and per source address, and one source can never push out
//! another's (`quota::Capped`): 130 keyless registrations from one address
//! leave a real device from elsewhere waiting for `auth register`. Each
//! keeps little: its hostname cut to [`MAX_HOSTNAME`] bytes, its Hostinfo
//! only up to `MAX_HOSTINFO` (the device sends it again with its map
//! request), and one waiting request at a time. The monotonic time comes in
//! from the caller.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};

use super::presence::MAX_HOSTINFO;
use super::register::{hostname_of, Approval};
use super::{State, StateError};
use crate::quota::{Capped, Full, Limits, Source};
use crate::tailcfg::{MachinePublic, NodePublic, RegisterRequest};

/// Registrations waiting for a login at once, all sources together.
pub const PENDING_CAP: usize = 128;
/// Per source address (a household behind one NAT logs in a few devices at once).
pub const PENDING_PER_IP: usize = 8;
/// Per machine key (a device that asks again replaces its older login).
pub const PENDING_PER_MACHINE: usize = 2;
/// How long a login URL stays valid.
pub const PENDING_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest hostname kept (a whole DNS name): what is shown in `auth
/// pending` and becomes the node's name.
pub const MAX_HOSTNAME: usize = 255;

const LIMITS: Limits =
    Limits { total: PENDING_CAP, per_ip: PENDING_PER_IP, per_key: PENDING_PER_MACHINE, ttl: PENDING_TTL };

pub(super) struct PendingReg {
    pub machine: MachinePublic,
    pub node_key: NodePublic,
    pub hostname: String,
    pub hostinfo: Option<Box<RawValue>>,
    /// Read from the whole Hostinfo, which is not kept when it is large:
    /// tags asked for are never dropped unseen.
    pub request_tags: Vec<String>,
    pub ephemeral: bool,
    /// Answers the waiting client; dropped unanswered, it tells the client
    /// its login is gone.
    pub done: watch::Sender<Option<Approval>>,
    /// Tells the one request waiting on it that a newer one took its place.
    pub waiter: Option<oneshot::Sender<()>>,
}

/// A request waiting on a login: its outcome, and word that a newer request
/// took its place (it then answers and the client asks again).
pub struct LoginWait {
    pub outcome: watch::Receiver<Option<Approval>>,
    pub replaced: oneshot::Receiver<()>,
}

/// `hostname` cut to [`MAX_HOSTNAME`] bytes, at a character boundary.
pub(super) fn bounded_hostname(mut hostname: String) -> String {
    let cut = crate::text::head_bytes(&hostname, MAX_HOSTNAME).len();
    hostname.truncate(cut);
    hostname
}

pub struct PendingRegs(Capped<PendingReg>);

impl Default for PendingRegs {
    fn default() -> Self {
        PendingRegs(Capped::new(LIMITS))
    }
}

/// A summary of a waiting registration, for the CLI and the login pages.
#[derive(Debug, Clone)]
pub struct PendingInfo {
    pub id: String,
    pub hostname: String,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    pub age_secs: u64,
}

fn info(id: &str, age: Duration, r: &PendingReg) -> PendingInfo {
    PendingInfo {
        id: id.to_string(),
        hostname: r.hostname.clone(),
        machine_key: r.machine,
        node_key: r.node_key,
        age_secs: age.as_secs(),
    }
}

/// Why no login could be opened.
#[derive(Debug)]
pub enum LoginRefused {
    /// Too many logins are waiting from other sources (HTTP 503: retry later).
    Busy,
    State(StateError),
}

impl std::fmt::Display for LoginRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginRefused::Busy => f.write_str("too many logins are waiting; try again in a few minutes"),
            LoginRefused::State(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoginRefused {}

impl State {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingRegs> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a login for a registration that needs one, charged to
    /// `machine` and the address `from`; returns its auth id.
    pub fn start_login(
        &self,
        machine: MachinePublic,
        req: &RegisterRequest,
        from: IpAddr,
        mono: Instant,
    ) -> Result<String, LoginRefused> {
        let id = crate::secrets::random_text_from(24, self.settings.random)
            .map_err(|_| LoginRefused::State(StateError::Random))?;
        let (done, _) = watch::channel(None);
        let reg = PendingReg {
            machine,
            node_key: req.node_key,
            hostname: hostname_of(req),
            hostinfo: req.hostinfo.as_ref().filter(|h| h.get().len() <= MAX_HOSTINFO).cloned(),
            request_tags: super::policy::requested_tags(req.hostinfo.as_deref()),
            ephemeral: req.ephemeral,
            done,
            waiter: None,
        };
        let source = Source::new(from, machine.0);
        match self.pending().0.insert(id.clone(), source, reg, mono) {
            Ok(gone) => {
                if !gone.is_empty() {
                    log::debug!("{machine} from {from}: {} older login(s) of the same source replaced", gone.len());
                }
                Ok(id)
            }
            Err(Full) => {
                // Debug only: a flood must not flood the log as well.
                log::debug!("{machine} from {from}: login refused, {PENDING_CAP} are already waiting");
                Err(LoginRefused::Busy)
            }
        }
    }

    /// Waits on a pending login of `machine`: `None` when there is no such
    /// login (expired, replaced, or another machine's). A login has one
    /// waiter: an older one is told it was replaced.
    pub fn login_waiter(&self, auth_id: &str, machine: MachinePublic, mono: Instant) -> Option<LoginWait> {
        let mut pending = self.pending();
        let reg = pending.0.get_mut(auth_id, mono).filter(|r| r.machine == machine)?;
        let (tx, replaced) = oneshot::channel();
        if let Some(older) = reg.waiter.replace(tx) {
            let _ = older.send(());
        }
        Some(LoginWait { outcome: reg.done.subscribe(), replaced })
    }

    /// Every waiting login, oldest first.
    pub fn pending_logins(&self, mono: Instant) -> Vec<PendingInfo> {
        self.pending().0.iter(mono).map(|(id, age, r)| info(id, age, r)).collect()
    }

    /// The waiting login `auth_id`, if there is one.
    pub fn pending_login(&self, auth_id: &str, mono: Instant) -> Option<PendingInfo> {
        self.pending().0.iter(mono).find(|(id, _, _)| *id == auth_id).map(|(id, age, r)| info(id, age, r))
    }

    /// Refuses the waiting login `auth_id`: its device is told so and may
    /// ask again.
    pub fn reject_login(&self, auth_id: &str, mono: Instant) -> Result<(), StateError> {
        let reg = self.take_pending(auth_id, mono).ok_or_else(|| {
            StateError::NotFound(format!("no registration is waiting with id {auth_id:?} (they last 15 minutes)"))
        })?;
        let _ = reg.done.send(Some(super::register::Approval::Rejected("the login was refused by the admin".into())));
        Ok(())
    }

    /// Takes the waiting login `auth_id` out, to approve it.
    pub(super) fn take_pending(&self, auth_id: &str, mono: Instant) -> Option<PendingReg> {
        self.pending().0.take(auth_id, mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Allocation, Prefixes};
    use crate::state::{NewUser, Settings};
    use crate::store::Store;

    fn state(dir: &std::path::Path) -> State {
        let p = Prefixes { v4: Some("100.64.0.0/24".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
        State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(p)).unwrap()
    }

    fn req(node: [u8; 32]) -> RegisterRequest {
        serde_json::from_value(serde_json::json!({
            "Version": 130, "NodeKey": NodePublic(node).to_string(), "Hostinfo": {"Hostname": "h"}
        }))
        .unwrap()
    }

    fn key(i: usize) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        k
    }

    #[test]
    fn a_flood_from_one_address_leaves_a_real_device_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let t = Instant::now();
        let alice = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
        let real = MachinePublic([0xee; 32]);
        let id = s.start_login(real, &req([0xee; 32]), [198, 51, 100, 7].into(), t).unwrap();
        let rx = s.login_waiter(&id, real, t).unwrap().outcome;
        // 130+ keyless registrations, each with a new machine key, from one address.
        let attacker: IpAddr = [203, 0, 113, 66].into();
        for i in 0..(PENDING_CAP + 10) {
            s.start_login(MachinePublic(key(i)), &req(key(i)), attacker, t).unwrap();
        }
        assert_eq!(s.pending_logins(t).len(), 1 + PENDING_PER_IP, "the flood replaced only its own");
        // The real device can still be approved, and its client hears so.
        let n = s.approve_login(&id, alice.id, "cli", None, crate::clock::build_epoch() + 10, t).unwrap();
        assert_eq!(*rx.borrow(), Some(Approval::Approved(n.id)));
    }

    #[test]
    fn a_full_table_refuses_new_sources_without_evicting() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let t = Instant::now();
        let mut first = None;
        // Many addresses, each at its cap: the table fills up.
        for i in 0..PENDING_CAP {
            let ip: IpAddr = [10, 0, (i / PENDING_PER_IP) as u8, 1].into();
            let id = s.start_login(MachinePublic(key(i)), &req(key(i)), ip, t).unwrap();
            first.get_or_insert(id);
        }
        let first = first.unwrap();
        let r = s.start_login(MachinePublic(key(999)), &req(key(999)), [192, 0, 2, 1].into(), t);
        assert!(matches!(r, Err(LoginRefused::Busy)), "{r:?}");
        assert!(s.pending_login(&first, t).is_some(), "nobody else's login was evicted");
        // One machine asking again replaces its own older login only.
        let m = MachinePublic(key(5000));
        let ip: IpAddr = [192, 0, 2, 2].into();
        let a = s.start_login(m, &req(key(5000)), ip, t + PENDING_TTL);
        assert!(a.is_ok(), "expired logins make room");
        let b = s.start_login(m, &req(key(5000)), ip, t + PENDING_TTL).unwrap();
        let c = s.start_login(m, &req(key(5000)), ip, t + PENDING_TTL).unwrap();
        let ids: Vec<String> = s.pending_logins(t + PENDING_TTL).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, [b, c], "{PENDING_PER_MACHINE} per machine");
        assert!(s.login_waiter(&a.unwrap(), m, t + PENDING_TTL).is_none());
    }

    #[test]
    fn a_login_keeps_a_bounded_hostname_and_hostinfo() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let t = Instant::now();
        let huge: RegisterRequest = serde_json::from_value(serde_json::json!({
            "Version": 130, "NodeKey": NodePublic(key(1)).to_string(),
            "Hostinfo": {"Hostname": "é".repeat(30_000), "OS": "linux"}
        }))
        .unwrap();
        let id = s.start_login(MachinePublic(key(1)), &huge, [192, 0, 2, 1].into(), t).unwrap();
        let kept = s.take_pending(&id, t).unwrap();
        assert_eq!(kept.hostname, "é".repeat(MAX_HOSTNAME / 2), "cut at a character boundary");
        assert!(kept.hostinfo.is_none(), "a Hostinfo past {MAX_HOSTINFO} bytes is not kept");
        let small = req(key(2));
        let id = s.start_login(MachinePublic(key(2)), &small, [192, 0, 2, 1].into(), t).unwrap();
        assert_eq!(
            s.take_pending(&id, t).unwrap().hostinfo.map(|h| h.get().to_string()),
            Some(r#"{"Hostname":"h"}"#.into())
        );
    }

    #[tokio::test]
    async fn a_login_has_one_waiter_and_a_newer_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let t = Instant::now();
        let m = MachinePublic(key(1));
        let id = s.start_login(m, &req(key(1)), [192, 0, 2, 1].into(), t).unwrap();
        let mut first = s.login_waiter(&id, m, t).unwrap();
        assert!(first.replaced.try_recv().is_err(), "still the waiter");
        let mut second = s.login_waiter(&id, m, t).unwrap();
        assert!(first.replaced.await.is_ok(), "the older waiter is told it was replaced");
        assert!(second.replaced.try_recv().is_err());
        // The newer one hears the outcome.
        let alice = s.create_user(crate::state::NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
        let n = s.approve_login(&id, alice.id, "cli", None, crate::clock::build_epoch() + 10, t).unwrap();
        assert_eq!(*second.outcome.borrow(), Some(Approval::Approved(n.id)));
    }
}
