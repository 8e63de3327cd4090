//! Periodic upkeep of the state on the monotonic clock: default expiries
//! deferred while the wall clock was wrong (`state::expiry`), route
//! announcements held back by `state::routes::ANNOUNCE_EVERY`, the
//! last-seen of nodes that went offline, and ephemeral nodes that stayed
//! away (`node.ephemeral.inactivity_timeout`), whether they never opened a
//! map stream, closed it, or did not come back after a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock;
use crate::state::State;

/// How often: an ephemeral node goes at most this much after its timeout.
pub const EVERY: Duration = Duration::from_secs(5);

pub async fn run(state: Arc<State>, ephemeral_timeout: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let s = state.clone();
        let (now, mono) = (clock::now_unix(), clock::mono_secs());
        let done = tokio::task::spawn_blocking(move || once(&s, now, mono, ephemeral_timeout)).await;
        if done.is_err() {
            log::error!("housekeeping task failed");
        }
    }
}

/// One round: blocking (store writes), so it runs off the runtime.
pub fn once(state: &State, now: i64, mono: u64, ephemeral_timeout: Duration) {
    match state.settle_expiries(now, mono) {
        Ok(0) => {}
        Ok(n) => log::info!("{n} node expiry(ies) set now that the clock can be read"),
        Err(e) => log::warn!("could not settle deferred expiries: {e}"),
    }
    match state.store_deferred_routes(mono) {
        Ok(0) => {}
        Ok(n) => log::debug!("{n} node(s)' announced routes stored after the minimum interval"),
        Err(e) => log::warn!("could not store announced routes: {e}"),
    }
    match state.persist_last_seen(now, false) {
        Ok(0) => {}
        Ok(n) => log::debug!("recorded last-seen of {n} node(s) gone offline"),
        Err(e) => log::warn!("could not record last-seen times: {e}"),
    }
    match state.reap_ephemeral(mono, ephemeral_timeout.as_secs()) {
        Ok(gone) => {
            for n in gone {
                log::info!("ephemeral node {} ({}) removed after inactivity", n.id, n.given_name);
            }
        }
        Err(e) => log::warn!("could not remove inactive ephemeral nodes: {e}"),
    }
}
