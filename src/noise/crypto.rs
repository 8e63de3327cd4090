//! The primitives of `Noise_IK_25519_ChaChaPoly_BLAKE2s`: BLAKE2s, its HMAC
//! and HKDF, X25519, and ChaCha20-Poly1305 with Tailscale's big-endian nonce.

use blake2::{Blake2s256, Digest};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

pub const HASH_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
const BLOCK_LEN: usize = 64;

pub fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s (RFC 2104 with a 64-byte block).
pub fn hmac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut ipad = [0x36u8; BLOCK_LEN];
    let mut opad = [0x5cu8; BLOCK_LEN];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner_parts: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    inner_parts.push(&ipad);
    inner_parts.extend_from_slice(parts);
    let inner = hash(&inner_parts);
    hash(&[&opad, &inner])
}

/// Noise's HKDF with two outputs (salt = chaining key, empty info).
pub fn hkdf(ck: &[u8; HASH_LEN], ikm: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let prk = hmac(ck, &[ikm]);
    let o1 = hmac(&prk, &[&[1u8]]);
    let o2 = hmac(&prk, &[&o1, &[2u8]]);
    (o1, o2)
}

/// X25519; `None` when the peer's key is of low order (an all-zero result),
/// which Go's x/crypto refuses too.
pub fn dh(private: &[u8; 32], public: &[u8; 32]) -> Option<[u8; 32]> {
    let secret = x25519_dalek::StaticSecret::from(*private);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    shared.was_contributory().then(|| shared.to_bytes())
}

pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private)).to_bytes()
}

/// Tailscale's nonce: four zero bytes, then the counter as u64 **big**-endian
/// (the Noise spec says little-endian; counter 0 hides the difference).
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key(k: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is exactly what ChaCha20-Poly1305 takes; this cannot fail.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("32-byte ChaCha20-Poly1305 key"))
}

/// One direction's cipher: a key and a counter that only goes up.
pub struct CipherState {
    key: LessSafeKey,
    counter: u64,
}

impl CipherState {
    pub fn new(k: &[u8; 32]) -> Self {
        CipherState { key: key(k), counter: 0 }
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal(&mut self, ad: &[u8], buf: &mut Vec<u8>) -> Result<(), super::NoiseError> {
        let n = self.next_nonce()?;
        self.key.seal_in_place_append_tag(n, Aad::from(ad), buf).map_err(|_| super::NoiseError::Crypto)
    }

    /// Encrypts `buf` in place; returns the tag, for the caller to append.
    pub fn seal_separate(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], super::NoiseError> {
        let n = self.next_nonce()?;
        let tag = self.key.seal_in_place_separate_tag(n, Aad::from(ad), buf).map_err(|_| super::NoiseError::Crypto)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `buf` (ciphertext + tag) in place; returns the plaintext length.
    pub fn open(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<usize, super::NoiseError> {
        let n = self.next_nonce()?;
        self.key.open_in_place(n, Aad::from(ad), buf).map(|p| p.len()).map_err(|_| super::NoiseError::Decrypt)
    }

    fn next_nonce(&mut self) -> Result<Nonce, super::NoiseError> {
        let c = self.counter;
        // The protocol has no rekey; a connection that used 2^64-1 nonces must end.
        self.counter = c.checked_add(1).ok_or(super::NoiseError::NonceExhausted)?;
        Ok(nonce(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_and_hmac_known_answers() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        let h = hash(&[b"abc"]);
        assert_eq!(crate::tailcfg::encode_hex(&h), "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
        // Split input hashes the same as whole input.
        assert_eq!(hash(&[b"a", b"bc"]), h);
        // HMAC agrees with a straightforward definition over the whole input.
        let k = [7u8; 32];
        assert_eq!(hmac(&k, &[b"hello ", b"world"]), hmac(&k, &[b"hello world"]));
    }

    #[test]
    fn low_order_points_are_refused() {
        assert!(dh(&[1u8; 32], &[0u8; 32]).is_none());
        let pubk = public_key(&[2u8; 32]);
        assert!(dh(&[1u8; 32], &pubk).is_some());
    }

    #[test]
    fn seal_open_round_trip_and_counter() {
        let mut a = CipherState::new(&[9u8; 32]);
        let mut b = CipherState::new(&[9u8; 32]);
        for msg in [&b"one"[..], b"two", b""] {
            let mut buf = msg.to_vec();
            a.seal(&[], &mut buf).unwrap();
            assert_eq!(buf.len(), msg.len() + TAG_LEN);
            let n = b.open(&[], &mut buf).unwrap();
            assert_eq!(&buf[..n], msg);
        }
        // Out of order (a skipped counter) fails.
        let mut buf = b"x".to_vec();
        a.seal(&[], &mut buf).unwrap();
        let mut buf2 = b"y".to_vec();
        a.seal(&[], &mut buf2).unwrap();
        assert!(b.open(&[], &mut buf2).is_err());
    }
}
