//! The `derp.urls` refresh: fetched now and every `update_frequency`, the
//! last good copy of each kept when a fetch fails, a changed map handed to
//! every client as a delta.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::derp::map;
use crate::state::State;
use crate::tailcfg::DerpMap;

/// Fetches `derp.urls` now and every `update_frequency`, keeping the last
/// good copy of each when a fetch fails, and hands changed maps to `state`.
pub async fn refresh(
    cfg: Arc<Config>,
    embedded: Option<crate::tailcfg::DerpRegion>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = Arc::new(crate::fetch::Client::new(crate::fetch::load_roots(&crate::config::process_env)));
    let mut last_good: Vec<Option<DerpMap>> = vec![None; cfg.derp.urls.len()];
    loop {
        for (i, url) in cfg.derp.urls.iter().enumerate() {
            let (c, u) = (client.clone(), url.clone());
            let got = tokio::task::spawn_blocking(move || c.get_json(&u, None)).await;
            match got.map(|r| r.map(serde_json::from_value::<DerpMap>)) {
                Ok(Ok(Ok(m))) => last_good[i] = Some(m),
                Ok(Ok(Err(e))) => log::warn!("derp.urls: {url} is not a DERP map ({e}); keeping the last good copy"),
                Ok(Err(e)) => log::warn!("derp.urls: {e}; keeping the last good copy"),
                Err(_) => return,
            }
        }
        let fetched: Vec<DerpMap> = last_good.iter().flatten().cloned().collect();
        state.set_derp_map(map::assemble(&fetched, &cfg.derp.from_paths, embedded.clone()));
        if !cfg.derp.auto_update_enabled {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.derp.update_frequency.secs().max(1))) => {}
            _ = shutdown.changed() => return,
        }
    }
}
