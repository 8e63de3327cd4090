//! DERP frames (protocol.md §8.2): `type:u8 | length:u32be | payload`.
//! Pure: parse a frame from its type and payload, encode one into a buffer.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub const HEADER_LEN: usize = 5;
/// "DERP🔑", the start of the server's key frame.
pub const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91];
pub const KEY_LEN: usize = 32;
/// The largest packet a client may relay.
pub const MAX_PACKET: usize = 64 * 1024;
/// The largest frame accepted at all (after the handshake; a ClientInfo is
/// held to `relay::MAX_CLIENT_INFO`).
pub const MAX_FRAME: usize = 256 * 1024;

pub const SERVER_KEY: u8 = 0x01;
pub const CLIENT_INFO: u8 = 0x02;
pub const SERVER_INFO: u8 = 0x03;
pub const SEND_PACKET: u8 = 0x04;
pub const RECV_PACKET: u8 = 0x05;
pub const KEEP_ALIVE: u8 = 0x06;
pub const NOTE_PREFERRED: u8 = 0x07;
pub const PEER_GONE: u8 = 0x08;
pub const PEER_PRESENT: u8 = 0x09;
pub const FORWARD_PACKET: u8 = 0x0a;
pub const WATCH_CONNS: u8 = 0x10;
pub const CLOSE_PEER: u8 = 0x11;
pub const PING: u8 = 0x12;
pub const PONG: u8 = 0x13;
pub const HEALTH: u8 = 0x14;
pub const RESTARTING: u8 = 0x15;

pub type Key = [u8; KEY_LEN];

/// Why a peer is gone.
pub const GONE_DISCONNECTED: u8 = 0x00;
pub const GONE_NOT_HERE: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    ServerKey(Key),
    ClientInfo {
        key: Key,
        sealed: Vec<u8>,
    },
    ServerInfo(Vec<u8>),
    SendPacket {
        dst: Key,
        packet: Vec<u8>,
    },
    RecvPacket {
        src: Key,
        packet: Vec<u8>,
    },
    KeepAlive,
    NotePreferred(bool),
    PeerGone {
        key: Key,
        reason: u8,
    },
    PeerPresent {
        key: Key,
        addr: SocketAddr,
        flags: u8,
    },
    ForwardPacket {
        src: Key,
        dst: Key,
        packet: Vec<u8>,
    },
    WatchConns,
    ClosePeer(Key),
    Ping([u8; 8]),
    Pong([u8; 8]),
    Health(String),
    Restarting {
        reconnect_ms: u32,
        try_for_ms: u32,
    },
    /// A type this side does not know: skipped, as the protocol asks.
    Unknown(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(usize),
    Short { kind: u8, len: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "DERP frame of {n} bytes is over the limit"),
            FrameError::Short { kind, len } => write!(f, "DERP frame type {kind:#04x} too short ({len} bytes)"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The type and payload length of the frame starting at `buf`, once 5 bytes are there.
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some((buf[0], len)))
}

fn key(p: &[u8]) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&p[..KEY_LEN]);
    k
}

pub fn parse(kind: u8, p: &[u8]) -> Result<Frame, FrameError> {
    let need = |n: usize| if p.len() < n { Err(FrameError::Short { kind, len: p.len() }) } else { Ok(()) };
    Ok(match kind {
        SERVER_KEY => {
            need(MAGIC.len() + KEY_LEN)?;
            if p[..MAGIC.len()] != MAGIC {
                return Err(FrameError::Short { kind, len: p.len() });
            }
            Frame::ServerKey(key(&p[MAGIC.len()..]))
        }
        CLIENT_INFO => {
            need(KEY_LEN + 24)?;
            Frame::ClientInfo { key: key(p), sealed: p[KEY_LEN..].to_vec() }
        }
        SERVER_INFO => Frame::ServerInfo(p.to_vec()),
        SEND_PACKET | RECV_PACKET => {
            need(KEY_LEN)?;
            if p.len() - KEY_LEN > MAX_PACKET {
                return Err(FrameError::TooLarge(p.len()));
            }
            let (k, packet) = (key(p), p[KEY_LEN..].to_vec());
            if kind == SEND_PACKET {
                Frame::SendPacket { dst: k, packet }
            } else {
                Frame::RecvPacket { src: k, packet }
            }
        }
        KEEP_ALIVE => Frame::KeepAlive,
        NOTE_PREFERRED => {
            need(1)?;
            Frame::NotePreferred(p[0] != 0)
        }
        PEER_GONE => {
            need(KEY_LEN)?;
            // Old servers sent no reason byte: that means "disconnected".
            Frame::PeerGone { key: key(p), reason: p.get(KEY_LEN).copied().unwrap_or(GONE_DISCONNECTED) }
        }
        PEER_PRESENT => {
            need(KEY_LEN + 18)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&p[KEY_LEN..KEY_LEN + 16]);
            let v6 = Ipv6Addr::from(ip);
            let ip = v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6));
            let port = u16::from_be_bytes([p[KEY_LEN + 16], p[KEY_LEN + 17]]);
            Frame::PeerPresent {
                key: key(p),
                addr: SocketAddr::new(ip, port),
                flags: p.get(KEY_LEN + 18).copied().unwrap_or(0),
            }
        }
        FORWARD_PACKET => {
            need(2 * KEY_LEN)?;
            Frame::ForwardPacket { src: key(p), dst: key(&p[KEY_LEN..]), packet: p[2 * KEY_LEN..].to_vec() }
        }
        WATCH_CONNS => Frame::WatchConns,
        CLOSE_PEER => {
            need(KEY_LEN)?;
            Frame::ClosePeer(key(p))
        }
        PING | PONG => {
            need(8)?;
            let mut d = [0u8; 8];
            d.copy_from_slice(&p[..8]);
            if kind == PING {
                Frame::Ping(d)
            } else {
                Frame::Pong(d)
            }
        }
        HEALTH => Frame::Health(String::from_utf8_lossy(p).into_owned()),
        RESTARTING => {
            need(8)?;
            Frame::Restarting {
                reconnect_ms: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                try_for_ms: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            }
        }
        other => Frame::Unknown(other),
    })
}

fn put(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(HEADER_LEN + len);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Appends `f` to `out`.
pub fn encode(f: &Frame, out: &mut Vec<u8>) {
    match f {
        Frame::ServerKey(k) => put(out, SERVER_KEY, &[&MAGIC, k]),
        Frame::ClientInfo { key, sealed } => put(out, CLIENT_INFO, &[key, sealed]),
        Frame::ServerInfo(s) => put(out, SERVER_INFO, &[s]),
        Frame::SendPacket { dst, packet } => put(out, SEND_PACKET, &[dst, packet]),
        Frame::RecvPacket { src, packet } => put(out, RECV_PACKET, &[src, packet]),
        Frame::KeepAlive => put(out, KEEP_ALIVE, &[]),
        Frame::NotePreferred(b) => put(out, NOTE_PREFERRED, &[&[*b as u8]]),
        Frame::PeerGone { key, reason } => put(out, PEER_GONE, &[key, &[*reason]]),
        Frame::PeerPresent { key, addr, flags } => {
            let ip = match addr.ip() {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            put(out, PEER_PRESENT, &[key, &ip.octets(), &addr.port().to_be_bytes(), &[*flags]])
        }
        Frame::ForwardPacket { src, dst, packet } => put(out, FORWARD_PACKET, &[src, dst, packet]),
        Frame::WatchConns => put(out, WATCH_CONNS, &[]),
        Frame::ClosePeer(k) => put(out, CLOSE_PEER, &[k]),
        Frame::Ping(d) => put(out, PING, &[d]),
        Frame::Pong(d) => put(out, PONG, &[d]),
        Frame::Health(t) => put(out, HEALTH, &[t.as_bytes()]),
        Frame::Restarting { reconnect_ms, try_for_ms } => {
            put(out, RESTARTING, &[&reconnect_ms.to_be_bytes(), &try_for_ms.to_be_bytes()])
        }
        Frame::Unknown(k) => put(out, *k, &[]),
    }
}

/// A RecvPacket frame without building a [`Frame`] (the relay's hot path).
pub fn recv_packet(src: &Key, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + KEY_LEN + packet.len());
    put(&mut out, RECV_PACKET, &[src, packet]);
    out
}

/// Disco messages start with "TS💬"; a drop of one earns the sender a PeerGone.
pub fn is_disco(packet: &[u8]) -> bool {
    packet.len() >= 62 && packet.starts_with(&[0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::encode_hex;

    fn round_trip(f: Frame) {
        let mut b = Vec::new();
        encode(&f, &mut b);
        let (kind, len) = header(&b).unwrap().unwrap();
        assert_eq!(len, b.len() - HEADER_LEN);
        assert_eq!(parse(kind, &b[HEADER_LEN..]).unwrap(), f, "{}", encode_hex(&b));
    }

    #[test]
    fn every_frame_type_both_ways() {
        let k = [7u8; 32];
        let k2 = [9u8; 32];
        for f in [
            Frame::ServerKey(k),
            Frame::ClientInfo { key: k, sealed: vec![1; 60] },
            Frame::ServerInfo(vec![2; 40]),
            Frame::SendPacket { dst: k, packet: vec![3; 1200] },
            Frame::RecvPacket { src: k, packet: vec![] },
            Frame::KeepAlive,
            Frame::NotePreferred(true),
            Frame::NotePreferred(false),
            Frame::PeerGone { key: k, reason: GONE_NOT_HERE },
            Frame::PeerPresent { key: k, addr: "203.0.113.5:41641".parse().unwrap(), flags: 3 },
            Frame::PeerPresent { key: k, addr: "[2001:db8::1]:7".parse().unwrap(), flags: 0 },
            Frame::ForwardPacket { src: k, dst: k2, packet: vec![4; 9] },
            Frame::WatchConns,
            Frame::ClosePeer(k2),
            Frame::Ping(*b"12345678"),
            Frame::Pong(*b"abcdefgh"),
            Frame::Health("no home".into()),
            Frame::Restarting { reconnect_ms: 500, try_for_ms: 10_000 },
        ] {
            round_trip(f);
        }
        assert_eq!(parse(0x7f, b"whatever").unwrap(), Frame::Unknown(0x7f));
        assert_eq!(recv_packet(&k, b"x"), {
            let mut b = Vec::new();
            encode(&Frame::RecvPacket { src: k, packet: b"x".to_vec() }, &mut b);
            b
        });
    }

    #[test]
    fn the_vectors_of_protocol_md() {
        let mut b = Vec::new();
        encode(&Frame::ServerKey([0xaa; 32]), &mut b);
        assert!(encode_hex(&b).starts_with("010000002844455250f09f9491"));
        let mut b = Vec::new();
        encode(&Frame::KeepAlive, &mut b);
        assert_eq!(encode_hex(&b), "0600000000");
        let mut b = Vec::new();
        encode(&Frame::NotePreferred(true), &mut b);
        assert_eq!(encode_hex(&b), "070000000101");
        let mut b = Vec::new();
        encode(&Frame::Pong(*b"\x01\x02\x03\x04\x05\x06\x07\x08"), &mut b);
        assert_eq!(encode_hex(&b), "13000000080102030405060708");
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(header(&[4, 0, 0]).unwrap(), None);
        assert!(header(&[4, 0x10, 0, 0, 0]).is_err(), "256 MiB");
        assert!(parse(SEND_PACKET, &[0; 31]).is_err());
        assert!(parse(SEND_PACKET, &vec![0; KEY_LEN + MAX_PACKET + 1]).is_err());
        assert!(parse(CLIENT_INFO, &[0; 40]).is_err());
        assert!(parse(SERVER_KEY, &[0; 40]).is_err(), "no magic");
        assert!(parse(PING, &[1, 2]).is_err());
        assert!(parse(PEER_PRESENT, &[0; 40]).is_err());
        assert!(parse(RESTARTING, &[0; 4]).is_err());
        assert_eq!(parse(PEER_GONE, &[1; 32]).unwrap(), Frame::PeerGone { key: [1; 32], reason: GONE_DISCONNECTED });
        assert!(is_disco(&[[0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac].as_slice(), &[0u8; 56]].concat()));
        assert!(!is_disco(b"TS"));
    }
}
