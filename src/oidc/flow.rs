//! One browser login from start to finish: the state, nonce and PKCE
//! verifier of a login in flight (bound to the browser by cookies, single
//! use, expiring, capped), the authorization URL, and the confirmation step
//! whose CSRF token keeps a silent SSO from registering a device from one GET.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::config::PkceMethod;
use crate::quota::{Capped, Full, Limits, Source};
use crate::secrets::{random_bytes, random_text, RandomUnavailable};
use crate::tailcfg::encode_hex;
use crate::url::percent_encode;

/// Logins in flight at once, all browsers together.
pub const CAP: usize = 256;
/// Per source address: a household logs in a few devices, each maybe twice.
pub const PER_IP: usize = 16;
/// Per device waiting (reloading its login page starts a new login).
pub const PER_DEVICE: usize = 4;
/// How long a login (or a confirmation page) stays valid.
pub const TTL: Duration = Duration::from_secs(15 * 60);

const LIMITS: Limits = Limits { total: CAP, per_ip: PER_IP, per_key: PER_DEVICE, ttl: TTL };

/// A bounded, expiring, single-use map, charged per browser address and per
/// device: one source can only push out its own entries, and a full map
/// refuses newcomers rather than evict anyone.
pub struct Expiring<T> {
    inner: Mutex<Capped<T>>,
}

impl<T> Default for Expiring<T> {
    fn default() -> Self {
        Expiring { inner: Mutex::new(Capped::new(LIMITS)) }
    }
}

impl<T> Expiring<T> {
    pub fn insert(&self, key: String, source: Source, value: T, now: Instant) -> Result<(), Full> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).insert(key, source, value, now).map(drop)
    }

    /// Takes the entry out (single use); `None` when absent or expired.
    pub fn take(&self, key: &str, now: Instant) -> Option<T> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).take(key, now)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a login is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The device waiting with this auth id.
    Device(String),
    /// A session of the admin web UI.
    Admin,
}

/// A login between the redirect to the provider and its callback.
pub struct Pending {
    pub purpose: Purpose,
    pub nonce: String,
    pub verifier: Option<String>,
}

pub fn random_hex(bytes: usize) -> Result<String, RandomUnavailable> {
    let mut b = vec![0u8; bytes];
    random_bytes(&mut b)?;
    Ok(encode_hex(&b))
}

/// The PKCE challenge of `verifier` (RFC 7636).
pub fn challenge(verifier: &str, method: PkceMethod) -> String {
    match method {
        PkceMethod::S256 => {
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
        }
        PkceMethod::Plain => verifier.to_string(),
    }
}

pub fn new_verifier() -> Result<String, RandomUnavailable> {
    random_text(64)
}

pub struct AuthRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a [String],
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce: Option<(String, PkceMethod)>,
    pub extra: &'a std::collections::BTreeMap<String, String>,
}

/// The provider's authorization URL for this login.
pub fn auth_url(r: &AuthRequest) -> String {
    let mut q: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), r.client_id.into()),
        ("redirect_uri".into(), r.redirect_uri.into()),
        ("scope".into(), r.scope.join(" ")),
        ("state".into(), r.state.into()),
        ("nonce".into(), r.nonce.into()),
    ];
    if let Some((challenge, method)) = &r.pkce {
        q.push(("code_challenge".into(), challenge.clone()));
        q.push(("code_challenge_method".into(), if *method == PkceMethod::S256 { "S256" } else { "plain" }.into()));
    }
    for (k, v) in r.extra {
        if !q.iter().any(|(qk, _)| qk == k) {
            q.push((k.clone(), v.clone()));
        }
    }
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    let sep = if r.endpoint.contains('?') { '&' } else { '?' };
    format!("{}{sep}{}", r.endpoint, query.join("&"))
}

pub use crate::web::cookies;

/// A Set-Cookie value scoped to `path`; `Secure` when the server is on https.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// Cookie names carry a prefix of their value, so parallel logins in one
/// browser do not overwrite each other, and a `ts_` prefix, so they cannot
/// clash with a provider's cookies on the same host.
pub fn cookie_name(kind: &str, value: &str) -> String {
    // The value may come from the query string: take characters, never a
    // byte range that could split one.
    let prefix: String = value.chars().filter(char::is_ascii_alphanumeric).take(6).collect();
    format!("ts_{kind}_{prefix}")
}

/// Whether `s` can be a state or nonce this server made (`random_text`):
/// anything else in a callback is refused before it is looked at further.
pub fn is_token(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Authorization: Basic` for the token request (RFC 6749 §2.3.1 encodes both parts).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", percent_encode(client_id), percent_encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_never_split_a_character() {
        // A state from the query with a two-byte character across byte 6
        // aborted the router build (a byte slice off a char boundary).
        assert_eq!(cookie_name("state", "aaaaa\u{e9}bcd"), "ts_state_aaaaab");
        assert_eq!(cookie_name("nonce", ""), "ts_nonce_");
        assert!(is_token(&random_text(64).unwrap()));
        assert!(!is_token("aaaaa\u{e9}aaaaaaaaaaaaaaaaaa"));
        assert!(!is_token("short"));
    }

    #[test]
    fn pkce_s256_matches_rfc7636() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", PkceMethod::S256),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(challenge("abc", PkceMethod::Plain), "abc");
        let v = new_verifier().unwrap();
        assert!(v.len() >= 43 && v.len() <= 128);
    }

    #[test]
    fn the_authorization_url_carries_everything() {
        let extra = [("login_hint".to_string(), "alice".to_string()), ("state".to_string(), "evil".to_string())].into();
        let u = auth_url(&AuthRequest {
            endpoint: "http://127.0.0.1:9000/application/o/authorize/",
            client_id: "tinyscale",
            redirect_uri: "http://127.0.0.1:8080/oidc/callback",
            scope: &["openid".into(), "profile".into(), "email".into()],
            state: "s1",
            nonce: "n1",
            pkce: Some(("ch".into(), PkceMethod::S256)),
            extra: &extra,
        });
        assert!(u.starts_with("http://127.0.0.1:9000/application/o/authorize/?response_type=code&client_id=tinyscale&"));
        assert!(u.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Foidc%2Fcallback"));
        assert!(u.contains("scope=openid%20profile%20email"));
        assert!(u.contains("&code_challenge=ch&code_challenge_method=S256"));
        assert!(u.contains("&login_hint=alice"));
        assert!(!u.contains("evil"), "extra_params cannot override the protocol's own");
    }

    #[test]
    fn cookies_and_basic_auth() {
        let c = cookies(Some("a=1; ts_state_abcdef=abcdef99; b = 2"));
        assert_eq!(c["ts_state_abcdef"], "abcdef99");
        assert_eq!(cookie_name("state", "abcdef99"), "ts_state_abcdef");
        let sc = set_cookie("ts_state_abc", "v", "/oidc/callback", 900, true);
        assert_eq!(sc, "ts_state_abc=v; Path=/oidc/callback; Max-Age=900; HttpOnly; SameSite=Lax; Secure");
        assert!(!set_cookie("x", "v", "/", 1, false).contains("Secure"));
        assert_eq!(basic_auth("ts", "s:e"), "Basic dHM6cyUzQWU=", "base64 of ts:s%3Ae");
    }

    #[test]
    fn logins_are_single_use_and_capped_per_source() {
        let t = Instant::now();
        let e: Expiring<u32> = Expiring::default();
        let browser = |n: u8, device: u8| Source::new([192, 0, 2, n].into(), [device; 32]);
        e.insert("a".into(), browser(1, 1), 1, t).unwrap();
        assert_eq!(e.take("a", t), Some(1));
        assert_eq!(e.take("a", t), None, "single use");
        // A real login waits; one address starts ever more, for ever other devices.
        e.insert("real".into(), browser(1, 1), 0, t).unwrap();
        for i in 0..(CAP + 5) {
            e.insert(format!("k{i}"), browser(66, i as u8), i as u32, t).unwrap();
        }
        assert_eq!(e.len(), 1 + PER_IP);
        assert_eq!(e.take("real", t), Some(0), "another source's login stays");
        assert!(e.take("k0", t).is_none() && e.take(&format!("k{}", CAP + 4), t).is_some());
        // Full of other sources: a newcomer is refused, nobody is evicted.
        let full: Expiring<u32> = Expiring::default();
        for i in 0..CAP {
            let device = [
                i as u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0,
            ];
            full.insert(format!("f{i}"), Source::new([10, 0, (i / PER_IP) as u8, 1].into(), device), 0, t).unwrap();
        }
        assert_eq!(full.insert("new".into(), browser(9, 200), 0, t), Err(Full));
        assert_eq!(full.len(), CAP);
        assert!(full.take("f0", t).is_some());
        assert_eq!(full.take("f1", t + TTL), None, "expired");
    }
}
