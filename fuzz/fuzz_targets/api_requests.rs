//! Whatever an API key holder (or the CLI) sends the admin API: any method,
//! path, query and body against one live state on disk. Bad input must get
//! a 4xx/5xx answer with a message, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tinyscale::api::{handle, Request};
use tinyscale::config::{Allocation, Prefixes};
use tinyscale::state::{Settings, State};
use tinyscale::store::Store;

fn state() -> &'static Arc<State> {
    static STATE: OnceLock<Arc<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tinyscale-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = Prefixes { v4: Some("100.64.0.0/24".parse().unwrap()), v6: None, allocation: Allocation::Sequential };
        let s = State::load(Store::open(&dir.join("db"), 1 << 20).unwrap(), Settings::new(p)).unwrap();
        Arc::new(s)
    })
}

fuzz_target!(|data: &[u8]| {
    // method \n target \n body
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let method = match parts.next().unwrap_or("").len() % 4 {
        0 => "GET",
        1 => "POST",
        2 => "PUT",
        _ => "DELETE",
    };
    let target = format!("/api/v1/{}", parts.next().unwrap_or(""));
    let body = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let r = handle(state(), &Request { method, path, query, body: body.as_bytes() });
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("every answer is JSON");
    if r.status != 200 {
        assert!(body["message"].is_string(), "{} {target}: {body}", r.status);
    }
});
