//! Setting up the embedded relay: its key, its certificate (self-signed and
//! pinned when `server_url` is plain http), the STUN listener, the region it
//! adds to the DERP map, and the task that ends the relay connections of
//! nodes that are gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::keyfile;
use super::tls_stream::TlsAcceptor;
use super::ServeError;
use crate::config::Config;
use crate::derp::cert;
use crate::derp::map::{self, Embedded};
use crate::derp::relay::Relay;
use crate::state::events::Change;
use crate::state::{has_passed, Snapshot, State};
use crate::tailcfg::NodePublic;

/// How often keys that ran out by the clock (no event says so) are looked for.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// The node keys that may keep a relay connection: nodes that exist and have
/// not expired, by id.
fn admitted_keys(snap: &Snapshot, now: i64) -> HashMap<u64, NodePublic> {
    snap.nodes.values().filter(|n| !n.expiry.is_some_and(|e| has_passed(e, now))).map(|n| (n.id, n.node_key)).collect()
}

/// The keys in `before` that `after` no longer admits: deleted, expired or replaced.
fn no_longer_admitted(before: &HashMap<u64, NodePublic>, after: &HashMap<u64, NodePublic>) -> Vec<NodePublic> {
    before.iter().filter(|(id, k)| after.get(*id) != Some(*k)).map(|(_, k)| *k).collect()
}

/// Ends the relay connections of nodes that were deleted, expired or took a
/// new key, as the state publishes it, and once a minute for keys that ran
/// out by the clock.
pub async fn close_gone(relay: Arc<Relay>, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    // Node id 0 is no node: this subscription is the relay's, not a map session's.
    let sub = state.subscribe(0);
    let mut known = admitted_keys(&state.snapshot(), crate::clock::now_unix());
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let look = tokio::select! {
            _ = sub.changed() => {
                let p = sub.take();
                p.resync
                    || p.changes.iter().any(|c| matches!(c, Change::NodeChanged(_) | Change::NodeRemoved(_) | Change::Everything))
            }
            _ = sweep.tick() => true,
            _ = shutdown.changed() => return,
        };
        if !look {
            continue;
        }
        let next = admitted_keys(&state.snapshot(), crate::clock::now_unix());
        for key in no_longer_admitted(&known, &next) {
            if relay.close_node(key) {
                log::info!("closed the relay connection of {}: its node was deleted, expired or re-keyed", key.short());
            }
        }
        known = next;
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The relay's certificate: read from `path`, or made (and saved, 0600) on
/// first start, so its pin stays the same across restarts.
pub fn load_or_make_cert(path: &Path, host: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    if let Ok(text) = std::fs::read(path) {
        let cert = CertificateDer::pem_slice_iter(&text)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| format!("{} holds no certificate", path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((cert.to_vec(), key.secret_der().to_vec()));
    }
    let c = cert::generate(host).map_err(|e| e.to_string())?;
    let text = pem("CERTIFICATE", &c.cert) + &pem("PRIVATE KEY", &c.key);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    log::info!("made a self-signed certificate for the relay at {} ({})", path.display(), cert::pin_of(&c.cert));
    Ok((c.cert, c.key))
}

/// Everything the relay needs to run.
pub struct DerpSetup {
    pub relay: Arc<Relay>,
    /// The relay's own TLS listener (plain-http `server_url` only).
    pub tls: Option<(tokio::net::TcpListener, TlsAcceptor)>,
    pub stun: Option<tokio::net::UdpSocket>,
    pub embedded: Option<crate::tailcfg::DerpRegion>,
}

fn cert_path(cfg: &Config) -> PathBuf {
    let dir = cfg.derp.server.private_key_path.parent().map(Path::to_path_buf).unwrap_or_default();
    dir.join("derp_tls.pem")
}

/// Binds the relay's listeners and describes its region.
pub async fn setup(cfg: &Config, state: &Arc<State>) -> Result<DerpSetup, ServeError> {
    let s = &cfg.derp.server;
    let key = keyfile::load_or_create(&s.private_key_path).map_err(ServeError::Key)?;
    let relay = Arc::new(Relay::new(*key.bytes(), s.verify_clients.then(|| state.clone()), s.max_clients));
    let host = cfg.server.host.clone();
    let stun = match s.stun_listen_addr {
        Some(a) => {
            Some(tokio::net::UdpSocket::bind(a).await.map_err(|e| ServeError::Bind(format!("STUN on {a}: {e}")))?)
        }
        None => None,
    };
    let stun_port = stun.as_ref().and_then(|u| u.local_addr().ok()).map_or(-1, |a| a.port() as i64);
    let (tls, derp_port, cert_name) = if cfg.server.https {
        // The main listener (or the proxy in front of it) already speaks TLS with a real certificate.
        (None, cfg.server.port, String::new())
    } else {
        let (c, k) = load_or_make_cert(&cert_path(cfg), &host).map_err(ServeError::Tls)?;
        let pin = cert::pin_of(&c);
        let acceptor = super::tls::acceptor_for(vec![CertificateDer::from(c)], PrivateKeyDer::Pkcs8(k.into()))
            .map_err(ServeError::Tls)?;
        let l = tokio::net::TcpListener::bind(s.tls_listen_addr)
            .await
            .map_err(|e| ServeError::Bind(format!("the relay's TLS listener on {}: {e}", s.tls_listen_addr)))?;
        let port = l.local_addr().map_err(ServeError::Runtime)?.port();
        (Some((l, acceptor)), port, pin)
    };
    let (ipv4, ipv6) = map::addresses(&host, s.ipv4.as_deref(), s.ipv6.as_deref());
    let embedded = s.automatically_add_embedded_derp_region.then(|| {
        map::region(&Embedded {
            region_id: s.region_id,
            region_code: s.region_code.clone(),
            region_name: s.region_name.clone(),
            host: host.clone(),
            ipv4,
            ipv6,
            derp_port,
            stun_port,
            cert_name,
        })
    });
    Ok(DerpSetup { relay, tls, stun, embedded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_deleted_expired_and_rekeyed_nodes_are_no_longer_admitted() {
        let k = |b| NodePublic([b; 32]);
        let before = HashMap::from([(1, k(1)), (2, k(2)), (3, k(3)), (4, k(4))]);
        let after = HashMap::from([(1, k(1)), (3, k(9)), (5, k(5))]);
        let mut gone = no_longer_admitted(&before, &after);
        gone.sort();
        assert_eq!(gone, [k(2), k(3), k(4)]);
    }

    #[test]
    fn the_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/derp_tls.pem");
        let (c1, k1) = load_or_make_cert(&p, "router.lan").unwrap();
        let (c2, k2) = load_or_make_cert(&p, "router.lan").unwrap();
        assert_eq!((c1, k1), (c2, k2));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&p, "garbage").unwrap();
        assert!(load_or_make_cert(&p, "x").is_err());
    }
}
