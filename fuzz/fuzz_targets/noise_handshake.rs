//! The server's answer to a client's handshake initiation: the first bytes
//! anyone on the internet can send to `/ts2021`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::noise;

/// protocol.md §12 vector 4: the server static and ephemeral keys.
fn seq(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from + i as u8)
}

fuzz_target!(|data: &[u8]| {
    let _ = noise::initiation_version(data);
    if let Ok((resp, session)) = noise::respond(&seq(65), &seq(97), data) {
        assert_eq!(resp.len(), noise::RESPONSE_LEN);
        assert_eq!(session.version, u16::from_be_bytes([data[0], data[1]]));
    }
});
