//! The test vectors of protocol.md §12.

use super::*;
use crate::tailcfg::encode_hex;

fn seq(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from + i as u8)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const INIT: &str = "00910100605869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b822e8514e6389169bdfd10afecae5bded9cda3f0157ac1d03cd3620b3bb73a8622af140d231efc6396f1c80598dc7289c50e831342d4c8605e6d5bccc41fba65";
const RESP: &str =
    "020030244fe3b963e899dd295baffce248d3530f3a9a7479ba063002680ebfe7adad497cc147989eb24756280c2216d1f9d8e5";
const HHASH: &str = "321714d20086399690b1ca68b173c01de3145831416fd3a049c6db8a2eb99214";

#[test]
fn public_keys_of_the_vector() {
    assert_eq!(encode_hex(&public_key(&seq(1))), "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c");
    assert_eq!(encode_hex(&public_key(&seq(33))), "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b");
    assert_eq!(encode_hex(&public_key(&seq(65))), "64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466");
    assert_eq!(encode_hex(&public_key(&seq(97))), "244fe3b963e899dd295baffce248d3530f3a9a7479ba063002680ebfe7adad49");
}

#[test]
fn the_initiator_produces_the_vector() {
    let (msg, _) = Initiator::start(145, &seq(1), &seq(33), &public_key(&seq(65))).unwrap();
    assert_eq!(encode_hex(&msg), INIT);
}

#[test]
fn the_responder_answers_the_vector_and_derives_its_keys() {
    let (resp, mut s) = respond(&seq(65), &seq(97), &unhex(INIT)).unwrap();
    assert_eq!(encode_hex(&resp), RESP);
    assert_eq!(encode_hex(&s.handshake_hash), HHASH);
    assert_eq!(s.peer_static, public_key(&seq(1)));
    assert_eq!(s.version, 145);
    assert_eq!(initiation_version(&unhex(INIT)), Some(145));

    // Client→server records, with the big-endian nonce.
    for (hex, text) in [
        ("04001507243be7982fab9bbb554647607dd6488c8e819717", &b"hello"[..]),
        ("0400152f344fd3067de495a033667cfcf23c52496da03387", b"world"),
    ] {
        let mut frame = unhex(hex);
        assert_eq!(open_record(&mut s.rx, &mut frame).unwrap(), text);
    }
    // Server→client record n=0.
    let mut out = Vec::new();
    seal_record(&mut s.tx, b"hi", &mut out).unwrap();
    assert_eq!(encode_hex(&out), "040012f15d908b9d86f0dab189897a39a2d68e09be");
}

#[test]
fn a_little_endian_nonce_record_is_rejected() {
    let (_, mut s) = respond(&seq(65), &seq(97), &unhex(INIT)).unwrap();
    let mut first = unhex("04001507243be7982fab9bbb554647607dd6488c8e819717");
    open_record(&mut s.rx, &mut first).unwrap();
    // What snow (little-endian nonce) produces for n=1.
    let mut wrong = unhex("0400159996259ab81103c6313370806c1b5bdb0ff113cd78");
    assert_eq!(open_record(&mut s.rx, &mut wrong), Err(NoiseError::Decrypt));
}

#[test]
fn both_roles_agree() {
    let server = [5u8; 32];
    let (init, i) = Initiator::start(130, &[3u8; 32], &[4u8; 32], &public_key(&server)).unwrap();
    let (resp, mut srv) = respond(&server, &[6u8; 32], &init).unwrap();
    let mut cli = i.finish(&resp).unwrap();
    assert_eq!(cli.handshake_hash, srv.handshake_hash);
    assert_eq!(srv.peer_static, public_key(&[3u8; 32]));
    let big = vec![0xabu8; MAX_PLAINTEXT];
    for msg in [&b"ping"[..], &big[..], &[][..]] {
        let mut out = Vec::new();
        seal_record(&mut cli.tx, msg, &mut out).unwrap();
        assert!(out.len() <= MAX_RECORD);
        assert_eq!(record_len(&out).unwrap(), Some(out.len()));
        assert_eq!(open_record(&mut srv.rx, &mut out).unwrap(), msg);
    }
    let mut out = Vec::new();
    assert!(seal_record(&mut srv.tx, &vec![0u8; MAX_PLAINTEXT + 1], &mut out).is_err());
}

#[test]
fn bad_handshakes_are_refused_without_panicking() {
    let server = seq(65);
    let good = unhex(INIT);
    // Short, long, empty.
    for len in [0, 1, 5, 100, 102] {
        let mut m = good.clone();
        m.resize(len, 0);
        assert!(matches!(respond(&server, &seq(97), &m), Err(NoiseError::Length { .. })), "{len}");
    }
    // Wrong type, wrong length field.
    let mut m = good.clone();
    m[2] = 2;
    assert!(matches!(respond(&server, &seq(97), &m), Err(NoiseError::Malformed(_))));
    let mut m = good.clone();
    m[4] = 0x61;
    assert!(matches!(respond(&server, &seq(97), &m), Err(NoiseError::Malformed(_))));
    // Any flipped byte of the encrypted part fails authentication.
    for i in 37..101 {
        let mut m = good.clone();
        m[i] ^= 1;
        assert_eq!(respond(&server, &seq(97), &m).err(), Some(NoiseError::Handshake), "byte {i}");
    }
    // The wrong server key (a client that cached an old key).
    assert_eq!(respond(&seq(66), &seq(97), &good).err(), Some(NoiseError::Handshake));
    // A low-order ephemeral key.
    let mut m = good.clone();
    m[5..37].fill(0);
    assert_eq!(respond(&server, &seq(97), &m).err(), Some(NoiseError::BadKey));
    // A different version changes the prologue: the same bytes no longer authenticate.
    let mut m = good;
    m[1] = 0x90;
    assert_eq!(respond(&server, &seq(97), &m).err(), Some(NoiseError::Handshake));
}

#[test]
fn bad_records_are_refused() {
    let (_, mut s) = respond(&seq(65), &seq(97), &unhex(INIT)).unwrap();
    assert_eq!(record_len(&[4, 0]), Ok(None));
    assert!(record_len(&[5, 0, 16]).is_err());
    assert!(record_len(&[4, 0, 15]).is_err());
    assert!(record_len(&[4, 0x10, 0x00]).is_err(), "4099 bytes is over the limit");
    let mut short = vec![4, 0, 20, 1, 2];
    assert!(open_record(&mut s.rx, &mut short).is_err());
    let mut tampered = unhex("04001507243be7982fab9bbb554647607dd6488c8e819717");
    tampered[5] ^= 0x80;
    assert_eq!(open_record(&mut s.rx, &mut tampered), Err(NoiseError::Decrypt));
}

#[test]
fn refusals_and_early_payload_encode() {
    let m = error_message("too old");
    assert_eq!(m, b"\x03\x00\x07too old");
    let (_, i) = Initiator::start(100, &[3u8; 32], &[4u8; 32], &public_key(&[5u8; 32])).unwrap();
    assert_eq!(i.finish(&m).err(), Some(NoiseError::Refused("too old".into())));
    let ep = early_payload(&[b'x'; 95]);
    assert_eq!(encode_hex(&ep[..9]), "ffffff54530000005f");
}
