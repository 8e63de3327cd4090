//! A Rust Tailscale test client: the Noise initiator of the `noise` module
//! and hyper's HTTP/2 client inside it, speaking to tinyscale as tailscaled
//! does. Used by the protocol tests (including the bad-input ones) and the
//! benchmark.
#![allow(dead_code)]

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tinyscale::control::NoiseIo;
use tinyscale::noise::{self, Initiator, NoiseError};
use tinyscale::tailcfg::{MachinePublic, NodePublic};

pub const VERSION: u16 = 130;

pub fn key_of(private: &[u8; 32]) -> [u8; 32] {
    noise::public_key(private)
}

pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    tinyscale::state::secrets::random_bytes(&mut b).unwrap();
    b
}

pub fn node_key_text(private: &[u8; 32]) -> String {
    NodePublic(key_of(private)).to_string()
}

/// One plain HTTP/1.1 request on a fresh connection: (status, headers+body text).
pub async fn http1(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

pub async fn server_key(addr: &str) -> MachinePublic {
    let (status, text) =
        http1(addr, &format!("GET /key?v={VERSION} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    MachinePublic::parse(v["publicKey"].as_str().unwrap()).unwrap()
}

/// Sends the `/ts2021` upgrade with `init` as handshake; returns the stream
/// after the response headers, and the status.
pub async fn upgrade(addr: &str, init: &[u8]) -> (TcpStream, u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let req = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {}\r\nContent-Length: 0\r\n\r\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, init)
    );
    // A refused connection shows as status 0, not as a panic.
    if s.write_all(req.as_bytes()).await.is_err() {
        return (s, 0, String::new());
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (s, status, head)
}

pub struct Client {
    pub machine_private: [u8; 32],
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

#[derive(Debug)]
pub enum ConnectError {
    Http(u16, String),
    Noise(NoiseError),
    Io(String),
}

impl Client {
    pub async fn connect(addr: &str, server: MachinePublic, machine_private: [u8; 32]) -> Result<Client, ConnectError> {
        Self::connect_version(addr, server, machine_private, VERSION).await
    }

    pub async fn connect_version(
        addr: &str,
        server: MachinePublic,
        machine_private: [u8; 32],
        version: u16,
    ) -> Result<Client, ConnectError> {
        let (init, initiator) =
            Initiator::start(version, &machine_private, &random32(), &server.0).map_err(ConnectError::Noise)?;
        let (mut s, status, head) = upgrade(addr, &init).await;
        if status != 101 {
            return Err(ConnectError::Http(status, head));
        }
        let mut first = [0u8; 3];
        s.read_exact(&mut first).await.map_err(|e| ConnectError::Io(e.to_string()))?;
        let n = u16::from_be_bytes([first[1], first[2]]) as usize;
        let mut rest = vec![0u8; n];
        s.read_exact(&mut rest).await.map_err(|e| ConnectError::Io(e.to_string()))?;
        let msg: Vec<u8> = first.iter().copied().chain(rest).collect();
        let session = initiator.finish(&msg).map_err(ConnectError::Noise)?;
        let io = NoiseIo::new(s, session.rx, session.tx, Vec::new());
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { machine_private, send })
    }

    pub fn machine(&self) -> MachinePublic {
        MachinePublic(key_of(&self.machine_private))
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<hyper::Response<Incoming>, String> {
        let req = hyper::Request::post(format!("https://tinyscale{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.send.ready().await.map_err(|e| e.to_string())?;
        self.send.send_request(req).await.map_err(|e| e.to_string())
    }

    /// POSTs raw bytes (for garbage-JSON tests): (status, body text).
    pub async fn post_raw(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        let req = hyper::Request::post(format!("https://tinyscale{path}"))
            .body(Full::new(Bytes::from(body.to_vec())))
            .unwrap();
        self.send.ready().await.unwrap();
        let r = self.send.send_request(req).await.unwrap();
        let status = r.status().as_u16();
        let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&b).into_owned())
    }

    /// `/machine/register`: (status, JSON body or Null).
    pub async fn register(&mut self, req: &Value) -> (u16, Value) {
        let r = self.post("/machine/register", req).await.unwrap();
        let status = r.status().as_u16();
        let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// Registers `node_private` with a pre-auth key; the response JSON.
    pub async fn register_with_key(&mut self, node_private: &[u8; 32], auth_key: &str, hostname: &str) -> Value {
        let (status, v) = self
            .register(&serde_json::json!({
                "Version": VERSION,
                "NodeKey": node_key_text(node_private),
                "OldNodeKey": format!("nodekey:{}", "0".repeat(64)),
                "Auth": {"AuthKey": auth_key},
                "Expiry": "0001-01-01T00:00:00Z",
                "Hostinfo": {"Hostname": hostname, "OS": "linux"},
            }))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    pub fn map_request(node_private: &[u8; 32], stream: bool) -> Value {
        serde_json::json!({
            "Version": VERSION,
            "Compress": "zstd",
            "KeepAlive": true,
            "NodeKey": node_key_text(node_private),
            "DiscoKey": format!("discokey:{}", tinyscale::tailcfg::encode_hex(&random32())),
            "Stream": stream,
            "OmitPeers": !stream,
            "Hostinfo": {"Hostname": "test"},
            "Endpoints": ["192.0.2.9:41641"],
        })
    }

    /// Opens the map stream; Err carries a refusal's status and text.
    pub async fn map_stream(&mut self, req: &Value) -> Result<MapStream, (u16, String)> {
        let r = self.post("/machine/map", req).await.map_err(|e| (0, e))?;
        let status = r.status().as_u16();
        if status != 200 {
            let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err((status, String::from_utf8_lossy(&b).into_owned()));
        }
        Ok(MapStream { body: r.into_body(), buf: Vec::new() })
    }

    pub async fn lite(&mut self, req: &Value) -> u16 {
        let r = self.post("/machine/map", req).await.unwrap();
        let s = r.status().as_u16();
        let _ = r.into_body().collect().await;
        s
    }
}

pub struct MapStream {
    body: Incoming,
    buf: Vec<u8>,
}

/// Decodes a zstd frame made of raw blocks (all tinyscale sends).
pub fn unzstd(z: &[u8]) -> Vec<u8> {
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    let fcs_len = match z[4] >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut i = 5 + fcs_len;
    let mut out = Vec::new();
    loop {
        let h = u32::from_le_bytes([z[i], z[i + 1], z[i + 2], 0]);
        let n = (h >> 3) as usize;
        assert_eq!((h >> 1) & 3, 0, "raw block");
        out.extend_from_slice(&z[i + 3..i + 3 + n]);
        i += 3 + n;
        if h & 1 == 1 {
            return out;
        }
    }
}

impl MapStream {
    /// The next MapResponse, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() >= 4 + n {
                    let frame: Vec<u8> = self.buf.drain(..4 + n).skip(4).collect();
                    return Some(serde_json::from_slice(&unzstd(&frame)).expect("frame is JSON"));
                }
            }
            let f = self.body.frame().await?.ok()?;
            if let Ok(d) = f.into_data() {
                self.buf.extend_from_slice(&d);
            }
        }
    }

    /// The next message that is not a keep-alive, within `secs`.
    pub async fn next_update(&mut self, secs: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let m = tokio::time::timeout_at(deadline, self.next()).await.ok()??;
            if m.get("KeepAlive") != Some(&Value::Bool(true)) {
                return Some(m);
            }
        }
    }
}
