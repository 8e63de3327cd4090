//! Curve25519 keys in Tailscale's typed text form (`privkey:<64 hex>`).
//!
//! The server's Noise key file holds exactly this text, as Headscale writes it,
//! so a Headscale key moved over keeps every client's trust.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Prefix { want: &'static str },
    Length(usize),
    Hex,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Prefix { want } => write!(f, "key does not start with {want:?}"),
            KeyError::Length(n) => write!(f, "key has {n} hex characters, want 64"),
            KeyError::Hex => f.write_str("key is not hexadecimal"),
        }
    }
}

impl std::error::Error for KeyError {}

pub(crate) fn decode_hex32(s: &str) -> Result<[u8; 32], KeyError> {
    if s.len() != 64 {
        return Err(KeyError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or(KeyError::Hex)?;
        let lo = (pair[1] as char).to_digit(16).ok_or(KeyError::Hex)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

pub fn encode_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(&mut out, bytes);
    // Hex digits only.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into the first `2 * bytes.len()` bytes of `out`.
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 15) as usize];
    }
}

/// A private X25519 key (the server's Noise static key).
#[derive(Clone, PartialEq, Eq)]
pub struct MachinePrivate([u8; 32]);

impl MachinePrivate {
    const PREFIX: &'static str = "privkey:";

    /// Wraps 32 random bytes, clamped as X25519 scalars are.
    pub fn from_random(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        MachinePrivate(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `privkey:<64 hex>`; surrounding whitespace (a trailing newline) is allowed.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let hex = text.trim().strip_prefix(Self::PREFIX).ok_or(KeyError::Prefix { want: Self::PREFIX })?;
        decode_hex32(hex).map(MachinePrivate)
    }

    /// The file form, without a newline (as Headscale writes it).
    pub fn to_text(&self) -> String {
        format!("{}{}", Self::PREFIX, encode_hex(&self.0))
    }
}

impl fmt::Debug for MachinePrivate {
    // A private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachinePrivate(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_headscale_form() {
        let k = MachinePrivate::from_random([7u8; 32]);
        let t = k.to_text();
        assert!(t.starts_with("privkey:") && t.len() == 8 + 64);
        assert_eq!(MachinePrivate::parse(&(t.clone() + "\n")).unwrap(), k);
        assert_eq!(MachinePrivate::parse(&t.to_uppercase().replace("PRIVKEY:", "privkey:")).unwrap(), k);
        assert!(!format!("{k:?}").contains(&t[8..]));
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(MachinePrivate::parse("nodekey:00"), Err(KeyError::Prefix { want: "privkey:" }));
        assert_eq!(MachinePrivate::parse("privkey:abcd"), Err(KeyError::Length(4)));
        assert_eq!(MachinePrivate::parse(&format!("privkey:{}", "zz".repeat(32))), Err(KeyError::Hex));
    }
}
