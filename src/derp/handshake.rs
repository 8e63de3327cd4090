//! The DERP handshake's NaCl boxes: the client's ClientInfo is sealed to the
//! server's key, the server's ServerInfo to the client's (crypto_box:
//! X25519, then XSalsa20-Poly1305 with the tag before the ciphertext).

use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use serde::Deserialize;

pub const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxError;

impl std::fmt::Display for BoxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the DERP handshake box does not open (wrong key or tampered)")
    }
}

impl std::error::Error for BoxError {}

fn salsa_box(secret: &[u8; 32], peer: &[u8; 32]) -> SalsaBox {
    SalsaBox::new(&PublicKey::from(*peer), &SecretKey::from(*secret))
}

/// Opens `nonce || box` sealed by `peer` to `secret`.
pub fn open(secret: &[u8; 32], peer: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, BoxError> {
    if sealed.len() < NONCE_LEN {
        return Err(BoxError);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    salsa_box(secret, peer).decrypt(Nonce::from_slice(nonce), body).map_err(|_| BoxError)
}

/// Seals `plaintext` from `secret` to `peer`: `nonce || box`.
pub fn seal(secret: &[u8; 32], peer: &[u8; 32], nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    // Sealing in memory with valid keys cannot fail.
    let body = salsa_box(secret, peer).encrypt(Nonce::from_slice(&nonce), plaintext).expect("sealing a DERP box");
    [nonce.as_slice(), &body].concat()
}

/// What a client says about itself.
#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    #[serde(default)]
    pub version: u32,
    #[serde(rename = "CanAckPings", default)]
    pub can_ack_pings: bool,
    #[serde(rename = "meshKey", default)]
    pub mesh_key: Option<String>,
    #[serde(rename = "IsProber", default)]
    pub is_prober: bool,
}

/// What the server says about itself.
pub const SERVER_INFO: &[u8] = br#"{"version":2}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::public_key;

    #[test]
    fn boxes_open_only_with_the_right_keys() {
        let (server, client) = ([1u8; 32], [2u8; 32]);
        let (spub, cpub) = (public_key(&server), public_key(&client));
        let sealed = seal(&client, &spub, [3; 24], br#"{"version":2,"CanAckPings":true}"#);
        let info: ClientInfo = serde_json::from_slice(&open(&server, &cpub, &sealed).unwrap()).unwrap();
        assert_eq!(info, ClientInfo { version: 2, can_ack_pings: true, ..Default::default() });
        // The wrong claimed client key, a flipped byte, a short box.
        assert_eq!(open(&server, &public_key(&[4; 32]), &sealed), Err(BoxError));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert_eq!(open(&server, &cpub, &bad), Err(BoxError));
        assert_eq!(open(&server, &cpub, &sealed[..20]), Err(BoxError));
        assert_eq!(sealed.len(), NONCE_LEN + 16 + 32, "tag then ciphertext, as crypto_box_easy");
        // And the other direction.
        let back = seal(&server, &cpub, [5; 24], SERVER_INFO);
        assert_eq!(open(&client, &spub, &back).unwrap(), SERVER_INFO);
    }
}
