//! Tokens signed in the test with keys made in the test (RSA by openssl,
//! the rest by ring).

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::json;

use super::*;

fn encode_url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

const ISS: &str = "http://127.0.0.1:9000/application/o/tinyscale/";
const CLIENT: &str = "tinyscale";
const SECRET: &[u8] = b"tinyscale-test-secret-0123456789abcdef";

fn rsa_key() -> RsaKeyPair {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-outform", "DER"])
        .output()
        .expect("openssl is required for the RSA tests");
    assert!(out.status.success());
    // genpkey writes the PKCS#1 RSAPrivateKey form here.
    RsaKeyPair::from_der(&out.stdout).unwrap()
}

fn rsa_jwk(k: &RsaKeyPair, kid: &str) -> Jwk {
    let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
    Jwk { kid: Some(kid.into()), alg: None, key: KeyMaterial::Rsa { n: c.n, e: c.e } }
}

fn claims(now: i64) -> serde_json::Value {
    json!({"iss": ISS, "sub": "abc123", "aud": CLIENT, "exp": now + 300, "iat": now, "nonce": "n-1",
           "email": "alice@example.com", "email_verified": true, "groups": ["/headscale", "admins"]})
}

fn token(header: serde_json::Value, payload: &serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", encode_url(header.to_string().as_bytes()), encode_url(payload.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", encode_url(&sig))
}

fn rs(k: &RsaKeyPair, alg: &str, kid: &str, p: &serde_json::Value) -> String {
    let enc: &'static dyn ring::signature::RsaEncoding = match alg {
        "RS256" => &ring::signature::RSA_PKCS1_SHA256,
        "PS256" => &ring::signature::RSA_PSS_SHA256,
        "RS512" => &ring::signature::RSA_PKCS1_SHA512,
        _ => unreachable!(),
    };
    token(json!({"alg": alg, "kid": kid}), p, |m| {
        let mut sig = vec![0; k.public().modulus_len()];
        k.sign(enc, &SystemRandom::new(), m, &mut sig).unwrap();
        sig
    })
}

fn hs(secret: &[u8], p: &serde_json::Value) -> String {
    token(json!({"alg": "HS256"}), p, |m| {
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), m).as_ref().to_vec()
    })
}

fn expect(now: i64) -> Expect<'static> {
    Expect { issuer: ISS, client_id: CLIENT, nonce: "n-1", now, leeway: 60, clock_sane: true }
}

const NOW: i64 = 1_900_000_000;

#[test]
fn every_supported_algorithm_verifies() {
    let rsa = rsa_key();
    let keys = vec![rsa_jwk(&rsa, "r1")];
    let p = claims(NOW);
    for alg in ["RS256", "PS256", "RS512"] {
        let c = verify(&rs(&rsa, alg, "r1", &p), &keys, SECRET, &expect(NOW)).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(c.sub, "abc123");
        assert_eq!(c.groups.0, ["/headscale", "admins"]);
    }
    let rng = SystemRandom::new();
    for (alg, curve) in [
        ("ES256", &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        ("ES384", &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING),
    ] {
        let pk = EcdsaKeyPair::generate_pkcs8(curve, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(curve, pk.as_ref(), &rng).unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let key = if alg == "ES256" { KeyMaterial::P256(point) } else { KeyMaterial::P384(point) };
        let keys = vec![Jwk { kid: Some("e1".into()), alg: Some(alg.into()), key }];
        let t = token(json!({"alg": alg, "kid": "e1"}), &p, |m| kp.sign(&rng, m).unwrap().as_ref().to_vec());
        verify(&t, &keys, SECRET, &expect(NOW)).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    let pk = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(pk.as_ref()).unwrap();
    let keys = vec![Jwk { kid: None, alg: None, key: KeyMaterial::Ed25519(kp.public_key().as_ref().to_vec()) }];
    let t = token(json!({"alg": "EdDSA"}), &p, |m| kp.sign(m).as_ref().to_vec());
    verify(&t, &keys, SECRET, &expect(NOW)).unwrap();
    // HS256 with the client secret (authentik without a signing key): no JWKS at all.
    verify(&hs(SECRET, &p), &[], SECRET, &expect(NOW)).unwrap();
}

#[test]
fn forgeries_are_refused() {
    let rsa = rsa_key();
    let other = rsa_key();
    let keys = vec![rsa_jwk(&rsa, "r1")];
    let p = claims(NOW);
    // Signed by another key under the same kid.
    assert_eq!(verify(&rs(&other, "RS256", "r1", &p), &keys, SECRET, &expect(NOW)).err(), Some(JwtError::BadSignature));
    // alg: none.
    let none = format!("{}.{}.", encode_url(br#"{"alg":"none"}"#), encode_url(p.to_string().as_bytes()));
    assert!(matches!(verify(&none, &keys, SECRET, &expect(NOW)), Err(JwtError::Unsupported(_))));
    // HS256 "signed" with the RSA public key as the secret (algorithm confusion).
    let KeyMaterial::Rsa { n, .. } = &keys[0].key else { unreachable!() };
    assert_eq!(verify(&hs(n, &p), &keys, SECRET, &expect(NOW)).err(), Some(JwtError::BadSignature));
    // HS256 with the wrong secret.
    assert_eq!(verify(&hs(b"not-the-secret", &p), &keys, SECRET, &expect(NOW)).err(), Some(JwtError::BadSignature));
    // A tampered payload.
    let good = rs(&rsa, "RS256", "r1", &p);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut evil = p.clone();
    evil["sub"] = json!("admin");
    parts[1] = encode_url(evil.to_string().as_bytes());
    assert_eq!(verify(&parts.join("."), &keys, SECRET, &expect(NOW)).err(), Some(JwtError::BadSignature));
    // A kid the JWKS does not have (the caller refetches once).
    assert_eq!(
        verify(&rs(&rsa, "RS256", "r9", &p), &keys, SECRET, &expect(NOW)).err(),
        Some(JwtError::UnknownKey("r9".into()))
    );
    // ES512 is refused with a reason.
    let es512 = token(json!({"alg": "ES512"}), &p, |_| vec![1, 2, 3]);
    match verify(&es512, &keys, SECRET, &expect(NOW)) {
        Err(JwtError::Unsupported(m)) => assert!(m.contains("P-521"), "{m}"),
        other => panic!("{other:?}"),
    }
    for bad in ["", "a.b", "a.b.c.d.e", "!!.??.**"] {
        assert!(matches!(verify(bad, &keys, SECRET, &expect(NOW)), Err(JwtError::Malformed(_))), "{bad}");
    }
}

#[test]
fn claims_must_fit() {
    let rsa = rsa_key();
    let keys = vec![rsa_jwk(&rsa, "r1")];
    let check = |p: serde_json::Value| verify(&rs(&rsa, "RS256", "r1", &p), &keys, SECRET, &expect(NOW));
    let mut p = claims(NOW);
    p["iss"] = json!("http://127.0.0.1:9000/application/o/tinyscale");
    assert!(matches!(check(p), Err(JwtError::Claim(m)) if m.contains("issuer")), "the trailing slash matters");
    let mut p = claims(NOW);
    p["aud"] = json!("someone-else");
    assert!(matches!(check(p), Err(JwtError::Claim(m)) if m.contains("audience")));
    let mut p = claims(NOW);
    p["aud"] = json!([CLIENT, "other"]);
    assert!(matches!(check(p.clone()), Err(JwtError::Claim(m)) if m.contains("azp")));
    p["azp"] = json!(CLIENT);
    assert!(check(p).is_ok());
    let mut p = claims(NOW);
    p["exp"] = json!(NOW - 120);
    assert!(matches!(check(p), Err(JwtError::Claim(m)) if m.contains("expired")));
    let mut p = claims(NOW);
    p["exp"] = json!(NOW - 30);
    assert!(check(p).is_ok(), "within the leeway");
    let mut p = claims(NOW);
    p["nonce"] = json!("n-2");
    assert!(matches!(check(p), Err(JwtError::Claim(m)) if m.contains("nonce")));
    let mut p = claims(NOW);
    p.as_object_mut().unwrap().remove("nonce");
    assert!(check(p).is_err());
    let mut p = claims(NOW);
    p["iat"] = json!(NOW + 3600);
    assert!(matches!(check(p.clone()), Err(JwtError::Claim(m)) if m.contains("future")));
    // A router still in 1970 cannot judge times and does not try.
    let e = Expect { clock_sane: false, ..expect(50) };
    assert!(verify(&rs(&rsa, "RS256", "r1", &p), &keys, SECRET, &e).is_ok());
}

#[test]
fn quirky_claims_parse() {
    let c: Claims =
        serde_json::from_value(json!({"email_verified": "true", "groups": "headscale", "exp": 1.9e9})).unwrap();
    assert!(c.email_verified.0);
    assert_eq!(c.groups.0, ["headscale"]);
    assert_eq!(c.exp, Some(1_900_000_000));
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB", "use": "sig"},
        {"kty": "RSA", "kid": "enc", "n": "AQAB", "e": "AQAB", "use": "enc"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "oct", "k": "AA"}
    ]});
    let keys = parse_jwks(&jwks);
    assert_eq!(keys.len(), 1);
    assert!(parse_jwks(&json!({})).is_empty());
}
