//! Transport records after the handshake (protocol.md §3.5):
//! `04 len:u16be ciphertext`, at most 4096 bytes on the wire.

use super::crypto::{CipherState, TAG_LEN};
use super::NoiseError;

pub const HEADER_LEN: usize = 3;
pub const MAX_RECORD: usize = 4096;
/// The most plaintext one record carries.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - HEADER_LEN - TAG_LEN;
const MSG_RECORD: u8 = 4;

/// Appends one record holding `plaintext` (at most [`MAX_PLAINTEXT`] bytes) to `out`.
pub fn seal_record(tx: &mut CipherState, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(NoiseError::Length { got: plaintext.len(), want: MAX_PLAINTEXT });
    }
    let mut body = Vec::with_capacity(plaintext.len() + TAG_LEN);
    body.extend_from_slice(plaintext);
    tx.seal(&[], &mut body)?;
    out.push(MSG_RECORD);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// The length of the record at the start of `buf` (header included), once
/// its header has arrived; an error for anything that is not a valid record.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, NoiseError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != MSG_RECORD {
        return Err(NoiseError::Malformed("not a transport record"));
    }
    let n = u16::from_be_bytes([buf[1], buf[2]]) as usize;
    if n < TAG_LEN {
        return Err(NoiseError::Malformed("record shorter than its tag"));
    }
    if HEADER_LEN + n > MAX_RECORD {
        return Err(NoiseError::Length { got: HEADER_LEN + n, want: MAX_RECORD });
    }
    Ok(Some(HEADER_LEN + n))
}

/// Decrypts the whole record `frame` in place; returns its plaintext.
pub fn open_record<'a>(rx: &mut CipherState, frame: &'a mut [u8]) -> Result<&'a [u8], NoiseError> {
    match record_len(frame)? {
        Some(n) if n == frame.len() => {}
        _ => return Err(NoiseError::Malformed("incomplete record")),
    }
    let body = &mut frame[HEADER_LEN..];
    let n = rx.open(&[], body)?;
    Ok(&body[..n])
}

/// The optional first plaintext the server sends (§3.6): `ff ff ff 'T' 'S'`,
/// a u32be length, then JSON.
pub fn early_payload(json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + json.len());
    v.extend_from_slice(b"\xff\xff\xffTS");
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(json);
    v
}
