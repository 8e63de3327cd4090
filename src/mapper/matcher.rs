//! The match finder behind compressed map frames ([`super::frame::compressed`]):
//! a greedy LZ77 in the spirit of zstd's "fast" strategy, handed to
//! ruzstd's encoder (`FrameCompressor::new_with_matcher`), which still does
//! the entropy coding. ruzstd's own matcher keeps one `usize` slot per byte
//! of a block in a table it allocates zeroed for every frame and indexes
//! with a division at every byte; on a 1.46 MB map that was over half of
//! all the compression time, in cache misses. This one keeps 16 Ki `u32`
//! positions (64 KiB: it stays in a router's L2), hashes with a multiply
//! and a shift, looks at the input where it lies instead of copying it, and
//! lets matches reach back into earlier blocks, which ruzstd's does not.
//!
//! What ruzstd 0.9.1 asks of a matcher (read from its `encoding` module,
//! `blocks/compressed.rs` and `levels/fastest.rs`): a space is one block
//! of at most 128 KiB; a match is at least 3 bytes long and stays inside
//! its block; an offset is the distance back from the match's first byte,
//! at least 1 (ruzstd adds 3 and never uses repeat codes); the window
//! this reports goes in the frame header, and no offset may reach past it.
//! And one thing it does not say: a block's literals of more than 1024
//! bytes are Huffman-coded, and its Huffman table builder panics on a
//! single byte value (`distribute_weights` asserts two), and its FSE table
//! builder panics when every sequence of a block has no literals (a single
//! literal-length symbol, 0); with `panic = "abort"` either would take the
//! router's server down, and a node shapes much of its peers' maps. See
//! [`Literals`]: a block's first match always leaves its first byte to the
//! literals, and no match grows back over bytes counted as literals.

use ruzstd::encoding::{CompressionLevel, Matcher, Sequence};

/// zstd's largest block, and the largest space ruzstd may be handed.
const BLOCK: usize = 128 * 1024;
/// How far back a match may reach, and what the frame header asks a
/// decoder to keep. zstd's level 1 uses 512 KiB; on the 1.46 MB map of the
/// compression bench 256 KiB made the smallest frames (64 KiB 295 KB,
/// 128 KiB 291 KB, 256 KiB 282 KB, 512 KiB 285 KB, measured with 6-byte
/// matches): a greedy matcher takes the first candidate, and a far one
/// costs more offset bits.
const WINDOW: usize = 256 * 1024;
/// The smallest window a frame header can state (RFC 8878, 3.1.1.1.2).
const MIN_WINDOW: usize = 1024;
/// log2 of the hash table's slots: zstd's level 1 uses 13 or 14.
const HASH_LOG: u32 = 14;
/// The shortest match looked for, and the bytes hashed. zstd's level 1
/// uses 6; ruzstd codes every offset in full (no repeat codes), so short
/// matches cost about what their literals would: on the bench's map 8 made
/// smaller frames and fewer sequences (274.7 KB; 6: 282.1 KB, 7: 283.4 KB,
/// all hashed with zstd's 6-byte multiplier; 278.6 KB with this one).
/// At most 8: a position's bytes are read as one `u64`.
const MIN_MATCH: usize = 8;
/// zstd's multiplier for hashing 8 bytes: odd, with well-mixed high bits.
const PRIME: u64 = 0xcf1b_bcdc_b7a5_6463;
/// After this many bytes without a match the search steps over two
/// positions, then three, and so on: random data (keys, IDs) costs little.
const SKIP_LOG: u32 = 7;

/// A [`Matcher`] over one input held in memory, for frames of that input:
/// ruzstd reads its blocks from the same slice, so the matcher looks at the
/// slice itself instead of copying blocks into a history of its own. Its
/// memory is the hash table and the one space ruzstd reads into; nothing is
/// allocated per block, and nothing in proportion to the input.
pub struct FastMatcher<'a> {
    /// The input the frame is made of, in the order ruzstd reads it.
    input: &'a [u8],
    /// The window the frame header states; no offset reaches this far.
    window: usize,
    /// The size of the spaces handed out, which becomes the block size.
    block: usize,
    /// The current block: `input[start..end]`.
    start: usize,
    end: usize,
    /// Whether every block so far was the input's next bytes. If ruzstd
    /// ever read something else, the rest goes out as literals (from
    /// `spare`, which holds what it read): a frame that is still right.
    follows: bool,
    /// Per hash of [`MIN_MATCH`] bytes, the last position in `input` that
    /// had it. A stale or colliding entry is harmless: every candidate is
    /// compared, and positions past `u32` (a 4 GiB input) only miss.
    table: Vec<u32>,
    /// The space ruzstd reads the next block into, kept between blocks.
    spare: Vec<u8>,
}

impl<'a> FastMatcher<'a> {
    /// A matcher for frames of `input`. Its size sets the window (no larger
    /// than the input needs: a decoder allocates what the header says) and
    /// the block (a short input is one block, without an empty last one).
    pub fn new(input: &'a [u8]) -> Self {
        let len = input.len();
        Self {
            input,
            window: len.min(WINDOW).next_power_of_two().max(MIN_WINDOW),
            // One more than the input, so that ruzstd's reader sees the end
            // of the input before the space is full and marks the block last.
            block: len.saturating_add(1).min(BLOCK),
            start: 0,
            end: 0,
            follows: true,
            table: vec![0; 1 << HASH_LOG],
            spare: Vec::new(),
        }
    }
}

/// The 8 bytes at `at` as a little-endian number (the same on big-endian
/// MIPS), or 0 past the end; callers stay 8 bytes short of it.
#[inline(always)]
fn load(b: &[u8], at: usize) -> u64 {
    b.get(at..).and_then(|s| s.first_chunk::<8>()).map_or(0, |c| u64::from_le_bytes(*c))
}

/// The table slot of the [`MIN_MATCH`] bytes at the bottom of `v`.
#[inline(always)]
fn slot(v: u64) -> usize {
    ((v << (64 - 8 * MIN_MATCH as u32)).wrapping_mul(PRIME) >> (64 - HASH_LOG)) as usize
}

/// How many bytes from `b` on equal those from `a` on (`a < b`), up to `end`.
#[inline(always)]
fn common(h: &[u8], a: usize, b: usize, end: usize) -> usize {
    let mut n = 0;
    while b + n + 8 <= end {
        let x = load(h, a + n) ^ load(h, b + n);
        if x != 0 {
            return n + (x.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while b + n < end && h.get(a + n) == h.get(b + n) {
        n += 1;
    }
    n
}

/// What the literals of the block so far hold, to keep ruzstd's Huffman
/// builder from ever seeing a block's literals (Huffman-coded past 1024
/// bytes) of a single byte value. Rule: until the literals hold two
/// values, a match that holds a byte other than the literals' value (or,
/// before any literal, the first byte of a match) gives up its bytes up to
/// that one to the literals. So
/// while they hold one value, so did every byte of the block until then,
/// and a block of one value leaves fewer than 3 × [`MIN_MATCH`] literals
/// (its first position, a first match too short to keep once it gave up
/// its first byte, the last bytes too few to search: every other position
/// finds a match at a small offset that runs to the end), far from 1024.
/// Costs a byte or two of a match per block.
#[derive(Default)]
struct Literals {
    first: Option<u8>,
    mixed: bool,
}

impl Literals {
    fn note(&mut self, lits: &[u8]) {
        if self.mixed {
            return;
        }
        for &b in lits {
            match self.first {
                None => self.first = Some(b),
                Some(v) if v != b => {
                    self.mixed = true;
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// How many leading bytes of the match `m` the rule moves to literals.
    fn taken(&self, m: &[u8]) -> usize {
        if self.mixed {
            return 0;
        }
        let Some(&m0) = m.first() else { return 0 };
        let v = self.first.unwrap_or(m0);
        match m.iter().position(|&b| b != v) {
            Some(i) => i + 1,
            None => usize::from(self.first.is_none()),
        }
    }
}

impl Matcher for FastMatcher<'_> {
    fn get_next_space(&mut self) -> Vec<u8> {
        let mut space = core::mem::take(&mut self.spare);
        // ruzstd reads until the space is full: it must be `block` long.
        space.resize(self.block, 0);
        space
    }

    fn get_last_space(&mut self) -> &[u8] {
        if self.follows {
            self.input.get(self.start..self.end).unwrap_or_default()
        } else {
            &self.spare
        }
    }

    fn commit_space(&mut self, space: Vec<u8>) {
        let (start, end) = (self.end, self.end.saturating_add(space.len()));
        self.follows = self.follows && self.input.get(start..end) == Some(&space[..]);
        (self.start, self.end) = (start, end);
        self.spare = space;
    }

    fn skip_matching(&mut self) {
        // ruzstd skips only blocks of one repeated byte (sent as RLE): not
        // indexing them loses nothing.
    }

    fn start_matching(&mut self, mut handle_sequence: impl for<'a> FnMut(Sequence<'a>)) {
        if !self.follows {
            // Of two byte values at least: ruzstd sends a block of one as RLE.
            handle_sequence(Sequence::Literals { literals: &self.spare });
            return;
        }
        let Self { input: h, window, start, end, table, .. } = self;
        let (h, window, start, end) = (*h, *window, *start, *end);
        let mut lits = Literals::default();
        let mut anchor = start; // the first byte not yet in a sequence
                                // No match grows back before this: bytes `lits` counted as literals
                                // (a dropped match's among them) stay literals, or what it counted
                                // would no longer be what ruzstd is handed.
        let mut floor = start;
        let mut ip = start;
        // `ip + 8 <= end` keeps every load inside the block.
        while ip + 8 <= end {
            let v = load(h, ip);
            let s = slot(v);
            // `slot` shifts down to HASH_LOG bits: always in the table.
            let cand = table[s] as usize;
            table[s] = ip as u32;
            let found = cand < ip && ip - cand < window && (load(h, cand) ^ v) << (64 - 8 * MIN_MATCH as u32) == 0;
            if !found {
                ip += 1 + ((ip - anchor) >> SKIP_LOG);
                continue;
            }
            let offset = ip - cand;
            let mut len = common(h, cand, ip, end);
            // Grow it backwards over literals that match too.
            let (mut at, mut from) = (ip, cand);
            while at > floor && from > 0 && h[at - 1] == h[from - 1] {
                (at, from, len) = (at - 1, from - 1, len + 1);
            }
            lits.note(&h[anchor..at]);
            let taken = lits.taken(&h[at..at + len]);
            let taken = if len - taken < MIN_MATCH { len } else { taken };
            lits.note(&h[at..at + taken]);
            let (at, len) = (at + taken, len - taken);
            let next = at + len;
            if len > 0 {
                handle_sequence(Sequence::Triple { literals: &h[anchor..at], offset, match_len: len });
                anchor = next;
            }
            floor = next;
            // Index two positions inside the match (as zstd does), so what
            // follows it can be found again.
            for p in [ip + 2, next.saturating_sub(2)] {
                if p > ip && p + 8 <= end {
                    table[slot(load(h, p))] = p as u32;
                }
            }
            ip = next.max(ip + 1);
        }
        if anchor < end {
            handle_sequence(Sequence::Literals { literals: &h[anchor..end] });
        }
    }

    fn reset(&mut self, _level: CompressionLevel) {
        (self.start, self.end, self.follows) = (0, 0, true);
        self.table.fill(0);
    }

    fn window_size(&self) -> u64 {
        self.window as u64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Blocks whose literals are longer than this get Huffman-coded by ruzstd.
    const HUFFMAN_FROM: usize = 1024;

    /// xorshift64: the same inputs on every run and every target (the
    /// frame tests use it too).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// JSON-ish bytes: field names over and over, hex keys, numbers.
    fn json_like(rng: &mut Rng, n: usize) -> Vec<u8> {
        let mut s = String::from("[");
        let mut id = 0;
        while s.len() < n {
            id += 1;
            s.push_str(&format!(
                r#"{{"ID":{id},"Key":"nodekey:{:016x}{:016x}","Addresses":["100.64.{}.{}/32"],"Online":{}}},"#,
                rng.next(),
                rng.next(),
                rng.below(256),
                rng.below(256),
                rng.below(2) == 1
            ));
        }
        s.truncate(n);
        s.into_bytes()
    }

    /// Runs the matcher over `data` as ruzstd's `FrameCompressor` drives
    /// it (a space per block, RLE blocks skipped), checks every sequence
    /// against what ruzstd and the format allow, and rebuilds the input
    /// from them as a decoder would. Returns each block's literals.
    fn drive(data: &[u8]) -> Vec<Vec<u8>> {
        drive_over(data, data)
    }

    /// [`drive`] with a matcher made for `input`, which ruzstd is expected
    /// to read: whatever it reads, the sequences must rebuild `data`.
    fn drive_over(input: &[u8], data: &[u8]) -> Vec<Vec<u8>> {
        let mut m = FastMatcher::new(input);
        m.reset(CompressionLevel::Fastest);
        let window = m.window_size() as usize;
        assert!(window.is_power_of_two() && (MIN_WINDOW..=WINDOW).contains(&window));
        let (mut out, mut rest, mut all_lits) = (Vec::new(), data, Vec::new());
        loop {
            let mut space = m.get_next_space();
            let size = space.len();
            assert!(size > 0 && size <= BLOCK);
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            space.truncate(n);
            rest = &rest[n..];
            if space.is_empty() {
                break;
            }
            let uniform = space.iter().all(|&b| b == space[0]);
            m.commit_space(space);
            assert_eq!(m.get_last_space(), &data[out.len()..out.len() + n]);
            let before = out.len();
            let mut lits = Vec::new();
            if uniform {
                m.skip_matching();
                out.extend_from_slice(m.get_last_space());
            } else {
                let mut first = true;
                m.start_matching(|seq| match seq {
                    Sequence::Literals { literals } => {
                        lits.extend_from_slice(literals);
                        out.extend_from_slice(literals);
                    }
                    Sequence::Triple { literals, offset, match_len } => {
                        assert!(literals.len() < BLOCK && match_len >= MIN_MATCH);
                        assert!(!first || !literals.is_empty(), "a block's first match has no literal before it");
                        first = false;
                        lits.extend_from_slice(literals);
                        out.extend_from_slice(literals);
                        assert!(offset >= 1 && offset < window, "offset {offset}, window {window}");
                        assert!(offset <= out.len(), "offset {offset} before the frame");
                        for _ in 0..match_len {
                            out.push(out[out.len() - offset]);
                        }
                    }
                });
            }
            assert_eq!(out.len() - before, n, "a block's sequences cover it exactly");
            if lits.len() > HUFFMAN_FROM {
                assert!(lits.iter().any(|&b| b != lits[0]), "Huffman literals of one byte value");
            }
            all_lits.push(lits);
            if n < size {
                break;
            }
        }
        assert!(out == data, "the sequences rebuild other bytes");
        all_lits
    }

    #[test]
    fn sequences_rebuild_the_input_within_the_window() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut sizes = vec![0, 1, 7, 8, 9, 64, 1024, 4096, 131_071, 131_072, 131_073, 262_144, 262_145, 600_000];
        sizes.extend((0..40).map(|_| rng.below(300_000) as usize));
        for (i, &n) in sizes.iter().enumerate() {
            let inputs: [Vec<u8>; 4] = [
                json_like(&mut rng, n),
                (0..n).map(|_| rng.next() as u8).collect(),
                vec![b'x'; n],
                (0..n).map(|_| b"ab"[rng.below(2) as usize]).collect(),
            ];
            for (kind, data) in inputs.iter().enumerate() {
                let lits = drive(data);
                if kind == 0 && n >= 4096 {
                    let total: usize = lits.iter().map(Vec::len).sum();
                    assert!(total * 2 < n, "input {i} ({n} B): {total} B of literals");
                }
            }
        }
    }

    /// A chunk repeated at distances around the window: never matched
    /// from the window's distance on.
    #[test]
    fn repeats_at_the_window_edge() {
        let mut rng = Rng(5);
        for d in [WINDOW - 64, WINDOW - 1, WINDOW, WINDOW + 1, WINDOW + 70_000] {
            let mut data: Vec<u8> = (0..d + 4096).map(|_| rng.next() as u8).collect();
            data.copy_within(..4096, d);
            drive(&data);
        }
    }

    /// Literals of one byte value between matches into an earlier block
    /// (1500 times 0xff and a piece of a first block that has none): they
    /// reach Huffman coding, and hold another value too.
    #[test]
    fn literals_of_one_value_between_matches() {
        let mut rng = Rng(9);
        let pattern: Vec<u8> = (0..4096).map(|_| rng.below(255) as u8).collect();
        let mut data: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK).collect();
        for i in 0..1500 {
            data.push(0xff);
            data.extend_from_slice(&pattern[2 * i..2 * i + 24]);
        }
        let lits = drive(&data);
        assert_eq!(lits[1].iter().filter(|&&b| b == 0xff).count(), 1500);
    }

    /// The rule: until the literals hold two values, a match gives up its
    /// bytes up to the first that differs (before any literal, at least its
    /// first byte).
    #[test]
    fn the_rule_mixes_literals_at_the_first_other_byte() {
        let mut l = Literals::default();
        assert_eq!(l.taken(b"xxxxxx"), 1);
        assert_eq!(l.taken(b"xxyxxx"), 3);
        l.note(b"yyy");
        assert_eq!(l.taken(b"yyyyyy"), 0);
        assert_eq!(l.taken(b"yyyzyy"), 4);
        assert_eq!(l.taken(b"zyyyyy"), 1);
        assert!(!l.mixed);
        l.note(b"yz");
        assert!(l.mixed);
        assert_eq!(l.taken(b"zzzzzz"), 0);
    }

    /// If the blocks ruzstd reads are not the input the matcher was made
    /// for, from the first that differs on they go out as literals.
    #[test]
    fn blocks_other_than_the_input_go_as_literals() {
        let mut rng = Rng(21);
        let data = json_like(&mut rng, 300_000);
        let mut other = data.clone();
        other[200_000] ^= 1;
        let lits = drive_over(&other, &data);
        assert!(lits[0].len() * 2 < BLOCK && lits[2] == data[2 * BLOCK..]);
        let lits = drive_over(&data[..1000], &data);
        // Blocks of 1001 bytes (for 1000), none of them the input's.
        assert_eq!(lits.len(), data.len().div_ceil(1001));
        assert!(lits.concat() == data);
    }

    /// Block 1 of the reproductions below: a cycled random pattern, then
    /// `T W` and later `Q T R`, so that at block 2's start the table holds
    /// the later `T` (a match too short to keep) and `W` finds the earlier
    /// one, whose backward growth once swallowed the dropped match's bytes.
    fn swallowing_setup(rng: &mut Rng) -> (Vec<u8>, Vec<u8>, [u8; 8], [u8; 8]) {
        let pattern: Vec<u8> = (0..32_768).map(|_| (rng.next() % 255) as u8).collect();
        let (t, w) = (*b"Tq7#k2Lx", *b"W9!zP0@m");
        let mut tail = b"U1u2U3u4".to_vec();
        tail.extend_from_slice(&t);
        tail.extend_from_slice(&w);
        tail.push(b'Q');
        tail.extend_from_slice(&t);
        tail.push(b'R');
        tail.extend_from_slice(b"fillerxyz0123456789");
        let mut data: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK - tail.len()).collect();
        data.extend_from_slice(&tail);
        (data, pattern, t, w)
    }

    /// Crafted maps that made ruzstd panic (an attacker review): a block
    /// whose every match had no literals (its literal-length table of one
    /// symbol, 0), and a block whose literals were 1,100 bytes of one
    /// value. Both must compress, decode, and hand ruzstd sound blocks.
    #[test]
    fn a_dropped_match_stays_literals_however_later_matches_grow() {
        let mut rng = Rng(9);
        let (mut no_literals, pattern, t, w) = swallowing_setup(&mut rng);
        let mut one_value = no_literals.clone();
        no_literals.extend_from_slice(&t);
        no_literals.extend_from_slice(&w);
        no_literals.extend_from_slice(b"\"}}}");
        one_value.extend_from_slice(&t);
        one_value.extend_from_slice(&w);
        for i in 0..1100 {
            one_value.push(0xff);
            one_value.extend_from_slice(&pattern[24 * i..24 * i + 24]);
        }
        let run_across: Vec<u8> = {
            let pattern: Vec<u8> = (0..4096).map(|_| (rng.next() % 255) as u8).collect();
            let mut tail = b"Y".to_vec();
            tail.extend_from_slice(&[b'v'; 8]);
            tail.extend_from_slice(b"X0123456789Zvv");
            let mut data: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK - tail.len()).collect();
            data.extend_from_slice(&tail);
            data.extend_from_slice(&[b'v'; 20]);
            data.push(b'Q');
            data
        };
        for data in [&no_literals, &one_value, &run_across] {
            drive(data);
            let frame = super::super::frame::compressed(data);
            // The decoder writes into room that is already there.
            let mut out = Vec::with_capacity(data.len());
            ruzstd::decoding::FrameDecoder::new().decode_all_to_vec(&frame, &mut out).unwrap();
            assert!(out == *data);
        }
    }
}
