//! The adapter against tokio-rustls's client on loopback: the handshake,
//! traffic, closes, the peer's bad input, and the buffers an idle connection
//! keeps.

use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::client::TlsStream as Client;

use super::*;

// A throwaway self-signed P-256 certificate and key, for these tests only.
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlDCCATugAwIBAgIUD6h7cSVwe7rE7GYsXnJvZqMadSMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMjA5NDkwNVoYDzIxMjYxMTA4
MDk0OTA1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASVRBtLGfq1vaolsO7E3g6vZ7W/epyrhLaIufn7GXLBMskQJCFvtpsX
nd599PG6YO0KgMouBNYEqNs50TWMRu9Eo2kwZzAdBgNVHQ4EFgQUxT7x/TYnOVcC
D62w0sZ5nPtxMkgwHwYDVR0jBBgwFoAUxT7x/TYnOVcCD62w0sZ5nPtxMkgwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
RwAwRAIgefi6HkJz7nJrW9SxAXNb18PypUcquO4o+12EQst/PvACIEskeuffA9e7
0XhHNwbttQofcG3m7Wt+dALsxkvrWWl7
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1YAgSjN024zxoPCK
MmQhYVT0FdPLBpok0M8nf2KXAgOhRANCAASVRBtLGfq1vaolsO7E3g6vZ7W/epyr
hLaIufn7GXLBMskQJCFvtpsXnd599PG6YO0KgMouBNYEqNs50TWMRu9E
-----END PRIVATE KEY-----
";

fn cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap()
}

fn acceptor() -> TlsAcceptor {
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    crate::server::tls::acceptor_for(vec![cert()], key).unwrap()
}

/// Trusts exactly the test certificate, as the relay's clients pin it.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match end_entity.as_ref() == self.0.as_ref() {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::General("not the pinned certificate".into())),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &algs())
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &algs())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algs().supported_schemes()
    }
}

/// The signature algorithms ring offers rustls.
fn algs() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(cert())))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Our server and a tokio-rustls client, handshake done.
async fn pair_with(versions: &[&'static rustls::SupportedProtocolVersion]) -> (TlsStream, Client<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(versions));
    let client = async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
    };
    let server = async move { acceptor().accept(l.accept().await.unwrap().0).await.unwrap() };
    tokio::join!(server, client)
}

async fn pair() -> (TlsStream, Client<TcpStream>) {
    pair_with(rustls::DEFAULT_VERSIONS).await
}

/// Our server's handshake against a raw socket the test writes to.
async fn raw() -> (tokio::task::JoinHandle<Result<TlsStream, TlsError>>, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move { acceptor().accept(l.accept().await.unwrap().0).await });
    (server, TcpStream::connect(addr).await.unwrap())
}

/// The adapter's own error inside an I/O error.
fn tls_error(e: &io::Error) -> &TlsError {
    e.get_ref().and_then(|e| e.downcast_ref::<TlsError>()).unwrap_or_else(|| panic!("not a TlsError: {e:?}"))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn small_data_goes_both_ways() {
    let (mut s, mut c) = pair().await;
    c.write_all(b"hello").await.unwrap();
    c.flush().await.unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"hello");
    s.write_all(b"world").await.unwrap();
    s.flush().await.unwrap();
    c.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"world");
}

#[tokio::test]
async fn writes_larger_than_a_record_go_both_ways() {
    let (mut s, mut c) = pair().await;
    let big = pattern(100_000);
    // One write takes one record's worth.
    assert_eq!(s.write(&big).await.unwrap(), MAX_FRAGMENT);
    let mut first = vec![0u8; MAX_FRAGMENT];
    c.read_exact(&mut first).await.unwrap();
    assert_eq!(first, big[..MAX_FRAGMENT]);

    let up = async {
        c.write_all(&big).await.unwrap();
        c.flush().await.unwrap();
        let mut back = vec![0u8; big.len()];
        c.read_exact(&mut back).await.unwrap();
        back
    };
    let echo = async {
        let mut got = vec![0u8; big.len()];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.flush().await.unwrap();
        got
    };
    let (back, got) = tokio::join!(up, echo);
    assert!(got == big && back == big);
}

/// Writes `msgs` one by one on `w` (flushing each when `flush_each`, else
/// once at the end) while `r` reads them all; what `r` got.
async fn one_by_one(
    w: &mut (impl AsyncWrite + Unpin),
    r: &mut (impl AsyncRead + Unpin),
    msgs: &[Vec<u8>],
    flush_each: bool,
) -> Vec<u8> {
    let up = async {
        for m in msgs {
            w.write_all(m).await.unwrap();
            if flush_each {
                w.flush().await.unwrap();
            }
        }
        w.flush().await.unwrap();
    };
    let down = async {
        let mut got = vec![0u8; msgs.iter().map(Vec::len).sum()];
        r.read_exact(&mut got).await.unwrap();
        got
    };
    tokio::join!(up, down).1
}

#[tokio::test]
async fn many_small_writes_arrive_whole_and_in_order() {
    let (mut s, mut c) = pair().await;
    let msgs: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().repeat(2)).collect();
    let all: Vec<u8> = msgs.concat();
    assert_eq!(one_by_one(&mut c, &mut s, &msgs, true).await, all);
    assert_eq!(one_by_one(&mut s, &mut c, &msgs, false).await, all);
}

#[tokio::test]
async fn tls12_works_too() {
    let (mut s, mut c) = pair_with(&[&rustls::version::TLS12]).await;
    assert_eq!(c.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let big = pattern(40_000);
    let (r, ()) = tokio::join!(
        async {
            let mut got = vec![0u8; big.len()];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"ok").await.unwrap();
            s.flush().await.unwrap();
            got
        },
        async { c.write_all(&big).await.unwrap() }
    );
    assert_eq!(r, big);
    let mut b = [0u8; 2];
    c.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ok");
}

#[tokio::test]
async fn key_updates_keep_traffic_flowing() {
    let (mut s, mut c) = pair().await;
    for i in 0..3u8 {
        // The client asks for our keys to change as well as changing its own.
        c.get_mut().1.refresh_traffic_keys().unwrap();
        c.write_all(&[i; 100]).await.unwrap();
        c.flush().await.unwrap();
        let mut b = [0u8; 100];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [i; 100]);
        s.write_all(&[i + 10; 100]).await.unwrap();
        s.flush().await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [i + 10; 100]);
    }
}

#[tokio::test]
async fn a_peers_close_notify_ends_reads_and_leaves_writes() {
    let (mut s, mut c) = pair().await;
    c.write_all(b"last").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last");
    assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "the end stays the end");
    s.write_all(b"reply").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"reply");
}

#[tokio::test]
async fn shutdown_sends_close_notify() {
    let (mut s, mut c) = pair().await;
    s.shutdown().await.unwrap();
    // tokio-rustls reads a clean end only after a close_notify.
    assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);
    assert_eq!(s.write(b"late").await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);

    // Without one, the client sees the connection cut short.
    let (s, mut c) = pair().await;
    drop(s);
    assert_eq!(c.read(&mut [0u8; 8]).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn an_end_without_close_notify_is_an_error() {
    let (mut s, c) = pair().await;
    let (mut tcp, _) = c.into_inner();
    tcp.shutdown().await.unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(matches!(tls_error(&e), TlsError::NoCloseNotify));
}

#[tokio::test]
async fn an_end_inside_a_record_is_truncation() {
    let (mut s, c) = pair().await;
    let (mut tcp, _) = c.into_inner();
    tcp.write_all(&[0x17, 3, 3, 0, 100]).await.unwrap();
    tcp.write_all(&[0u8; 40]).await.unwrap();
    tcp.shutdown().await.unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert!(matches!(tls_error(&e), TlsError::Truncated), "{e}");

    // And inside the client's first flight.
    let (server, mut tcp) = raw().await;
    tcp.write_all(&[0x16, 3, 1, 0, 200, 1, 0]).await.unwrap();
    tcp.shutdown().await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(TlsError::Truncated)));
}

#[tokio::test]
async fn an_oversized_record_length_is_refused() {
    let (mut s, c) = pair().await;
    let (mut tcp, _) = c.into_inner();
    tcp.write_all(&[0x17, 3, 3, 0xff, 0xff]).await.unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(tls_error(&e), TlsError::Tls(rustls::Error::InvalidMessage(_))), "{e}");
    assert!(s.read(&mut [0u8; 8]).await.is_err(), "a broken connection stays broken");

    let (server, mut tcp) = raw().await;
    tcp.write_all(&[0x16, 3, 1, 0xff, 0xff]).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(TlsError::Tls(rustls::Error::InvalidMessage(_)))));
}

#[tokio::test]
async fn a_handshake_message_over_64_kib_is_refused() {
    // A ClientHello that says it is 65,520 bytes long, in 16,000-byte records:
    // with their headers, more than rustls's 64 KiB may wait.
    let (server, mut tcp) = raw().await;
    let mut msg = vec![1, 0x00, 0xff, 0xf0];
    msg.resize(4 + 0xfff0, 0);
    let mut wire = Vec::new();
    for chunk in msg.chunks(16_000) {
        wire.extend_from_slice(&[0x16, 3, 1]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    let _ = tcp.write_all(&wire).await;
    match server.await.unwrap() {
        Err(TlsError::TooLarge { limit }) => assert_eq!(limit, MAX_HANDSHAKE),
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn garbage_is_refused_with_an_alert() {
    let (server, mut tcp) = raw().await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(TlsError::Tls(_))));
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");

    // After the handshake, a record that does not decrypt.
    let (mut s, c) = pair().await;
    let (mut tcp, _) = c.into_inner();
    let mut bad = vec![0x17, 3, 3, 0, 64];
    bad.extend_from_slice(&pattern(64));
    tcp.write_all(&bad).await.unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert!(matches!(tls_error(&e), TlsError::Tls(rustls::Error::DecryptError)), "{e}");
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer() {
    let (mut s, mut c) = pair().await;
    assert_eq!(s.buffer_capacities(), (0, 0, 0), "after the handshake");

    // The caller reads in small pieces, as the relay reads frame headers:
    // the rest of a record waits, then goes.
    c.write_all(&pattern(1000)).await.unwrap();
    c.flush().await.unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    assert!(s.buffer_capacities().2 > 0);
    let mut rest = vec![0u8; 995];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!([&head[..], &rest].concat(), pattern(1000));

    let big = pattern(50_000);
    let (got, ()) = tokio::join!(
        async {
            let mut got = vec![0u8; big.len()];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.flush().await.unwrap();
            got
        },
        async {
            c.write_all(&big).await.unwrap();
            c.flush().await.unwrap();
            let mut back = vec![0u8; big.len()];
            c.read_exact(&mut back).await.unwrap();
        }
    );
    assert_eq!(got, big);

    // Parked in a read with nothing coming: nothing held.
    let parked = tokio::time::timeout(Duration::from_millis(50), s.read(&mut [0u8; 64])).await;
    assert!(parked.is_err(), "nothing was sent");
    assert_eq!(s.buffer_capacities(), (0, 0, 0));

    // Half a record waits in a buffer sized to what came, not to the 16 KiB
    // its header claims: five bytes must not buy a record's worth.
    let (mut s, c) = pair().await;
    let (mut tcp, _) = c.into_inner();
    tcp.write_all(&[0x17, 3, 3, 0x40, 0]).await.unwrap();
    tcp.write_all(&[0u8; 100]).await.unwrap();
    let parked = tokio::time::timeout(Duration::from_millis(50), s.read(&mut [0u8; 64])).await;
    assert!(parked.is_err());
    let (incoming, _, _) = s.buffer_capacities();
    assert!((105..=READ_SIZE).contains(&incoming), "{incoming}");
}

#[tokio::test]
async fn many_tiny_records_in_one_read_arrive_in_order() {
    use std::io::Write;
    let (mut s, c) = pair().await;
    let (mut tcp, mut conn) = c.into_inner();
    // 600 records of one byte each (about 13 KiB on the wire), in one write.
    let msg = pattern(600);
    for b in msg.chunks(1) {
        conn.writer().write_all(b).unwrap();
    }
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    assert!(wire.len() > 600 * 20, "one record a byte: {}", wire.len());
    tcp.write_all(&wire).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
    let (incoming, _, _) = s.buffer_capacities();
    assert!(incoming <= MAX_RECORD, "{incoming}");
}

#[tokio::test]
async fn a_record_trickled_byte_by_byte_arrives_whole() {
    use std::io::Write;
    let (mut s, c) = pair().await;
    let (mut tcp, mut conn) = c.into_inner();
    tcp.set_nodelay(true).unwrap();
    let msg = pattern(20_000);
    conn.writer().write_all(&msg).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    let send = async {
        for b in wire.chunks(1) {
            tcp.write_all(b).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let recv = async {
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(send, recv);
    assert_eq!(got, msg);
}
