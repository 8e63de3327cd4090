//! Subnet routes and exit nodes: what a node announces (its Hostinfo's
//! `RoutableIPs`, checked here and kept on flash only when it changes),
//! what is approved for it (by the admin, or by the policy's
//! `autoApprovers`), and which router is primary for each subnet (in RAM:
//! it follows who is online).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{not_found, Node, State, StateError};
use crate::config::Prefixes;
use crate::tailcfg::Prefix;

/// Routes one node may announce; more are cut (sorted first, so the same
/// announcement always keeps the same ones). Real routers announce a few.
pub const MAX_ROUTES: usize = 256;

/// An exit route: `0.0.0.0/0` or `::/0`.
pub fn is_exit(p: &Prefix) -> bool {
    p.prefix_len() == 0
}

/// The two exit routes, which are approved together (a client treats a
/// node as an exit node only with both, as Headscale does).
pub fn exit_pair() -> [Prefix; 2] {
    // Invariant: constant, valid prefixes.
    ["0.0.0.0/0".parse().expect("valid prefix"), "::/0".parse().expect("valid prefix")]
}

/// What a Hostinfo's `RoutableIPs` announce, as the server keeps it: parsed,
/// with host bits zero (`192.168.1.7/24` is a mistake, not a route: the
/// Tailscale CLI refuses it too), deduplicated, sorted, at most
/// [`MAX_ROUTES`]. Routes inside or around the tailnet's own ranges are
/// dropped: peers would send tailnet traffic to the router (Tailscale keeps
/// its CGNAT and ULA ranges out of subnet routes too). Exit routes stay,
/// though they cover everything. Entries dropped are returned as text, to log.
pub fn announced(texts: &[String], tailnet: &Prefixes) -> (Vec<Prefix>, Vec<String>) {
    let mut kept = BTreeSet::new();
    let mut dropped = Vec::new();
    for t in texts {
        let ok = t.parse::<Prefix>().ok().filter(|p| {
            *p == p.masked() && (is_exit(p) || ![tailnet.v4, tailnet.v6].iter().flatten().any(|own| own.overlaps(p)))
        });
        match ok {
            Some(p) => {
                kept.insert(p);
            }
            None => dropped.push(crate::text::clip(t, 64).to_string()),
        }
    }
    if kept.len() > MAX_ROUTES {
        dropped.push(format!("{} route(s) beyond the {MAX_ROUTES} a node may announce", kept.len() - MAX_ROUTES));
    }
    (kept.into_iter().take(MAX_ROUTES).collect(), dropped)
}

impl State {
    /// Stores what node `id` announces now (from [`announced`]); returns
    /// whether it changed. Peers hear of it: it may make routes serve.
    /// A write, so callers on the async runtime use `spawn_blocking`.
    pub fn set_announced_routes(&self, id: u64, routes: Vec<Prefix>) -> Result<bool, StateError> {
        self.mutate(|tx| {
            let old = tx.snap().nodes.get(&id).cloned().ok_or_else(|| not_found("node", id))?;
            // Checked here, where the write happens: flash is written only
            // when the announcement really changed.
            if old.announced_routes == routes {
                return Ok(false);
            }
            tx.put_node(Arc::new(Node { announced_routes: routes, ..(*old).clone() }));
            Ok(true)
        })
    }

    /// The routes the node's Hostinfo announces, when they differ from
    /// what is stored (`None`: nothing to write).
    pub(super) fn routes_to_store(&self, id: u64, hostinfo: &serde_json::value::RawValue) -> Option<Vec<Prefix>> {
        let texts = crate::tailcfg::HostinfoView::of(hostinfo).routable_ips.unwrap_or_default();
        let (routes, dropped) = announced(&texts, &self.settings.prefixes);
        if !dropped.is_empty() {
            log::debug!("node {id}: announced routes not taken: {}", dropped.join(", "));
        }
        let snap = self.snapshot();
        let stored = snap.nodes.get(&id)?;
        (stored.announced_routes != routes).then_some(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Allocation;
    use crate::state::{NewUser, Settings};
    use crate::store::Store;
    use serde_json::value::RawValue;

    pub(crate) fn open(dir: &std::path::Path) -> State {
        State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(tailnet())).unwrap()
    }

    /// A user and `n` nodes made by `debug create-node`, ids 1..=n.
    pub(crate) fn with_nodes(s: &State, n: u8) {
        let u = s.create_user(NewUser { name: "alice".into(), ..Default::default() }, 1).unwrap();
        for i in 1..=n {
            s.create_node(u.id, &format!("n{i}"), &format!("nodekey:{}", format!("{i:02x}").repeat(32)), 1).unwrap();
        }
    }

    pub(crate) fn hostinfo(routes: &[&str]) -> Option<Box<RawValue>> {
        let v = serde_json::json!({"Hostname": "r", "RoutableIPs": routes});
        Some(RawValue::from_string(v.to_string()).unwrap())
    }

    fn routes_of(s: &State, id: u64) -> Vec<String> {
        s.snapshot().nodes[&id].announced_routes.iter().map(Prefix::to_string).collect()
    }

    #[test]
    fn a_hostinfo_announces_routes_stored_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            with_nodes(&s, 1);
            let events = s.subscribe(0);
            s.report_blocking(1, hostinfo(&["192.168.77.0/24", "0.0.0.0/0", "::/0"]), 130);
            assert_eq!(routes_of(&s, 1), ["0.0.0.0/0", "192.168.77.0/24", "::/0"]);
            assert!(events.take().changes.contains(&crate::state::events::Change::NodeChanged(1)));
            // The same announcement again (a client repeats its Hostinfo): no write.
            let u = s.report(1, Default::default(), None, hostinfo(&["::/0", "192.168.77.0/24", "0.0.0.0/0"]), 130);
            assert_eq!(u.routes, None);
            assert!(!s.set_announced_routes(1, s.snapshot().nodes[&1].announced_routes.clone()).unwrap());
            // A Hostinfo without routes withdraws them; none at all changes nothing.
            s.report_blocking(1, None, 130);
            assert_eq!(routes_of(&s, 1).len(), 3);
            s.report_blocking(1, hostinfo(&["192.168.77.0/24"]), 130);
            assert_eq!(routes_of(&s, 1), ["192.168.77.0/24"]);
        }
        // On flash.
        let s = open(dir.path());
        assert_eq!(routes_of(&s, 1), ["192.168.77.0/24"]);
        assert!(matches!(s.set_announced_routes(9, vec![]), Err(StateError::NotFound(_))));
    }

    fn tailnet() -> Prefixes {
        Prefixes {
            v4: Some("100.64.0.0/10".parse().unwrap()),
            v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
            allocation: Allocation::Sequential,
        }
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn announcements_are_checked_sorted_and_bounded() {
        let (kept, dropped) = announced(
            &texts(&[
                "192.168.1.0/24",
                "::/0",
                "10.0.0.0/8",
                "192.168.1.0/24",
                "0.0.0.0/0",
                "192.168.1.7/24",
                "banana",
                "100.64.0.0/10",
                "100.100.0.0/16",
                "100.0.0.0/8",
                "fd7a:115c:a1e0:ab::/64",
                "2001:db8::/32",
            ]),
            &tailnet(),
        );
        let kept: Vec<String> = kept.iter().map(Prefix::to_string).collect();
        assert_eq!(kept, ["0.0.0.0/0", "10.0.0.0/8", "192.168.1.0/24", "::/0", "2001:db8::/32"]);
        assert_eq!(
            dropped,
            ["192.168.1.7/24", "banana", "100.64.0.0/10", "100.100.0.0/16", "100.0.0.0/8", "fd7a:115c:a1e0:ab::/64"]
        );

        let many: Vec<String> = (0..300).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
        let (kept, dropped) = announced(&many, &tailnet());
        assert_eq!(kept.len(), MAX_ROUTES);
        assert_eq!(kept[0].to_string(), "10.0.0.0/24");
        assert!(dropped[0].contains("44 route(s) beyond"), "{dropped:?}");
    }
}
