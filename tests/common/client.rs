//! A Rust Tailscale test client: the Noise initiator of the `noise` module
//! and hyper's HTTP/2 client inside it, speaking to tinyscale as tailscaled
//! does. Used by the protocol tests (including the bad-input ones) and the
//! benchmark.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use tinyscale::control::NoiseIo;
use tinyscale::noise::{self, Initiator, NoiseError};
use tinyscale::tailcfg::{MachinePublic, NodePublic};

pub const VERSION: u16 = 130;

pub fn key_of(private: &[u8; 32]) -> [u8; 32] {
    noise::public_key(private)
}

pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    tinyscale::secrets::random_bytes(&mut b).unwrap();
    b
}

pub fn node_key_text(private: &[u8; 32]) -> String {
    NodePublic(key_of(private)).to_string()
}

/// A TCP connection to `addr` from the local address `local` (any
/// 127.0.0.0/8 address works on loopback): a different source for the
/// server's per-address caps.
pub async fn tcp_from(addr: &str, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else { return TcpStream::connect(addr).await };
    let to: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let sock = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.bind(SocketAddr::new(local, 0))?;
    sock.connect(to).await
}

/// One plain HTTP/1.1 request on a fresh connection: (status, headers+body text).
pub async fn http1(addr: &str, request: &str) -> (u16, String) {
    http1_from(addr, None, request).await
}

/// [`http1`] from the local address `local`; status 0 when the server closed at once.
pub async fn http1_from(addr: &str, local: Option<IpAddr>, request: &str) -> (u16, String) {
    let Ok(mut s) = tcp_from(addr, local).await else { return (0, String::new()) };
    if s.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
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
    upgrade_from(addr, init, None).await
}

/// [`upgrade`] from the local address `local`.
pub async fn upgrade_from(addr: &str, init: &[u8], local: Option<IpAddr>) -> (TcpStream, u16, String) {
    upgrade_on(tcp_from(addr, local).await.unwrap(), addr, init).await
}

/// The upgrade on a connected stream.
pub async fn upgrade_on(mut s: TcpStream, addr: &str, init: &[u8]) -> (TcpStream, u16, String) {
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

/// Request bodies: whole, or streamed from a channel.
pub type ReqBody = BoxBody<Bytes, Infallible>;

fn whole(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).boxed()
}

/// A request body fed through a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub struct Client {
    pub machine_private: [u8; 32],
    send: hyper::client::conn::http2::SendRequest<ReqBody>,
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
        Self::connect_with(addr, server, machine_private, version, None).await
    }

    /// Connects from the local address `local` (a different source to the server).
    pub async fn connect_from(
        addr: &str,
        server: MachinePublic,
        machine_private: [u8; 32],
        local: IpAddr,
    ) -> Result<Client, ConnectError> {
        Self::connect_with(addr, server, machine_private, VERSION, Some(local)).await
    }

    async fn connect_with(
        addr: &str,
        server: MachinePublic,
        machine_private: [u8; 32],
        version: u16,
        local: Option<IpAddr>,
    ) -> Result<Client, ConnectError> {
        let (init, initiator) =
            Initiator::start(version, &machine_private, &random32(), &server.0).map_err(ConnectError::Noise)?;
        let s = tcp_from(addr, local).await.map_err(|e| ConnectError::Io(e.to_string()))?;
        let (mut s, status, head) = upgrade_on(s, addr, &init).await;
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
            .body(whole(body.to_string()))
            .unwrap();
        self.send.ready().await.map_err(|e| e.to_string())?;
        self.send.send_request(req).await.map_err(|e| e.to_string())
    }

    /// POSTs raw bytes (for garbage-JSON tests): (status, body text).
    pub async fn post_raw(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        let req = hyper::Request::post(format!("https://tinyscale{path}")).body(whole(body.to_vec())).unwrap();
        self.send.ready().await.unwrap();
        let r = self.send.send_request(req).await.unwrap();
        let status = r.status().as_u16();
        let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&b).into_owned())
    }

    /// Starts a POST whose body is whatever is sent through the returned
    /// channel, declared `content_length` long (or not at all); it ends only
    /// when the sender is dropped. The task answers the status (0: refused
    /// or reset by the server).
    pub fn post_streaming(
        &self,
        path: &str,
        content_length: Option<u64>,
    ) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<u16>) {
        let (tx, rx) = mpsc::channel(4);
        let mut req = hyper::Request::post(format!("https://tinyscale{path}"));
        if let Some(n) = content_length {
            req = req.header("content-length", n);
        }
        let req = req.body(ChannelBody(rx).boxed()).unwrap();
        let mut send = self.send.clone();
        let task = tokio::spawn(async move {
            if send.ready().await.is_err() {
                return 0;
            }
            match send.send_request(req).await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        });
        (tx, task)
    }

    /// `/machine/register`: (status, JSON body or Null).
    pub async fn register(&mut self, req: &Value) -> (u16, Value) {
        self.try_register(req).await.unwrap()
    }

    /// `/machine/register` where the server may go away: Err when the
    /// connection broke before a whole answer arrived.
    pub async fn try_register(&mut self, req: &Value) -> Result<(u16, Value), String> {
        let r = self.post("/machine/register", req).await?;
        let status = r.status().as_u16();
        let b = r.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, serde_json::from_slice(&b).unwrap_or(Value::Null)))
    }

    /// A RegisterRequest with a pre-auth key, as tailscaled sends it.
    pub fn register_request(node_private: &[u8; 32], auth_key: &str, hostname: &str) -> Value {
        serde_json::json!({
            "Version": VERSION,
            "NodeKey": node_key_text(node_private),
            "OldNodeKey": format!("nodekey:{}", "0".repeat(64)),
            "Auth": {"AuthKey": auth_key},
            "Expiry": "0001-01-01T00:00:00Z",
            "Hostinfo": {"Hostname": hostname, "OS": "linux"},
        })
    }

    /// Registers `node_private` with a pre-auth key; the response JSON.
    pub async fn register_with_key(&mut self, node_private: &[u8; 32], auth_key: &str, hostname: &str) -> Value {
        let (status, v) = self.register(&Self::register_request(node_private, auth_key, hostname)).await;
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

/// Decodes one whole zstd frame (tinyscale sends raw blocks or, with
/// `tuning.compress_maps`, compressed ones) with ruzstd's decoder.
/// The map message a frame of the map stream carries.
pub fn map_json(frame: &[u8]) -> Value {
    serde_json::from_slice(&unzstd(frame)).expect("frame is JSON")
}

pub fn unzstd(z: &[u8]) -> Vec<u8> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    let mut input = z;
    let mut d = FrameDecoder::new();
    d.init(&mut input).expect("a zstd frame header");
    d.decode_blocks(&mut input, BlockDecodingStrategy::All).expect("zstd blocks");
    assert!(d.is_finished() && input.is_empty(), "exactly one whole zstd frame");
    d.collect().unwrap_or_default()
}

impl MapStream {
    /// The next MapResponse, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Value> {
        let frame = self.next_frame().await?;
        Some(map_json(&frame))
    }

    /// The next frame as it came (zstd), without its length prefix.
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() >= 4 + n {
                    let frame = self.buf[4..4 + n].to_vec();
                    self.buf.drain(..4 + n);
                    return Some(frame);
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

/// A registered node with an open map stream and its first map.
pub struct Joined {
    pub client: Client,
    pub node: [u8; 32],
    pub stream: MapStream,
    pub first: Value,
}

impl Joined {
    pub fn id(&self) -> u64 {
        self.first["Node"]["ID"].as_u64().expect("the first map has the node's ID")
    }
}

/// Registers a new machine with `auth` and opens its map stream.
pub async fn join(addr: &str, auth: &str, hostname: &str) -> Joined {
    let server = server_key(addr).await;
    let mut c = Client::connect(addr, server, random32()).await.unwrap();
    let node = random32();
    let r = c.register_with_key(&node, auth, hostname).await;
    assert_eq!(r["MachineAuthorized"], true, "{r}");
    let mut stream = c.map_stream(&Client::map_request(&node, true)).await.unwrap();
    let first = stream.next().await.unwrap();
    Joined { client: c, node, stream, first }
}
