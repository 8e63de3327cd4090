//! The JSON a machine sends inside Noise: RegisterRequest and MapRequest, the
//! Hostinfo view taken of them, and the keys and followup URLs they carry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::tailcfg::{HostinfoView, MapRequest, NodePublic, RegisterRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<RegisterRequest>(data) {
        if let Some(h) = &r.hostinfo {
            let _ = HostinfoView::of(h);
        }
        let _ = tinyscale::state::register::auth_id_of(&r.followup);
        // A parsed key prints back as text that parses to the same key.
        assert_eq!(NodePublic::parse(&r.node_key.to_string()), Some(r.node_key));
    }
    if let Ok(m) = serde_json::from_slice::<MapRequest>(data) {
        if let Some(h) = &m.hostinfo {
            let _ = HostinfoView::of(h);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodePublic::parse(text);
        let _ = tinyscale::state::register::valid_auth_id(text);
    }
});
