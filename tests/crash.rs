//! kill -9 in the middle of a storm of registrations, again and again: every
//! registration a client was told succeeded is there after the restart.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::client::{self, Client};
use common::*;
use tinyscale::tailcfg::MachinePublic;

const ROUNDS: usize = 10;
const STORM: usize = 500;
const CLIENTS: usize = 16;

/// One client connection registering fresh devices until the storm is over or
/// the server is gone; returns the node keys it was told were registered.
async fn register_until_gone(
    addr: String,
    server: MachinePublic,
    auth: String,
    next: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let Ok(mut c) = Client::connect(&addr, server, client::random32()).await else { return };
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= STORM {
            return;
        }
        let node = client::random32();
        match c.try_register(&Client::register_request(&node, &auth, &format!("storm-{i}"))).await {
            Ok((200, v)) if v["MachineAuthorized"] == true => {
                acked.lock().unwrap().push(client::node_key_text(&node));
            }
            Ok((status, v)) => panic!("registration {i} refused while the server was up: {status} {v}"),
            Err(_) => return,
        }
        // The next device is another machine: its own Noise connection (a
        // new node key on the same machine would be a key rotation).
        match Client::connect(&addr, server, client::random32()).await {
            Ok(n) => c = n,
            Err(_) => return,
        }
    }
}

#[test]
fn kill_9_during_a_registration_storm_loses_no_acknowledged_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut s = Server::start_free(&d);
    ok(&d, &["users", "create", "storm"]);
    let key = json(&d, &["preauthkeys", "create", "--user", "storm", "--reusable", "-o", "json"]);
    let auth = key["key"].as_str().unwrap().to_string();
    // One thread drives the clients; the wait below yields to them.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut all_acked: BTreeSet<String> = BTreeSet::new();
    for round in 0..ROUNDS {
        let addr = s.host_port();
        let next = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        // Kill at a different point of each storm, from its start to its end.
        let kill_after = 20 + round * (STORM - 60) / (ROUNDS - 1);
        let started = std::time::Instant::now();
        rt.block_on(async {
            let server = client::server_key(&addr).await;
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    tokio::spawn(register_until_gone(addr.clone(), server, auth.clone(), next.clone(), acked.clone()))
                })
                .collect();
            while acked.lock().unwrap().len() < kill_after && !tasks.iter().all(|t| t.is_finished()) {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            s.kill9();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let acked = acked.lock().unwrap().clone();
        eprintln!(
            "round {round}: killed after {} acknowledged registrations ({} requests started, {:.1}s)",
            acked.len(),
            next.load(Ordering::SeqCst).min(STORM),
            started.elapsed().as_secs_f64()
        );
        all_acked.extend(acked);
        s = Server::start_free(&d);
        let nodes = json(&d, &["nodes", "list", "-o", "json"]);
        let present: BTreeSet<String> =
            nodes.as_array().unwrap().iter().map(|n| n["node_key"].as_str().unwrap().to_string()).collect();
        let lost: Vec<&String> = all_acked.difference(&present).collect();
        assert!(lost.is_empty(), "round {round}: {} acknowledged node(s) lost: {lost:?}", lost.len());
        // Addresses stay unique through every crash.
        let ips: BTreeSet<String> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["ip_addresses"][0].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(ips.len(), nodes.as_array().unwrap().len(), "every node has its own address");
    }
    eprintln!("{} acknowledged registrations over {ROUNDS} crashes, all present", all_acked.len());
}
