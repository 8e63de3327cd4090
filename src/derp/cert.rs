//! The relay's self-signed certificate, for a router without a domain:
//! ECDSA P-256 with ring, the DER written here (a few lines of ASN.1 beat a
//! certificate crate in flash). Clients pin it by the SHA-256 of its DER in
//! the DERP map's `CertName` (`sha256-raw:<hex>`), so its names and dates
//! are never checked by them; it is valid from 1970 to 2099 anyway, because a
//! router may boot in 1970.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use crate::tailcfg::encode_hex;

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn oid(dotted: &[u64]) -> Vec<u8> {
    let mut body = vec![(dotted[0] * 40 + dotted[1]) as u8];
    for &n in &dotted[2..] {
        let mut chunk = vec![(n & 0x7f) as u8];
        let mut v = n >> 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    der(0x06, &body)
}

fn name(cn: &str) -> Vec<u8> {
    // Name ::= SEQUENCE OF SET OF AttributeTypeAndValue { commonName, UTF8String }
    seq(&[der(0x31, &seq(&[oid(&[2, 5, 4, 3]), der(0x0c, cn.as_bytes())]))])
}

/// A certificate and its private key (PKCS#8), both DER.
pub struct SelfSigned {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl SelfSigned {
    /// `sha256-raw:<hex>`, the pin clients check.
    pub fn pin(&self) -> String {
        pin_of(&self.cert)
    }
}

pub fn pin_of(cert_der: &[u8]) -> String {
    format!("sha256-raw:{}", encode_hex(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref()))
}

#[derive(Debug)]
pub struct CertError;

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not make the relay's certificate (no randomness?)")
    }
}

/// A fresh self-signed certificate for `host` (a DNS name or an IP address).
pub fn generate(host: &str) -> Result<SelfSigned, CertError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(|_| CertError)?;
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).map_err(|_| CertError)?;
    let mut serial = [0u8; 16];
    crate::secrets::random_bytes(&mut serial).map_err(|_| CertError)?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and no leading zero byte
    let ecdsa_sha256 = seq(&[oid(&[1, 2, 840, 10045, 4, 3, 2])]);
    let spki = seq(&[
        seq(&[oid(&[1, 2, 840, 10045, 2, 1]), oid(&[1, 2, 840, 10045, 3, 1, 7])]),
        der(0x03, &[&[0u8][..], pair.public_key().as_ref()].concat()),
    ]);
    let san_entry = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => der(0x87, &a.octets()),
        Ok(std::net::IpAddr::V6(a)) => der(0x87, &a.octets()),
        Err(_) => der(0x82, host.as_bytes()),
    };
    let san = seq(&[oid(&[2, 5, 29, 17]), der(0x04, &seq(&[san_entry]))]);
    let tbs = seq(&[
        der(0xa0, &der(0x02, &[2])), // v3
        der(0x02, &serial),
        ecdsa_sha256.clone(),
        name(host),
        seq(&[der(0x17, b"700101000000Z"), der(0x18, b"20991231235959Z")]),
        name(host),
        spki,
        der(0xa3, &seq(&[san])),
    ]);
    let sig = pair.sign(&rng, &tbs).map_err(|_| CertError)?;
    let cert = seq(&[tbs, ecdsa_sha256, der(0x03, &[&[0u8][..], sig.as_ref()].concat())]);
    Ok(SelfSigned { cert, key: pkcs8.as_ref().to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_reads_it_and_rustls_serves_it() {
        let c = generate("router.lan").unwrap();
        assert!(c.pin().starts_with("sha256-raw:") && c.pin().len() == 11 + 64);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.der");
        std::fs::write(&p, &c.cert).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&p)
            .output()
            .expect("openssl is required for this test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("CN = router.lan") && text.contains("DNS:router.lan"), "{text}");
        assert!(text.contains("Jan  1 00:00:00 1970 GMT") && text.contains("Dec 31 23:59:59 2099 GMT"), "{text}");
        // The signature verifies against its own key.
        let pem =
            std::process::Command::new("openssl").args(["x509", "-inform", "DER", "-in"]).arg(&p).output().unwrap();
        std::fs::write(dir.path().join("c.pem"), &pem.stdout).unwrap();
        let v = std::process::Command::new("openssl")
            .args(["verify", "-no_check_time", "-CAfile"])
            .arg(dir.path().join("c.pem"))
            .arg(dir.path().join("c.pem"))
            .output()
            .unwrap();
        assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
        // rustls accepts it with its key.
        let certs = vec![rustls::pki_types::CertificateDer::from(c.cert.clone())];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key.clone().into());
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let ip = generate("192.0.2.1").unwrap();
        std::fs::write(&p, &ip.cert).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("IP Address:192.0.2.1"));
    }
}
