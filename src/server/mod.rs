//! `tinyscale serve`: opens the store, loads the keys, and runs the listeners
//! until SIGTERM or SIGINT, then flushes the store and leaves.

mod http;
pub mod keyfile;
mod socket;
mod tls;

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::state::{State, StateError};
use crate::store::{Store, StoreError};

/// Concurrent TCP connections before new ones are turned away (board profiles tune it later).
const MAX_CONNECTIONS: usize = 512;

#[derive(Debug)]
pub enum ServeError {
    Store(StoreError),
    State(StateError),
    Key(keyfile::KeyFileError),
    Tls(String),
    Bind(String),
    Runtime(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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

pub fn run(cfg: Config) -> Result<(), ServeError> {
    let store = Store::open(&cfg.database.path, cfg.database.cache_capacity).map_err(ServeError::Store)?;
    let _noise_key = keyfile::load_or_create(&cfg.noise_private_key_path).map_err(ServeError::Key)?;
    let state = Arc::new(State::load(store, cfg.prefixes.clone()).map_err(ServeError::State)?);
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        log::info!("listening on {scheme}://{bound} (server_url {})", cfg.server_url);
        log::info!("admin socket at {}", cfg.unix_socket.display());
        if state.snapshot().users.is_empty() {
            log::info!("no users yet. Add one and a key, then join a device:");
            log::info!("  tinyscale users create alice");
            log::info!("  tinyscale preauthkeys create --user alice --reusable --expiration 24h");
            log::info!("  tailscale up --login-server {} --authkey <key>", cfg.server_url);
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let http = http::Http { state: state.clone(), tls, max_connections: MAX_CONNECTIONS };
        let http_task = tokio::spawn(http.run(listener, stop_rx.clone()));
        let api_task = tokio::spawn(socket::run(api_listener, cfg.unix_socket.clone(), state.clone(), stop_rx));

        wait_for_signal().await;
        log::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = http_task.await;
        let _ = api_task.await;
        Ok::<(), ServeError>(())
    })?;
    state.flush().map_err(ServeError::State)?;
    log::info!("store flushed; bye");
    Ok(())
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
