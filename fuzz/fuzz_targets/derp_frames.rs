//! DERP frames as a relay client sends them: header, payload, and for every
//! frame that parses, its encoding parses back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::derp::frame;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some((kind, len))) = frame::header(buf) {
        let Some(payload) = buf.get(frame::HEADER_LEN..frame::HEADER_LEN + len) else { return };
        if let Ok(f) = frame::parse(kind, payload) {
            let mut out = Vec::new();
            frame::encode(&f, &mut out);
            let (k2, l2) = frame::header(&out).expect("own header").expect("whole header");
            assert_eq!(frame::parse(k2, &out[frame::HEADER_LEN..frame::HEADER_LEN + l2]).as_ref(), Ok(&f));
        }
        let _ = frame::is_disco(payload);
        buf = &buf[frame::HEADER_LEN + len..];
    }
});
