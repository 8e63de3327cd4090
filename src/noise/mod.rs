//! Tailscale's control-protocol Noise layer (`controlbase`), sans-io: the IK
//! handshake and the transport records, with no sockets and no clock. The
//! async adapter that runs it over a connection lives in `control`.

mod crypto;
mod handshake;
mod transport;

use std::fmt;

pub use crypto::{public_key, CipherState};
pub use handshake::{error_message, initiation_version, respond, Initiator, Session, INITIATION_LEN, RESPONSE_LEN};
pub use transport::{
    early_payload, open_record, record_len, seal_record, seal_record_parts, HEADER_LEN, MAX_PLAINTEXT, MAX_RECORD,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoiseError {
    Length {
        got: usize,
        want: usize,
    },
    Malformed(&'static str),
    /// A Diffie-Hellman result of all zeros: the peer sent a low-order key.
    BadKey,
    /// The handshake did not authenticate (wrong server key, tampering).
    Handshake,
    /// A transport record did not decrypt: tampering, loss or reordering.
    Decrypt,
    Crypto,
    NonceExhausted,
    /// The server refused the handshake with a reason (message type 3).
    Refused(String),
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoiseError::Length { got, want } => write!(f, "noise: {got} bytes where {want} are expected"),
            NoiseError::Malformed(what) => write!(f, "noise: malformed message ({what})"),
            NoiseError::BadKey => f.write_str("noise: low-order public key"),
            NoiseError::Handshake => f.write_str("noise: handshake did not authenticate"),
            NoiseError::Decrypt => f.write_str("noise: record did not decrypt"),
            NoiseError::Crypto => f.write_str("noise: encryption failed"),
            NoiseError::NonceExhausted => f.write_str("noise: nonce space exhausted"),
            NoiseError::Refused(why) => write!(f, "noise: refused by the server: {why}"),
        }
    }
}

impl std::error::Error for NoiseError {}

#[cfg(test)]
mod tests;
