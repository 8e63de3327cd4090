//! The Noise IK handshake as Tailscale's control protocol frames it
//! (protocol.md §3): a 101-byte initiation carrying the protocol version, a
//! 51-byte response. Both roles; the initiator serves tests and benchmarks.
//! Randomness (ephemeral keys) comes in as arguments: no I/O, no clock.

use super::crypto::{dh, hash, hkdf, public_key, CipherState, HASH_LEN, TAG_LEN};
use super::NoiseError;

const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";
pub const INITIATION_LEN: usize = 101;
pub const RESPONSE_LEN: usize = 51;
const MSG_INITIATION: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_ERROR: u8 = 3;

/// The symmetric state both sides evolve in step.
struct Symmetric {
    h: [u8; HASH_LEN],
    ck: [u8; HASH_LEN],
}

impl Symmetric {
    fn new(version: u16) -> Self {
        // The name is 33 bytes, longer than a hash: h = H(name).
        let h = hash(&[PROTOCOL_NAME]);
        let mut s = Symmetric { h, ck: h };
        s.mix_hash(format!("{PROLOGUE_PREFIX}{version}").as_bytes());
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_key(&mut self, shared: Option<[u8; 32]>) -> Result<[u8; 32], NoiseError> {
        let (ck, k) = hkdf(&self.ck, &shared.ok_or(NoiseError::BadKey)?);
        self.ck = ck;
        Ok(k)
    }

    /// Decrypts `ct` with handshake key `k` (nonce 0, ad = h), then mixes `ct` in.
    fn decrypt_and_hash(&mut self, k: &[u8; 32], ct: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut buf = ct.to_vec();
        let n = CipherState::new(k).open(&self.h, &mut buf).map_err(|_| NoiseError::Handshake)?;
        buf.truncate(n);
        self.mix_hash(ct);
        Ok(buf)
    }

    fn encrypt_and_hash(&mut self, k: &[u8; 32], pt: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut buf = pt.to_vec();
        CipherState::new(k).seal(&self.h, &mut buf)?;
        self.mix_hash(&buf);
        Ok(buf)
    }

    fn split(&self) -> ([u8; 32], [u8; 32]) {
        hkdf(&self.ck, &[])
    }
}

/// What a completed handshake yields.
pub struct Session {
    /// The peer's static key: the client's machine key, on the server.
    pub peer_static: [u8; 32],
    pub version: u16,
    pub handshake_hash: [u8; 32],
    /// Decrypts what the peer sends.
    pub rx: CipherState,
    /// Encrypts what we send.
    pub tx: CipherState,
}

/// The protocol version in an initiation, read before anything else so a
/// server can refuse clients too old for it.
pub fn initiation_version(msg: &[u8]) -> Option<u16> {
    (msg.len() >= 2).then(|| u16::from_be_bytes([msg[0], msg[1]]))
}

/// Server side: answers a client's initiation.
pub fn respond(
    server_private: &[u8; 32],
    ephemeral_private: &[u8; 32],
    init: &[u8],
) -> Result<([u8; RESPONSE_LEN], Session), NoiseError> {
    if init.len() != INITIATION_LEN {
        return Err(NoiseError::Length { got: init.len(), want: INITIATION_LEN });
    }
    let version = u16::from_be_bytes([init[0], init[1]]);
    if init[2] != MSG_INITIATION || u16::from_be_bytes([init[3], init[4]]) as usize != INITIATION_LEN - 5 {
        return Err(NoiseError::Malformed("not a handshake initiation"));
    }
    let mut s = Symmetric::new(version);
    s.mix_hash(&public_key(server_private));
    // -> e, es, s, ss
    let e_c: [u8; 32] = init[5..37].try_into().map_err(|_| NoiseError::Malformed("ephemeral"))?;
    s.mix_hash(&e_c);
    let k = s.mix_key(dh(server_private, &e_c))?;
    let machine: [u8; 32] =
        s.decrypt_and_hash(&k, &init[37..85])?.try_into().map_err(|_| NoiseError::Malformed("static key"))?;
    let k = s.mix_key(dh(server_private, &machine))?;
    if !s.decrypt_and_hash(&k, &init[85..101])?.is_empty() {
        return Err(NoiseError::Malformed("non-empty handshake payload"));
    }
    // <- e, ee, se
    let e_s = public_key(ephemeral_private);
    s.mix_hash(&e_s);
    s.mix_key(dh(ephemeral_private, &e_c))?;
    let k = s.mix_key(dh(ephemeral_private, &machine))?;
    let tag = s.encrypt_and_hash(&k, &[])?;
    let mut out = [0u8; RESPONSE_LEN];
    out[0] = MSG_RESPONSE;
    out[1..3].copy_from_slice(&((RESPONSE_LEN - 3) as u16).to_be_bytes());
    out[3..35].copy_from_slice(&e_s);
    out[35..].copy_from_slice(&tag);
    let (c2s, s2c) = s.split();
    Ok((
        out,
        Session {
            peer_static: machine,
            version,
            handshake_hash: s.h,
            rx: CipherState::new(&c2s),
            tx: CipherState::new(&s2c),
        },
    ))
}

/// The message a server sends instead of a response to refuse a client with
/// a reason it can show (`03 len:u16be text`).
pub fn error_message(text: &str) -> Vec<u8> {
    let t = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(3 + t.len());
    v.push(MSG_ERROR);
    v.extend_from_slice(&(t.len() as u16).to_be_bytes());
    v.extend_from_slice(t);
    v
}

/// Client side, between sending the initiation and reading the response.
pub struct Initiator {
    s: Symmetric,
    version: u16,
    machine_private: [u8; 32],
    ephemeral_private: [u8; 32],
    server_public: [u8; 32],
}

impl Initiator {
    pub fn start(
        version: u16,
        machine_private: &[u8; 32],
        ephemeral_private: &[u8; 32],
        server_public: &[u8; 32],
    ) -> Result<([u8; INITIATION_LEN], Initiator), NoiseError> {
        let mut s = Symmetric::new(version);
        s.mix_hash(server_public);
        let e = public_key(ephemeral_private);
        s.mix_hash(&e);
        let k = s.mix_key(dh(ephemeral_private, server_public))?;
        let enc_static = s.encrypt_and_hash(&k, &public_key(machine_private))?;
        let k = s.mix_key(dh(machine_private, server_public))?;
        let tag = s.encrypt_and_hash(&k, &[])?;
        let mut msg = [0u8; INITIATION_LEN];
        msg[..2].copy_from_slice(&version.to_be_bytes());
        msg[2] = MSG_INITIATION;
        msg[3..5].copy_from_slice(&((INITIATION_LEN - 5) as u16).to_be_bytes());
        msg[5..37].copy_from_slice(&e);
        msg[37..85].copy_from_slice(&enc_static);
        msg[85..].copy_from_slice(&tag);
        debug_assert_eq!(enc_static.len(), 32 + TAG_LEN);
        Ok((
            msg,
            Initiator {
                s,
                version,
                machine_private: *machine_private,
                ephemeral_private: *ephemeral_private,
                server_public: *server_public,
            },
        ))
    }

    /// Reads the server's response (or its refusal, as [`NoiseError::Refused`]).
    pub fn finish(mut self, resp: &[u8]) -> Result<Session, NoiseError> {
        if resp.first() == Some(&MSG_ERROR) && resp.len() >= 3 {
            let n = u16::from_be_bytes([resp[1], resp[2]]) as usize;
            let text = String::from_utf8_lossy(&resp[3..(3 + n).min(resp.len())]).into_owned();
            return Err(NoiseError::Refused(text));
        }
        if resp.len() != RESPONSE_LEN {
            return Err(NoiseError::Length { got: resp.len(), want: RESPONSE_LEN });
        }
        if resp[0] != MSG_RESPONSE || u16::from_be_bytes([resp[1], resp[2]]) as usize != RESPONSE_LEN - 3 {
            return Err(NoiseError::Malformed("not a handshake response"));
        }
        let e_s: [u8; 32] = resp[3..35].try_into().map_err(|_| NoiseError::Malformed("ephemeral"))?;
        self.s.mix_hash(&e_s);
        self.s.mix_key(dh(&self.ephemeral_private, &e_s))?;
        let k = self.s.mix_key(dh(&self.machine_private, &e_s))?;
        if !self.s.decrypt_and_hash(&k, &resp[35..])?.is_empty() {
            return Err(NoiseError::Malformed("non-empty handshake payload"));
        }
        let (c2s, s2c) = self.s.split();
        Ok(Session {
            peer_static: self.server_public,
            version: self.version,
            handshake_hash: self.s.h,
            rx: CipherState::new(&s2c),
            tx: CipherState::new(&c2s),
        })
    }
}
