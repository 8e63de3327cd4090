//! Map-stream framing (protocol.md §6.2): each MapResponse is one complete
//! zstd frame behind a u32 **little**-endian length. Current clients always
//! run the body through a zstd decoder, so even uncompressed JSON must be
//! wrapped. With `tuning.compress_maps` (the default) a message of at least
//! [`COMPRESS_FROM`] bytes is compressed: our match finder
//! ([`super::matcher`], zstd's level 1 in kind) and ruzstd's entropy coder;
//! smaller ones, and every one with the switch off, go in zstd "raw"
//! blocks, which need no compressor at all.

use ruzstd::encoding::{CompressionLevel, FrameCompressor};

use super::matcher::FastMatcher;

const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's largest block.
const MAX_BLOCK: usize = 128 * 1024;

/// A single-segment zstd frame that stores `data` uncompressed.
pub fn zstd_raw(data: &[u8]) -> Vec<u8> {
    let n = data.len();
    let mut out = Vec::with_capacity(n + 14 + 3 * (n / MAX_BLOCK + 1));
    out.extend_from_slice(&MAGIC);
    // Frame header descriptor: single segment, content size in the smallest field.
    if n < 256 {
        out.push(0x20);
        out.push(n as u8);
    } else if n < 65_536 + 256 {
        out.push(0x60);
        out.extend_from_slice(&((n - 256) as u16).to_le_bytes());
    } else {
        out.push(0xe0);
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]); // one empty last raw block
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none() as u32;
        let header = (c.len() as u32) << 3 | last; // block type 0 = raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

/// JSON shorter than this goes raw even when compression is on. The
/// encoder costs a fixed ~0.54 million instructions a call on mipsel (its
/// hash table and ruzstd's entropy tables, whatever the input; ~0.7 million
/// with ruzstd's own matcher: `cross/compress-instructions.sh`), and
/// the deltas every session gets (one peer's patch or whole node, a few
/// hundred bytes to about 1.5 KiB) would shrink by a few dozen bytes: each
/// change fanned out to every session would cost ~1 ms of router CPU per
/// session for nothing (`cargo bench --bench compression`). Full maps of
/// more than two or three nodes are above it. (Deltas are never compressed:
/// see `control::session`.)
pub const COMPRESS_FROM: usize = 4096;

/// A zstd frame of `data`: [`FastMatcher`]'s matches, coded by ruzstd's
/// `Fastest` level (Huffman literals, FSE sequences; a block that does not
/// shrink is stored raw). While it runs it holds the matcher's history (up
/// to a 256 KiB window and a 128 KiB block), the 128 KiB space ruzstd reads
/// into, a 64 KiB hash table, and ruzstd's output and per-block buffers;
/// full maps are compressed on the blocking pool, so at most 4 at once.
pub fn compressed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    let mut encoder = FrameCompressor::new_with_matcher(FastMatcher::new(data), CompressionLevel::Fastest);
    // ruzstd unwraps its reader's and writer's results, and panics only on
    // its unimplemented levels: a slice and a Vec never fail, and `Fastest`
    // is implemented.
    encoder.set_source(data);
    encoder.set_drain(&mut out);
    encoder.compress();
    drop(encoder);
    if sound(&out) {
        out
    } else {
        zstd_raw(data)
    }
}

/// Whether no block of `frame` leans on a Huffman table a dropped block
/// made. ruzstd 0.9.1 keeps the table of a block it compressed and then
/// stored raw (it did not shrink), and a later block's "treeless" literals
/// may reuse it although the decoder never saw it: such a frame would not
/// decode, and a client would fail on its map at every reconnect. So a
/// treeless block after a raw or RLE one, or any frame this cannot read,
/// counts as unsound and the map goes in raw blocks instead.
pub fn sound(frame: &[u8]) -> bool {
    let Some(&fhd) = frame.get(4) else { return false };
    if frame[..4] != MAGIC || fhd & 0x08 != 0 {
        return false; // not a frame, or a reserved bit set
    }
    let single_segment = fhd & 0x20 != 0;
    let dict = [0, 1, 2, 4][(fhd & 3) as usize];
    let fcs = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single_segment) + dict + fcs;
    // A raw or RLE block since the last block that sent a Huffman table.
    let mut dropped = false;
    loop {
        let Some(h) = frame.get(at..at + 3) else { return false };
        let h = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        let (last, kind, size) = (h & 1 == 1, (h >> 1) & 3, (h >> 3) as usize);
        let body = at + 3;
        let stored = match kind {
            0 | 1 => {
                dropped = true;
                // Raw: `size` bytes; RLE: one byte, repeated `size` times.
                if kind == 0 {
                    size
                } else {
                    1
                }
            }
            2 => {
                // A compressed block opens with its literals' type.
                match frame.get(body).map(|b| b & 3) {
                    Some(2) => dropped = false, // a new table
                    Some(3) if dropped => return false,
                    Some(_) => {}
                    None => return false,
                }
                size
            }
            _ => return false,
        };
        at = body + stored;
        if last {
            // A checksum, if the frame says it has one, ends it.
            let end = at + if fhd & 0x04 != 0 { 4 } else { 0 };
            return end == frame.len();
        }
    }
}

/// One frame of the map stream: length prefix and zstd frame of `json`,
/// compressed when `compress` says so and it is worth it.
pub fn map_frame(json: &[u8], compress: bool) -> Vec<u8> {
    let z = if compress && json.len() >= COMPRESS_FROM { compressed(json) } else { zstd_raw(json) };
    let mut out = Vec::with_capacity(4 + z.len());
    out.extend_from_slice(&(z.len() as u32).to_le_bytes());
    out.extend_from_slice(&z);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::encode_hex;

    #[test]
    fn keepalive_matches_the_vector() {
        let json = br#"{"KeepAlive":true}"#;
        let f = map_frame(json, true);
        assert_eq!(encode_hex(&f[..4]), "1b000000");
        assert_eq!(encode_hex(&f[4..13]), "28b52ffd2012910000");
        assert_eq!(&f[13..], json);
    }

    /// Decodes a raw-block frame the way RFC 8878 says, to check sizes and block splits.
    fn decode(z: &[u8]) -> Vec<u8> {
        assert_eq!(z[..4], MAGIC);
        let (fcs_len, size) = match z[4] {
            0x20 => (1, z[5] as usize),
            0x60 => (2, u16::from_le_bytes([z[5], z[6]]) as usize + 256),
            0xe0 => (8, u64::from_le_bytes(z[5..13].try_into().unwrap()) as usize),
            d => panic!("descriptor {d:x}"),
        };
        let mut i = 5 + fcs_len;
        let mut out = Vec::new();
        loop {
            let h = u32::from_le_bytes([z[i], z[i + 1], z[i + 2], 0]);
            let (last, kind, n) = (h & 1, (h >> 1) & 3, (h >> 3) as usize);
            assert_eq!(kind, 0);
            assert!(n <= MAX_BLOCK);
            out.extend_from_slice(&z[i + 3..i + 3 + n]);
            i += 3 + n;
            if last == 1 {
                break;
            }
        }
        assert_eq!(i, z.len());
        assert_eq!(out.len(), size);
        out
    }

    #[test]
    fn every_size_class_round_trips() {
        for n in [0, 1, 255, 256, 65_791, 65_792, 131_072, 131_073, 400_000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            assert_eq!(decode(&zstd_raw(&data)), data, "{n}");
        }
    }

    /// What the reference decoder (the zstd tool, installed by
    /// tests/run-all.sh) makes of `frames`, one or more frames back to back.
    fn zstd_tool(frames: Vec<u8>) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("zstd")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the zstd tool is required for this test");
        let mut stdin = child.stdin.take().unwrap();
        // Write from another thread: zstd writes output while we feed it.
        let writer = std::thread::spawn(move || stdin.write_all(&frames));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "zstd rejected our frames");
        out.stdout
    }

    /// The reference decoder agrees on raw frames.
    #[test]
    fn the_zstd_tool_decodes_our_frames() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        for n in [0usize, 18, 300, 70_000, 300_000] {
            assert_eq!(zstd_tool(zstd_raw(&data[..n])), &data[..n], "{n}");
        }
    }

    use crate::mapper::matcher::tests::Rng;

    /// `n` bytes of map-like JSON: peers with random keys and addresses,
    /// the same field names over and over, as the maps we send.
    fn map_like(rng: &mut Rng, n: usize) -> Vec<u8> {
        let mut s = String::from(r#"{"Peers":["#);
        let mut id = 0;
        while s.len() < n {
            id += 1;
            let key: String = (0..4).map(|_| format!("{:016x}", rng.next())).collect();
            s.push_str(&format!(
                r#"{{"ID":{id},"StableID":"{id}","Name":"n{id}.tailnet.internal.","Key":"nodekey:{key}","Addresses":["100.64.{}.{}/32"],"Endpoints":["198.51.100.{}:{}"],"Online":{}}},"#,
                rng.below(256),
                rng.below(256),
                rng.below(256),
                40000 + rng.below(20000),
                rng.below(2) == 1
            ));
        }
        s.truncate(n);
        s.into_bytes()
    }

    /// Inputs of one kind: map-like JSON, random bytes (nothing to find),
    /// one byte repeated (a run), or a four-letter alphabet.
    fn input(rng: &mut Rng, kind: u64, n: usize) -> Vec<u8> {
        match kind {
            0 => map_like(rng, n),
            1 => (0..n).map(|_| rng.next() as u8).collect(),
            2 => vec![b'a' + rng.below(26) as u8; n],
            _ => (0..n).map(|_| b"{}\":"[rng.below(4) as usize]).collect(),
        }
    }

    /// Compressed frames of many generated inputs (empty, tiny, every block
    /// boundary, several 128 KiB blocks) decode to the same bytes with
    /// ruzstd's decoder and with the reference one.
    #[test]
    fn compressed_frames_decode_to_the_same_bytes() {
        use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut sizes = vec![0, 1, 2, 3, 5, 17, 100, 511, 512, 4096, 65_535, 65_536, 131_071, 131_072, 131_073];
        sizes.extend([200_000, 262_151, 400_000]);
        sizes.extend((0..24).map(|_| rng.below(20_000) as usize));
        let (mut all_in, mut all_frames) = (Vec::new(), Vec::new());
        for (i, &n) in sizes.iter().enumerate() {
            for kind in 0..4 {
                let data = input(&mut rng, kind, n);
                let z = compressed(&data);
                assert_eq!(z[..4], MAGIC);
                let mut src = &z[..];
                let mut d = FrameDecoder::new();
                d.init(&mut src).unwrap_or_else(|e| panic!("input {i} kind {kind} ({n} B): {e:?}"));
                d.decode_blocks(&mut src, BlockDecodingStrategy::All)
                    .unwrap_or_else(|e| panic!("input {i} kind {kind} ({n} B): {e:?}"));
                assert!(d.is_finished() && src.is_empty(), "input {i} kind {kind} ({n} B): one whole frame");
                assert!(
                    d.collect().unwrap_or_default() == data,
                    "input {i} kind {kind} ({n} B) decodes to other bytes"
                );
                // Never much larger than raw blocks (a frame header and a block header more).
                assert!(z.len() <= zstd_raw(&data).len() + 16, "input {i} kind {kind} ({n} B) grew to {}", z.len());
                // Map-like input never needs the raw fallback: what ruzstd made passed.
                if kind == 0 && n >= COMPRESS_FROM {
                    assert!(z.len() * 2 < data.len(), "map-like input {i} ({n} B) was not compressed");
                }
                all_in.extend_from_slice(&data);
                all_frames.extend_from_slice(&z);
            }
        }
        // One run of the tool for all of them; it decodes frames back to back.
        assert!(zstd_tool(all_frames) == all_in, "the zstd tool decodes our frames to other bytes");
    }

    /// Inputs that reach our matcher's edges decode alike with ruzstd's
    /// decoder and the reference one: a repeat at distances around its
    /// 256 KiB window, literals of one byte value between matches into an
    /// earlier block (ruzstd's Huffman builder panics on those), and the
    /// sizes around two and three blocks.
    #[test]
    fn frames_at_the_matchers_edges_decode() {
        use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
        let mut rng = Rng(3);
        let mut inputs = Vec::new();
        for d in [(256 << 10) - 1, 256 << 10, (256 << 10) + 1] {
            let mut data: Vec<u8> = (0..d + 2048).map(|_| rng.next() as u8).collect();
            data.copy_within(..2048, d);
            inputs.push(data);
        }
        let pattern: Vec<u8> = (0..4096).map(|_| rng.below(255) as u8).collect();
        let mut data: Vec<u8> = pattern.iter().copied().cycle().take(MAX_BLOCK).collect();
        for i in 0..1500 {
            data.push(0xff);
            data.extend_from_slice(&pattern[2 * i..2 * i + 24]);
        }
        inputs.push(data);
        for n in [2 * MAX_BLOCK - 1, 2 * MAX_BLOCK, 2 * MAX_BLOCK + 1, 3 * MAX_BLOCK] {
            inputs.push(map_like(&mut rng, n));
        }
        let (mut all_in, mut all_frames) = (Vec::new(), Vec::new());
        for (i, data) in inputs.iter().enumerate() {
            let z = compressed(data);
            let mut src = &z[..];
            let mut d = FrameDecoder::new();
            d.init(&mut src).unwrap_or_else(|e| panic!("input {i}: {e:?}"));
            d.decode_blocks(&mut src, BlockDecodingStrategy::All).unwrap_or_else(|e| panic!("input {i}: {e:?}"));
            assert!(d.collect().unwrap_or_default() == *data, "input {i} decodes to other bytes");
            all_in.extend_from_slice(data);
            all_frames.extend_from_slice(&z);
        }
        assert!(zstd_tool(all_frames) == all_in, "the zstd tool decodes our frames to other bytes");
    }

    /// Our matcher's frames of map-like JSON are no larger than ruzstd's
    /// own matcher's (which matches only inside a block).
    #[test]
    fn our_matcher_compresses_maps_as_well_as_ruzstds() {
        let mut rng = Rng(13);
        for n in [5000, 100_000, 600_000] {
            let json = map_like(&mut rng, n);
            let mut theirs = Vec::new();
            ruzstd::encoding::compress(&*json, &mut theirs, CompressionLevel::Fastest);
            let ours = compressed(&json).len();
            assert!(ours <= theirs.len(), "{n} B: ours {ours}, ruzstd's {}", theirs.len());
        }
    }

    /// Small messages stay raw (compression would save a few bytes for its
    /// setup cost); a map shrinks several times; the switch off means raw.
    #[test]
    fn only_messages_worth_it_are_compressed() {
        let mut rng = Rng(7);
        for n in [0, 18, 200, COMPRESS_FROM - 1] {
            let json = map_like(&mut rng, n);
            assert_eq!(map_frame(&json, true), map_frame(&json, false), "{n}");
        }
        let json = map_like(&mut rng, 300_000);
        let (on, off) = (map_frame(&json, true), map_frame(&json, false));
        assert_eq!(&off[4..], zstd_raw(&json));
        assert_eq!(u32::from_le_bytes(on[..4].try_into().unwrap()) as usize, on.len() - 4);
        assert!(on.len() * 2 < off.len(), "a map-like 300 KB went from {} to {} bytes", off.len(), on.len());
        assert_eq!(zstd_tool(on[4..].to_vec()), json);
    }

    /// A block header: size, type (0 raw, 1 RLE, 2 compressed), last flag.
    fn block(kind: u32, body: &[u8], last: bool) -> Vec<u8> {
        let size = if kind == 1 { 300 } else { body.len() as u32 };
        let mut b = (size << 3 | kind << 1 | last as u32).to_le_bytes()[..3].to_vec();
        b.extend_from_slice(body);
        b
    }

    /// A frame (single segment, one-byte size) of `blocks`.
    fn frame_of(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, 200];
        for b in blocks {
            f.extend_from_slice(b);
        }
        f
    }

    /// ruzstd 0.9.1's frames whose treeless literals could lean on a table
    /// the decoder never got are refused; what it makes of real maps, and
    /// every raw frame, passes.
    #[test]
    fn a_treeless_block_after_a_dropped_one_is_unsound() {
        // Literals headers: type 2 sends a table, type 3 reuses the last one.
        let (table, treeless) = (vec![0b10, 0, 0, 0], vec![0b11, 0, 0, 0]);
        let raw = block(0, b"abc", false);
        assert!(sound(&frame_of(&[block(2, &table, false), block(2, &treeless, true)])));
        assert!(!sound(&frame_of(&[block(2, &table, false), raw.clone(), block(2, &treeless, true)])));
        assert!(!sound(&frame_of(&[block(1, b"x", false), block(2, &treeless, true)])));
        assert!(sound(&frame_of(&[raw.clone(), block(2, &table, false), block(2, &treeless, true)])));
        // Unreadable: cut short, a reserved block type, bytes after the end.
        let whole = frame_of(&[raw.clone(), block(2, &table, true)]);
        assert!(sound(&whole));
        assert!(!sound(&whole[..whole.len() - 1]));
        assert!(!sound(&frame_of(&[block(3, b"", true)])));
        assert!(!sound(&[whole.clone(), vec![0]].concat()));
        assert!(!sound(&[]) && !sound(&MAGIC));
        let mut rng = Rng(11);
        for n in [0, 5, 4096, 131_072, 300_000] {
            assert!(sound(&zstd_raw(&map_like(&mut rng, n))), "raw {n}");
            let mut z = Vec::new();
            ruzstd::encoding::compress(&*map_like(&mut rng, n), &mut z, CompressionLevel::Fastest);
            assert!(sound(&z), "ruzstd's frame of {n} B of a map");
        }
    }
}
