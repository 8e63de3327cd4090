//! What is true of a node only while it is connected: endpoints, disco key,
//! home DERP region, Hostinfo, online. Kept in RAM only: endpoint churn must
//! never write flash. After a restart clients report it all again within seconds.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::tailcfg::{DiscoPublic, HostinfoView};

/// A Hostinfo larger than this is not kept (real ones are 1–3 KiB).
pub const MAX_HOSTINFO: usize = 16 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Presence {
    pub disco_key: DiscoPublic,
    pub endpoints: Vec<String>,
    pub home_derp: i64,
    pub hostinfo: Option<Arc<RawValue>>,
    /// The client's capability version.
    pub cap: u32,
    /// Open map streams.
    pub streams: u32,
    /// When the last stream closed (Unix seconds).
    pub last_seen: Option<i64>,
    /// Since when (monotonic seconds) the node has had no stream: set when
    /// its last stream closes, or when the ephemeral reaper first finds it
    /// without one (after a restart, or a registration never followed by a
    /// stream).
    pub idle_since: Option<u64>,
}

impl Presence {
    pub fn online(&self) -> bool {
        self.streams > 0
    }
}

/// What a map request changed, so peers hear of exactly that.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Update {
    /// Endpoints, disco key or home region: a patch suffices.
    pub endpoints: bool,
    /// The Hostinfo: peers need the whole node.
    pub hostinfo: bool,
}

/// Applies one map request's reports to `p`.
pub fn apply(
    p: &mut Presence,
    disco: DiscoPublic,
    endpoints: Option<Vec<String>>,
    hostinfo: Option<Box<RawValue>>,
    cap: u32,
) -> Update {
    let mut u = Update::default();
    if !disco.is_zero() && disco != p.disco_key {
        p.disco_key = disco;
        u.endpoints = true;
    }
    if let Some(eps) = endpoints {
        if eps != p.endpoints {
            p.endpoints = eps;
            u.endpoints = true;
        }
    }
    if cap != 0 {
        p.cap = cap;
    }
    if let Some(hi) = hostinfo.filter(|h| h.get().len() <= MAX_HOSTINFO) {
        let view = HostinfoView::of(&hi);
        let hi = match (&view.net_info, &p.hostinfo) {
            // A Hostinfo without NetInfo keeps the one we had (protocol.md §6.1).
            (None, Some(old)) => keep_net_info(&hi, old).unwrap_or(hi),
            _ => hi,
        };
        let home = view.net_info.map(|n| n.preferred_derp).filter(|d| *d != 0);
        if let Some(h) = home {
            if h != p.home_derp {
                p.home_derp = h;
                u.endpoints = true;
            }
        }
        if p.hostinfo.as_ref().map(|o| o.get()) != Some(hi.get()) {
            p.hostinfo = Some(Arc::from(hi));
            u.hostinfo = true;
        }
    }
    u
}

fn keep_net_info(new: &RawValue, old: &RawValue) -> Option<Box<RawValue>> {
    let old: serde_json::Value = serde_json::from_str(old.get()).ok()?;
    let ni = old.get("NetInfo")?.clone();
    let mut new: serde_json::Value = serde_json::from_str(new.get()).ok()?;
    new.as_object_mut()?.insert("NetInfo".into(), ni);
    serde_json::value::to_raw_value(&new).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.to_string()).unwrap())
    }

    #[test]
    fn updates_say_what_changed() {
        let mut p = Presence::default();
        let u = apply(&mut p, DiscoPublic([1; 32]), None, raw(r#"{"Hostname":"a"}"#), 130);
        assert_eq!(u, Update { endpoints: true, hostinfo: true });
        assert_eq!(p.cap, 130);
        let u = apply(&mut p, DiscoPublic([1; 32]), Some(vec!["1.2.3.4:5".into()]), None, 130);
        assert_eq!(u, Update { endpoints: true, hostinfo: false });
        let u = apply(&mut p, DiscoPublic([1; 32]), Some(vec!["1.2.3.4:5".into()]), raw(r#"{"Hostname":"a"}"#), 130);
        assert_eq!(u, Update::default());
        let u =
            apply(&mut p, DiscoPublic::default(), None, raw(r#"{"Hostname":"a","NetInfo":{"PreferredDERP":900}}"#), 0);
        assert_eq!(u, Update { endpoints: true, hostinfo: true });
        assert_eq!(p.home_derp, 900);
        // A later Hostinfo without NetInfo keeps the home region.
        let u = apply(&mut p, DiscoPublic::default(), None, raw(r#"{"Hostname":"b"}"#), 0);
        assert!(u.hostinfo && !u.endpoints);
        assert!(p.hostinfo.as_ref().unwrap().get().contains("PreferredDERP"));
        // An oversized Hostinfo is dropped.
        let big = format!(r#"{{"Hostname":"{}"}}"#, "x".repeat(MAX_HOSTINFO));
        assert_eq!(apply(&mut p, DiscoPublic::default(), None, raw(&big), 0), Update::default());
    }
}
