//! Map-stream framing (protocol.md §6.2): each MapResponse is one complete
//! zstd frame behind a u32 **little**-endian length. Current clients always
//! run the body through a zstd decoder, so even uncompressed JSON must be
//! wrapped: here in zstd "raw" blocks, which need no compressor at all.

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

/// One frame of the map stream: length prefix and zstd frame of `json`.
pub fn map_frame(json: &[u8]) -> Vec<u8> {
    let z = zstd_raw(json);
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
        let f = map_frame(json);
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

    /// The reference decoder agrees (zstd is installed by tests/run-all.sh).
    #[test]
    fn the_zstd_tool_decodes_our_frames() {
        use std::io::Write;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        for n in [0usize, 18, 300, 70_000, 300_000] {
            let mut child = std::process::Command::new("zstd")
                .args(["-d", "-c"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the zstd tool is required for this test");
            let mut stdin = child.stdin.take().unwrap();
            let frame = zstd_raw(&data[..n]);
            // Write from another thread: zstd writes output while we feed it.
            let writer = std::thread::spawn(move || stdin.write_all(&frame));
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            assert!(out.status.success(), "zstd rejected a {n}-byte frame");
            assert_eq!(out.stdout, &data[..n]);
        }
    }
}
