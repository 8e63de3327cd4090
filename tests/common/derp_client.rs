//! A DERP client for tests and the benchmark: the HTTP upgrade, the NaCl
//! handshake and frames, over plain TCP or TLS pinned by `sha256-raw:`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use tinyscale::derp::frame::{self, Frame, Key};
use tinyscale::derp::handshake;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct DerpClient {
    pub io: Box<dyn Io>,
    pub private: [u8; 32],
    pub public: Key,
    pub server: Key,
}

/// Accepts exactly the certificate whose SHA-256 is pinned, as Tailscale's
/// `sha256-raw:` CertName does.
#[derive(Debug)]
struct Pin(String);

impl rustls::client::danger::ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if tinyscale::derp::cert::pin_of(end_entity) == self.0 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate does not match the pin".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

pub async fn tls(addr: &str, pin: &str) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pin(pin.to_string())))
        .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let s = conn.connect(name, tcp).await.map_err(|e| e.to_string())?;
    Ok(Box::new(s))
}

pub async fn plain(addr: &str) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    Ok(Box::new(tcp))
}

/// Sends the upgrade request; returns the status line and headers.
pub async fn upgrade(io: &mut Box<dyn Io>) -> Result<String, String> {
    io.write_all(b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut b).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!("closed during the upgrade: {}", String::from_utf8_lossy(&head)));
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

pub async fn write(io: &mut Box<dyn Io>, f: &Frame) -> std::io::Result<()> {
    let mut b = Vec::new();
    frame::encode(f, &mut b);
    io.write_all(&b).await?;
    io.flush().await
}

pub async fn read(io: &mut Box<dyn Io>) -> std::io::Result<Frame> {
    let mut h = [0u8; frame::HEADER_LEN];
    io.read_exact(&mut h).await?;
    let (kind, len) = frame::header(&h).map_err(|e| std::io::Error::other(e.to_string()))?.unwrap();
    let mut p = vec![0u8; len];
    io.read_exact(&mut p).await?;
    frame::parse(kind, &p).map_err(|e| std::io::Error::other(e.to_string()))
}

impl DerpClient {
    /// Upgrades `io` and runs the handshake with `private` as the node key.
    pub async fn handshake(mut io: Box<dyn Io>, private: [u8; 32]) -> Result<DerpClient, String> {
        let head = upgrade(&mut io).await?;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        let Frame::ServerKey(server) = read(&mut io).await.map_err(|e| e.to_string())? else {
            return Err("no server key".into());
        };
        let public = tinyscale::noise::public_key(&private);
        let sealed = handshake::seal(&private, &server, [7; 24], br#"{"version":2,"CanAckPings":true}"#);
        write(&mut io, &Frame::ClientInfo { key: public, sealed }).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), read(&mut io)).await {
            Ok(Ok(Frame::ServerInfo(sealed))) => {
                let info = handshake::open(&private, &server, &sealed).map_err(|e| e.to_string())?;
                assert_eq!(info, br#"{"version":2}"#);
            }
            Ok(Ok(other)) => return Err(format!("expected ServerInfo, got {other:?}")),
            Ok(Err(e)) => return Err(format!("refused: {e}")),
            Err(_) => return Err("no ServerInfo".into()),
        }
        Ok(DerpClient { io, private, public, server })
    }

    pub async fn send(&mut self, dst: &Key, packet: &[u8]) -> std::io::Result<()> {
        write(&mut self.io, &Frame::SendPacket { dst: *dst, packet: packet.to_vec() }).await
    }

    /// The next frame that is not a keep-alive, within `secs`.
    pub async fn next(&mut self, secs: u64) -> Option<Frame> {
        loop {
            match tokio::time::timeout(Duration::from_secs(secs), read(&mut self.io)).await {
                Ok(Ok(Frame::KeepAlive)) => continue,
                Ok(Ok(f)) => return Some(f),
                _ => return None,
            }
        }
    }
}
