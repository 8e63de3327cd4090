//! ID tokens: parsing, signature verification with ring, and the claim
//! checks of OpenID Connect Core §3.1.3.7. Pure: keys, secrets, the expected
//! values and the time all come in as arguments.

use std::fmt;

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// JOSE's base64url: URL-safe alphabet, no padding (RFC 7515 §2).
fn decode_url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    /// `none`, ES512 (ring has no P-521) or an algorithm nobody should use.
    Unsupported(String),
    /// No key in the JWKS has this id: refetch the JWKS once.
    UnknownKey(String),
    NoMatchingKey(String),
    BadSignature,
    Claim(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(w) => write!(f, "the ID token is malformed ({w})"),
            JwtError::Unsupported(a) => write!(f, "the ID token's algorithm is not accepted: {a}"),
            JwtError::UnknownKey(k) => write!(f, "no key {k:?} in the provider's JWKS"),
            JwtError::NoMatchingKey(a) => write!(f, "the provider's JWKS has no key for {a}"),
            JwtError::BadSignature => f.write_str("the ID token's signature does not verify"),
            JwtError::Claim(m) => write!(f, "the ID token is not valid here: {m}"),
        }
    }
}

impl std::error::Error for JwtError {}

#[derive(Deserialize, Debug)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// A token split into its parts; nothing is trusted yet.
pub struct Jwt {
    pub header: Header,
    pub payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
}

pub fn parse(token: &str) -> Result<Jwt, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not three dot-separated parts (JWE is not supported)"));
    };
    let header: Header =
        decode_url(h).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed("header"))?;
    Ok(Jwt {
        header,
        payload: decode_url(p).ok_or(JwtError::Malformed("payload"))?,
        signing_input: format!("{h}.{p}"),
        signature: decode_url(s).ok_or(JwtError::Malformed("signature"))?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point (`04 || x || y`).
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub key: KeyMaterial,
}

/// The signing keys of a JWKS document; keys we cannot use (encryption
/// keys, P-521, unknown types) are skipped. authentik's "no key" mode
/// serves `{}`, which is simply no keys.
pub fn parse_jwks(doc: &Value) -> Vec<Jwk> {
    let b = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).and_then(decode_url);
    let mut out = Vec::new();
    for k in doc.get("keys").and_then(Value::as_array).into_iter().flatten() {
        if k.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (k.get("kty").and_then(Value::as_str), k.get("crv").and_then(Value::as_str)) {
            (Some("RSA"), _) => match (b(k, "n"), b(k, "e")) {
                (Some(n), Some(e)) => KeyMaterial::Rsa { n, e },
                _ => continue,
            },
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => match (b(k, "x"), b(k, "y")) {
                (Some(x), Some(y)) => {
                    let point: Vec<u8> = [vec![4u8], x, y].concat();
                    if crv == "P-256" {
                        KeyMaterial::P256(point)
                    } else {
                        KeyMaterial::P384(point)
                    }
                }
                _ => continue,
            },
            (Some("OKP"), Some("Ed25519")) => match b(k, "x") {
                Some(x) => KeyMaterial::Ed25519(x),
                None => continue,
            },
            _ => continue,
        };
        out.push(Jwk {
            kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
            alg: k.get("alg").and_then(Value::as_str).map(str::to_string),
            key,
        });
    }
    out
}

enum Family {
    Rsa(&'static signature::RsaParameters),
    P256,
    P384,
    Ed25519,
}

fn fits(family: &Family, key: &KeyMaterial) -> bool {
    matches!(
        (family, key),
        (Family::Rsa(_), KeyMaterial::Rsa { .. })
            | (Family::P256, KeyMaterial::P256(_))
            | (Family::P384, KeyMaterial::P384(_))
            | (Family::Ed25519, KeyMaterial::Ed25519(_))
    )
}

fn verify_with(family: &Family, key: &KeyMaterial, msg: &[u8], sig: &[u8]) -> bool {
    match (family, key) {
        (Family::Rsa(params), KeyMaterial::Rsa { n, e }) => {
            RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
        }
        (Family::P256, KeyMaterial::P256(p)) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p).verify(msg, sig).is_ok()
        }
        (Family::P384, KeyMaterial::P384(p)) => {
            UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, p).verify(msg, sig).is_ok()
        }
        (Family::Ed25519, KeyMaterial::Ed25519(x)) => {
            UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig).is_ok()
        }
        _ => false,
    }
}

/// Checks the signature: HS256/384/512 with the client secret (authentik's
/// "no signing key" mode; that key is only ever the secret, never a JWKS
/// key, so no algorithm confusion), everything else with the JWKS.
pub fn verify_signature(jwt: &Jwt, keys: &[Jwk], client_secret: &[u8]) -> Result<(), JwtError> {
    let alg = jwt.header.alg.as_str();
    let msg = jwt.signing_input.as_bytes();
    let hmac = match alg {
        "HS256" => Some(ring::hmac::HMAC_SHA256),
        "HS384" => Some(ring::hmac::HMAC_SHA384),
        "HS512" => Some(ring::hmac::HMAC_SHA512),
        _ => None,
    };
    if let Some(h) = hmac {
        if client_secret.is_empty() {
            return Err(JwtError::Unsupported(format!("{alg} without a client secret")));
        }
        let k = ring::hmac::Key::new(h, client_secret);
        return ring::hmac::verify(&k, msg, &jwt.signature).map_err(|_| JwtError::BadSignature);
    }
    let family =
        match alg {
            "RS256" => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
            "ES256" => Family::P256,
            "ES384" => Family::P384,
            "EdDSA" => Family::Ed25519,
            "ES512" => return Err(JwtError::Unsupported(
                "ES512 (P-521), which tinyscale cannot verify; give the provider an RSA, P-256 or P-384 signing key"
                    .into(),
            )),
            "none" | "" => return Err(JwtError::Unsupported("none (an unsigned token)".into())),
            other => return Err(JwtError::Unsupported(other.to_string())),
        };
    let usable: Vec<&Jwk> =
        keys.iter().filter(|k| fits(&family, &k.key) && k.alg.as_deref().is_none_or(|a| a == alg)).collect();
    let candidates: Vec<&Jwk> = match &jwt.header.kid {
        Some(kid) => {
            let by_id: Vec<&Jwk> = usable.iter().copied().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if by_id.is_empty() {
                return Err(JwtError::UnknownKey(kid.clone()));
            }
            by_id
        }
        None => usable,
    };
    if candidates.is_empty() {
        return Err(JwtError::NoMatchingKey(alg.to_string()));
    }
    if candidates.iter().any(|k| verify_with(&family, &k.key, msg, &jwt.signature)) {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

/// A JSON value that may be a string or a list of strings (`aud`, `groups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Strings(match Value::deserialize(d)? {
            Value::String(s) => vec![s],
            Value::Array(a) => a.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }))
    }
}

/// A boolean that some providers send as `"true"`/`"false"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlexBool(pub bool);

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FlexBool(match Value::deserialize(d)? {
            Value::Bool(b) => b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }))
    }
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Value::deserialize(d)?.as_f64().map(|f| f as i64))
}

/// The claims tinyscale reads (of the ID token, or merged with userinfo).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: Strings,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default, deserialize_with = "number")]
    pub exp: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    pub iat: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: FlexBool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub picture: Option<String>,
    #[serde(default)]
    pub groups: Strings,
}

/// What an ID token must be to be accepted.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: i64,
    /// Allowed clock skew, seconds.
    pub leeway: i64,
    /// Whether the clock can be believed; a router still in 1970 cannot judge times.
    pub clock_sane: bool,
}

pub fn check_claims(c: &Claims, e: &Expect) -> Result<(), JwtError> {
    let bad = |m: String| Err(JwtError::Claim(m));
    if c.iss != e.issuer {
        return bad(format!("issuer {:?}, expected {:?}", c.iss, e.issuer));
    }
    if c.sub.is_empty() {
        return bad("no subject".into());
    }
    if !c.aud.0.iter().any(|a| a == e.client_id) {
        return bad(format!("audience {:?} does not include this client", c.aud.0));
    }
    if c.aud.0.len() > 1 && c.azp.as_deref() != Some(e.client_id) {
        return bad("several audiences and no azp naming this client".into());
    }
    if let Some(azp) = &c.azp {
        if azp != e.client_id {
            return bad(format!("authorized party {azp:?} is not this client"));
        }
    }
    if c.nonce.as_deref() != Some(e.nonce) {
        return bad("the nonce does not match this login".into());
    }
    let Some(exp) = c.exp else { return bad("no expiry".into()) };
    if e.clock_sane {
        if e.now > exp + e.leeway {
            return bad(format!("expired {}s ago", e.now - exp));
        }
        if c.iat.is_some_and(|iat| iat > e.now + e.leeway) {
            return bad("issued in the future (is the clock right?)".into());
        }
        if c.nbf.is_some_and(|nbf| nbf > e.now + e.leeway) {
            return bad("not valid yet (is the clock right?)".into());
        }
    }
    Ok(())
}

/// Parses and fully checks an ID token; returns its claims.
pub fn verify(token: &str, keys: &[Jwk], client_secret: &[u8], expect: &Expect) -> Result<Claims, JwtError> {
    let jwt = parse(token)?;
    verify_signature(&jwt, keys, client_secret)?;
    let claims: Claims = serde_json::from_slice(&jwt.payload).map_err(|_| JwtError::Malformed("claims"))?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

#[cfg(test)]
mod tests;
