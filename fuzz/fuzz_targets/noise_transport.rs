//! Transport records after a handshake: whatever arrives is cut into records
//! and opened, and what the client seals, the server opens unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::noise::{self, CipherState};

/// protocol.md §12 vector 4: k1, the client-to-server key of its handshake.
const K1: [u8; 32] = [
    0x9d, 0x8a, 0x0c, 0x9b, 0xfa, 0xd8, 0x1a, 0x7a, 0xc3, 0x44, 0x84, 0xc5, 0x3c, 0x3b, 0x9e, 0x73, 0x0e, 0xdd, 0x3c,
    0x02, 0x49, 0xfa, 0xac, 0x78, 0x26, 0xa8, 0xcf, 0x9f, 0x4b, 0x97, 0x13, 0xb1,
];

fuzz_target!(|data: &[u8]| {
    // Both ends of the client-to-server direction (the handshake itself has
    // its own target; doing it per input would only slow this one down).
    let (mut client_tx, mut server_rx) = (CipherState::new(&K1), CipherState::new(&K1));
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Bytes off the wire, as the server reads them.
        let mut buf = rest.to_vec();
        let mut at = 0;
        while let Ok(Some(len)) = noise::record_len(&buf[at..]) {
            if buf.len() - at < len {
                break;
            }
            if noise::open_record(&mut server_rx, &mut buf[at..at + len]).is_err() {
                break;
            }
            at += len;
        }
    } else {
        // Round trip: every chunk the client seals opens to itself.
        for chunk in rest.chunks(noise::MAX_PLAINTEXT) {
            let mut wire = Vec::new();
            noise::seal_record(&mut client_tx, chunk, &mut wire).expect("a chunk within MAX_PLAINTEXT seals");
            let len = noise::record_len(&wire).expect("own record").expect("whole header");
            assert_eq!(len, wire.len());
            let plain = noise::open_record(&mut server_rx, &mut wire).expect("own record opens");
            assert_eq!(plain, chunk);
        }
    }
});
