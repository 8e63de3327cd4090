//! `tinyscale serve`: opens the store, loads the keys, and runs the listeners
//! until SIGTERM or SIGINT, then flushes the store and leaves.

mod admission;
mod api_http;
#[cfg(feature = "derp")]
mod derp;
#[cfg(feature = "fetch")]
mod derp_urls;
mod extra_records;
pub mod housekeeping;
mod http;
pub use http::SHORT_LIFETIME;
pub mod keyfile;
mod socket;
mod tls;
mod tls_stream;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, PolicyMode};
use crate::control::Control;
#[cfg(feature = "oidc")]
use crate::oidc::Oidc;
use crate::state::{MapContext, PolicySource, Settings, State, StateError};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub enum ServeError {
    /// The OIDC provider is unreachable and `only_start_if_oidc_is_available` is on.
    Oidc(String),
    /// The config asks for something this build leaves out (a cargo feature).
    Unsupported(String),
    Store(StoreError),
    State(StateError),
    Key(keyfile::KeyFileError),
    Tls(String),
    /// `dns.extra_records_path` is missing or does not check.
    ExtraRecords(String),
    Bind(String),
    Runtime(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Oidc(e) | ServeError::Unsupported(e) | ServeError::ExtraRecords(e) => f.write_str(e),
            ServeError::Store(e) => e.fmt(f),
            ServeError::State(e) => e.fmt(f),
            ServeError::Key(e) => e.fmt(f),
            ServeError::Tls(e) => write!(f, "TLS: {e}"),
            ServeError::Bind(e) => f.write_str(e),
            ServeError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// What every map carries, from the config and the extra records read at
/// start (the DERP map comes later).
fn map_context(cfg: &Config, extra_records: Vec<crate::tailcfg::DnsRecord>) -> MapContext {
    let base_domain = if cfg.dns.magic_dns { cfg.dns.base_domain.clone() } else { String::new() };
    let domain = if cfg.dns.base_domain.is_empty() { cfg.server.host.clone() } else { cfg.dns.base_domain.clone() };
    MapContext {
        base_domain,
        derp_map: Default::default(),
        dns: Arc::new(crate::dns::client_config(&cfg.dns, extra_records)),
        domain,
        taildrop: cfg.taildrop_enabled,
    }
}

pub fn run(cfg: Config) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let store = Store::open(&cfg.database.path, cfg.database.cache_capacity).map_err(ServeError::Store)?;
    let noise_key = keyfile::load_or_create(&cfg.noise_private_key_path).map_err(ServeError::Key)?;
    let records_file = match &cfg.dns.extra_records_path {
        Some(p) => Some((p.clone(), extra_records::load(p).map_err(ServeError::ExtraRecords)?)),
        None => None,
    };
    let records = records_file.as_ref().map_or_else(|| cfg.dns.extra_records.clone(), |(_, l)| l.records.clone());
    let settings = Settings {
        node_expiry: cfg.node_expiry,
        max_nodes: cfg.max_nodes,
        map: map_context(&cfg, records),
        policy: match (cfg.policy_mode, &cfg.policy_path) {
            (PolicyMode::Database, _) => PolicySource::Database,
            (PolicyMode::File, Some(path)) => PolicySource::File(path.clone()),
            (PolicyMode::File, None) => PolicySource::NoFile,
        },
        ..Settings::new(cfg.prefixes.clone())
    };
    let state = Arc::new(State::load(store, settings).map_err(ServeError::State)?);
    let tls = match &cfg.tls {
        Some(t) => Some(tls::acceptor(&t.cert_path, &t.key_path).map_err(ServeError::Tls)?),
        None => None,
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking work is store writes and (later) OIDC calls: a few threads suffice.
        .max_blocking_threads(4)
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
            .await
            .map_err(|e| ServeError::Bind(format!("cannot listen on {}: {e}", cfg.listen_addr)))?;
        let bound = listener.local_addr().map_err(ServeError::Runtime)?;
        let api_listener = socket::bind(&cfg.unix_socket, cfg.unix_socket_permission).map_err(ServeError::Bind)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        #[cfg(feature = "derp")]
        let relay = match cfg.derp.server.enabled {
            true => Some(derp::setup(&cfg, &state).await?),
            false => None,
        };
        #[cfg(not(feature = "derp"))]
        if cfg.derp.server.enabled {
            return Err(ServeError::Unsupported("derp.server.enabled: this tinyscale was built without the derp feature".into()));
        }
        #[cfg(feature = "derp")]
        if let Some(r) = &relay {
            if let Some(udp) = &r.stun {
                log::info!("STUN on udp {}", udp.local_addr().map_err(ServeError::Runtime)?);
            }
            if let Some((l, _)) = &r.tls {
                let a = l.local_addr().map_err(ServeError::Runtime)?;
                log::info!("DERP relay on https://{a} (self-signed, pinned in the DERP map)");
            }
        }
        #[cfg(feature = "derp")]
        let embedded = relay.as_ref().and_then(|r| r.embedded.clone());
        #[cfg(not(feature = "derp"))]
        let embedded = None;
        let derp_map = crate::derp::map::assemble(&[], &cfg.derp.from_paths, embedded.clone());
        if derp_map.regions.is_empty() && cfg.derp.urls.is_empty() {
            log::warn!(
                "the DERP map is empty: clients stay in \"Starting\" until it names a region (derp.server.enabled or derp.paths)"
            );
        }
        state.set_derp_map(derp_map);
        let mut control = Control::new(state.clone(), &noise_key, &cfg.server_url, stop_rx.clone());
        control.compress_maps = cfg.compress_maps;
        let control = Arc::new(control);
        log::info!("Noise public key {}", control.public_key());
        #[allow(unused_mut)]
        let mut extras = http::Extras::default();
        #[cfg(feature = "oidc")]
        if let Some(o) = &cfg.oidc {
            extras.oidc =
                Some(start_oidc(o.clone(), cfg.admin.clone(), state.clone(), &cfg.server_url, stop_rx.clone()).await?);
        }
        #[cfg(not(feature = "oidc"))]
        if cfg.oidc.is_some() {
            return Err(ServeError::Unsupported("oidc: this tinyscale was built without the oidc feature".into()));
        }
        // Only now is everything ready: tests and scripts wait for this line.
        let scheme = if tls.is_some() { "https" } else { "http" };
        log::info!("listening on {scheme}://{bound} (server_url {})", cfg.server_url);
        log::info!("admin socket at {}", cfg.unix_socket.display());
        if state.snapshot().users.is_empty() {
            log::info!("no users yet. Add one and a key, then join a device:");
            log::info!("  tinyscale users create alice");
            log::info!("  tinyscale preauthkeys create --user alice --reusable --expiration 24h");
            log::info!("  tailscale up --login-server {} --authkey <key>", cfg.server_url);
        }

        let ephemeral_timeout = Duration::from_secs(cfg.ephemeral_inactivity_timeout.secs());
        tokio::spawn(housekeeping::run(state.clone(), ephemeral_timeout, stop_rx.clone()));
        if let Some((path, loaded)) = records_file {
            tokio::spawn(extra_records::watch(state.clone(), path, loaded, stop_rx.clone()));
        }
        if !cfg.derp.urls.is_empty() {
            #[cfg(feature = "fetch")]
            tokio::spawn(derp_urls::refresh(cfg.clone(), embedded, state.clone(), stop_rx.clone()));
            #[cfg(not(feature = "fetch"))]
            log::warn!("derp.urls is ignored: this tinyscale was built without the fetch feature");
        }
        #[cfg(feature = "derp")]
        let mut relay_tls = None;
        #[cfg(feature = "derp")]
        if let Some(r) = relay {
            if let Some(udp) = r.stun {
                tokio::spawn(crate::stun::server::serve(udp, stop_rx.clone()));
            }
            relay_tls = r.tls;
            tokio::spawn(derp::close_gone(r.relay.clone(), state.clone(), stop_rx.clone()));
            extras.relay = Some(r.relay);
        }
        extras.admin = Some(admin_ui(&cfg, &state, &extras));
        // One cap for both listeners: the relay's TLS port is no way around it.
        let admission = admission::Admission::new(cfg.max_connections);
        let http = http::Http { control: control.clone(), extras: extras.clone(), tls, admission: admission.clone() };
        let http_task = tokio::spawn(http.run(listener, stop_rx.clone()));
        #[cfg(feature = "derp")]
        if let Some((l, acceptor)) = relay_tls {
            // The admin UI only where server_url points: its cookie's
            // Secure flag and the provider's redirect follow server_url.
            let extras = http::Extras { admin: None, ..extras };
            let h = http::Http { control, extras, tls: Some(acceptor), admission };
            tokio::spawn(h.run(l, stop_rx.clone()));
        }
        let api_task = tokio::spawn(socket::run(api_listener, cfg.unix_socket.clone(), state.clone(), stop_rx));

        tokio::spawn(reload_policy_on_hangup(state.clone()));
        wait_for_signal().await;
        log::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = http_task.await;
        let _ = api_task.await;
        Ok::<(), ServeError>(())
    })?;
    if let Err(e) = state.persist_last_seen(crate::clock::now_unix(), true) {
        log::warn!("could not record last-seen times: {e}");
    }
    state.flush().map_err(ServeError::State)?;
    log::info!("store flushed; bye");
    Ok(())
}

/// The admin web UI, signing in through the OIDC provider when there is one.
fn admin_ui(cfg: &Config, state: &Arc<State>, extras: &http::Extras) -> Arc<crate::web::admin::Admin> {
    #[allow(unused_mut)]
    let mut oidc_login: Option<Arc<dyn Fn(std::net::IpAddr) -> crate::web::admin::Page + Send + Sync>> = None;
    #[cfg(feature = "oidc")]
    if let Some(o) = extras.oidc.clone() {
        oidc_login = Some(Arc::new(move |_| o.start_admin()));
    }
    #[allow(unused_mut)]
    let mut derp_clients: Option<crate::web::admin::Counter> = None;
    #[cfg(feature = "derp")]
    if let Some(r) = extras.relay.clone() {
        derp_clients = Some(Arc::new(move || r.client_count()));
    }
    let ui = Arc::new(crate::web::admin::Admin {
        state: state.clone(),
        sessions: Arc::default(),
        failures: extras.api_failures.clone(),
        oidc_login,
        server_url: cfg.server_url.clone(),
        secure_cookies: cfg.server_url.starts_with("https://"),
        started: std::time::Instant::now(),
        store_path: cfg.database.path.clone(),
        derp_clients,
    });
    #[cfg(feature = "oidc")]
    if let Some(o) = &extras.oidc {
        o.set_admin_ui(&ui);
    }
    ui
}

/// How often an unreachable provider is tried again (when tinyscale started without it).
#[cfg(feature = "oidc")]
const OIDC_RETRY: Duration = Duration::from_secs(30);

#[cfg(feature = "oidc")]
/// Discovers the provider. With `only_start_if_oidc_is_available` a failure
/// stops tinyscale; otherwise it starts without OIDC (pre-auth keys and CLI
/// approval work) and keeps trying in the background.
async fn start_oidc(
    cfg: crate::config::Oidc,
    admin: crate::config::Admin,
    state: Arc<State>,
    server_url: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Arc<Oidc>, ServeError> {
    let oidc = Arc::new(Oidc::new(cfg, admin, state, server_url, &crate::config::process_env));
    let o = oidc.clone();
    let first = tokio::task::spawn_blocking(move || o.discover()).await.unwrap_or_else(|e| Err(e.to_string()));
    match first {
        Ok(()) => return Ok(oidc),
        Err(e) if oidc.only_start_if_available() => {
            return Err(ServeError::Oidc(format!(
                "cannot use the OIDC provider at {}: {e} (oidc.only_start_if_oidc_is_available is true)",
                oidc.issuer()
            )))
        }
        Err(e) => log::warn!(
            "oidc: the provider at {} is not available ({e}); starting without it and trying again every {}s",
            oidc.issuer(),
            OIDC_RETRY.as_secs()
        ),
    }
    let o = oidc.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(OIDC_RETRY) => {}
                _ = shutdown.changed() => return,
            }
            let o2 = o.clone();
            match tokio::task::spawn_blocking(move || o2.discover()).await {
                Ok(Ok(())) => return log::info!("oidc: the provider is available now"),
                Ok(Err(e)) => log::debug!("oidc: still not available: {e}"),
                Err(_) => return,
            }
        }
    });
    Ok(oidc)
}

/// SIGHUP reads `policy.path` again, as Headscale does; a file that does
/// not check is logged and the policy in force stays.
async fn reload_policy_on_hangup(state: Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return log::warn!("cannot install the SIGHUP handler: the policy file is read at start only");
    };
    while hup.recv().await.is_some() {
        if !matches!(state.settings().policy, PolicySource::File(_)) {
            log::info!("SIGHUP: there is no policy file to read (policy.mode is database or policy.path is unset)");
            continue;
        }
        let s = state.clone();
        match tokio::task::spawn_blocking(move || s.reload_policy_file()).await {
            Ok(Ok(a)) if !a.changed => log::info!("SIGHUP: the policy file is unchanged"),
            Ok(Ok(_)) => log::info!("SIGHUP: the policy file was read again"),
            Ok(Err(e)) => log::error!("SIGHUP: {e}\nthe policy in force stays as it was"),
            Err(_) => log::error!("SIGHUP: reading the policy file failed"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process still dies on SIGTERM; commits are already flushed.
        log::warn!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
