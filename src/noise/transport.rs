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
    seal_record_parts(tx, &[plaintext], out)
}

/// Appends one record holding `parts` one after another (at most
/// [`MAX_PLAINTEXT`] bytes in all) to `out`, encrypted in place there: no
/// copy but the one into `out`.
pub fn seal_record_parts(tx: &mut CipherState, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), NoiseError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_PLAINTEXT {
        return Err(NoiseError::Length { got: len, want: MAX_PLAINTEXT });
    }
    out.reserve(HEADER_LEN + len + TAG_LEN);
    out.push(MSG_RECORD);
    // At most MAX_RECORD - HEADER_LEN, checked above: fits a u16.
    out.extend_from_slice(&((len + TAG_LEN) as u16).to_be_bytes());
    let start = out.len();
    for p in parts {
        out.extend_from_slice(p);
    }
    match tx.seal_separate(&[], &mut out[start..]) {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(())
        }
        Err(e) => {
            out.truncate(start - HEADER_LEN);
            Err(e)
        }
    }
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
