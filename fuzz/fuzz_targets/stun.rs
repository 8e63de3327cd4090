//! STUN packets on the open UDP port, and responses as a client reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::stun;

fuzz_target!(|data: &[u8]| {
    if let Some(txid) = stun::parse_request(data) {
        let addr = "203.0.113.5:41641".parse().expect("a literal address");
        let resp = stun::response(&txid, addr);
        assert_eq!(stun::parse_response(&resp, &txid), Some(addr));
    }
    let txid: [u8; 12] = std::array::from_fn(|i| i as u8 + 1);
    let _ = stun::parse_response(data, &txid);
});
