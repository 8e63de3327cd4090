//! STUN binding (RFC 5389), as Tailscale's netcheck uses it: a client asks,
//! the server answers with the address and port it saw (XOR-MAPPED-ADDRESS).
//! Pure: parse a request, build a response; `server` is the UDP listener.

pub mod server;

use std::net::{IpAddr, SocketAddr};

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const XOR_MAPPED_ADDRESS: [u8; 2] = [0x00, 0x20];
const HEADER_LEN: usize = 20;

/// The transaction id of a binding request; `None` for anything else.
/// Attributes (SOFTWARE, FINGERPRINT) are not required: being lenient is fine.
pub fn parse_request(pkt: &[u8]) -> Option<[u8; 12]> {
    if pkt.len() < HEADER_LEN || pkt[..2] != BINDING_REQUEST || pkt[4..8] != MAGIC_COOKIE {
        return None;
    }
    let len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    if !len.is_multiple_of(4) || HEADER_LEN + len != pkt.len() {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&pkt[8..20]);
    Some(txid)
}

/// The success response reporting `addr` (a v4-mapped v6 address is reported as v4).
pub fn response(txid: &[u8; 12], addr: SocketAddr) -> Vec<u8> {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let port = addr.port() ^ 0x2112;
    let mut attr = vec![0x00, if ip.is_ipv4() { 0x01 } else { 0x02 }];
    attr.extend_from_slice(&port.to_be_bytes());
    match ip {
        IpAddr::V4(a) => attr.extend(a.octets().iter().zip(MAGIC_COOKIE).map(|(b, k)| b ^ k)),
        IpAddr::V6(a) => {
            let key: Vec<u8> = MAGIC_COOKIE.iter().chain(txid.iter()).copied().collect();
            attr.extend(a.octets().iter().zip(key).map(|(b, k)| b ^ k));
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + attr.len());
    out.extend_from_slice(&BINDING_SUCCESS);
    out.extend_from_slice(&((4 + attr.len()) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(txid);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS);
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&attr);
    out
}

/// Reads the XOR-MAPPED-ADDRESS of a response (for tests and the benchmark).
pub fn parse_response(pkt: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if pkt.len() < HEADER_LEN || pkt[..2] != BINDING_SUCCESS || pkt[8..20] != txid[..] {
        return None;
    }
    let mut i = HEADER_LEN;
    while i + 4 <= pkt.len() {
        let (t, l) = ([pkt[i], pkt[i + 1]], u16::from_be_bytes([pkt[i + 2], pkt[i + 3]]) as usize);
        let v = pkt.get(i + 4..i + 4 + l)?;
        if t == XOR_MAPPED_ADDRESS && l >= 8 {
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip = match v[1] {
                0x01 => {
                    let b: Vec<u8> = v[4..8].iter().zip(MAGIC_COOKIE).map(|(b, k)| b ^ k).collect();
                    IpAddr::from([b[0], b[1], b[2], b[3]])
                }
                0x02 if l >= 20 => {
                    let key: Vec<u8> = MAGIC_COOKIE.iter().chain(txid.iter()).copied().collect();
                    let mut b = [0u8; 16];
                    for (j, (x, k)) in v[4..20].iter().zip(key).enumerate() {
                        b[j] = x ^ k;
                    }
                    IpAddr::from(b)
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::encode_hex;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn the_vector_of_protocol_md() {
        let req = unhex("000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f");
        let txid = parse_request(&req).unwrap();
        assert_eq!(txid, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let resp = response(&txid, "203.0.113.5:41641".parse().unwrap());
        assert_eq!(encode_hex(&resp), "0101000c2112a4420102030405060708090a0b0c00200008000183bbea12d547");
        assert_eq!(parse_response(&resp, &txid), Some("203.0.113.5:41641".parse().unwrap()));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let txid = [9u8; 12];
        let v6: SocketAddr = "[2001:db8::42]:3478".parse().unwrap();
        let r = response(&txid, v6);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 24);
        assert_eq!(parse_response(&r, &txid), Some(v6));
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        assert_eq!(parse_response(&response(&txid, mapped), &txid), Some("192.0.2.7:5000".parse().unwrap()));
    }

    #[test]
    fn anything_else_is_ignored() {
        let req = unhex("000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f");
        assert!(parse_request(&req[..19]).is_none());
        assert!(parse_request(&req[..39]).is_none(), "length field disagrees");
        let mut bad = req.clone();
        bad[4] = 0;
        assert!(parse_request(&bad).is_none(), "no magic cookie");
        let mut resp_type = req.clone();
        resp_type[1] = 0x11;
        assert!(parse_request(&resp_type).is_none());
        assert!(parse_request(b"").is_none());
        assert!(parse_response(b"junk", &[0; 12]).is_none());
    }
}
