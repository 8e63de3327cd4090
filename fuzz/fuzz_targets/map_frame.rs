//! Map frames as the server sends them, compressed or not: whatever the
//! JSON (nodes choose much of it: endpoints, Hostinfo), the frame must
//! decode to it. The input is stretched past zstd's 128 KiB block, where
//! ruzstd 0.9.1 can make a frame no decoder reads (`frame::sound` guards
//! against it), by repeating it with a changing byte mixed in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use tinyscale::mapper::frame;

fuzz_target!(|data: &[u8]| {
    let Some((&stretch, rest)) = data.split_first() else { return };
    // Up to 400 KiB: one, two or three blocks and a partial one.
    let len = (rest.len() * (usize::from(stretch) + 1)).min(400 << 10);
    let json: Vec<u8> = (0..len)
        .map(|i| {
            let b = rest[i % rest.len()];
            // Every other round of the input varies, so blocks differ.
            if (i / rest.len()) % 2 == 1 { b ^ (i / rest.len()) as u8 } else { b }
        })
        .collect();
    let f = frame::map_frame(&json, true);
    assert_eq!(u32::from_le_bytes(f[..4].try_into().expect("4 bytes")) as usize, f.len() - 4);
    let mut src = &f[4..];
    let mut d = FrameDecoder::new();
    d.init(&mut src).expect("a frame header");
    d.decode_blocks(&mut src, BlockDecodingStrategy::All).expect("blocks that decode");
    assert!(d.is_finished() && src.is_empty(), "one whole frame");
    assert!(d.collect().unwrap_or_default() == json, "decodes to the same bytes");
});
