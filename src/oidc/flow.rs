//! One browser login from start to finish: the state, nonce and PKCE
//! verifier of a login in flight (bound to the browser by cookies, single
//! use, expiring, capped), the authorization URL, and the confirmation step
//! whose CSRF token keeps a silent SSO from registering a device from one GET.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::config::PkceMethod;
use crate::state::secrets::{random_bytes, random_text, RandomUnavailable};
use crate::tailcfg::encode_hex;
use crate::url::percent_encode;

/// Logins in flight at once; the oldest goes first beyond this.
pub const CAP: usize = 256;
/// How long a login (or a confirmation page) stays valid.
pub const TTL: Duration = Duration::from_secs(15 * 60);

/// Entries with their insertion time, and the insertion order.
struct Entries<T> {
    map: HashMap<String, (Instant, T)>,
    order: VecDeque<String>,
}

/// A bounded, expiring, single-use map.
pub struct Expiring<T> {
    inner: Mutex<Entries<T>>,
}

impl<T> Default for Expiring<T> {
    fn default() -> Self {
        Expiring { inner: Mutex::new(Entries { map: HashMap::new(), order: VecDeque::new() }) }
    }
}

impl<T> Expiring<T> {
    pub fn insert(&self, key: String, value: T) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Entries { map, order } = &mut *g;
        let now = Instant::now();
        map.insert(key.clone(), (now, value));
        order.push_back(key);
        while let Some(k) = order.front() {
            let stale = map.get(k).is_none_or(|(t, _)| now.duration_since(*t) >= TTL);
            if !stale && map.len() <= CAP {
                break;
            }
            if let Some(k) = order.pop_front() {
                map.remove(&k);
            }
        }
    }

    /// Takes the entry out (single use); `None` when absent or expired.
    pub fn take(&self, key: &str) -> Option<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Entries { map, order } = &mut *g;
        let (t, v) = map.remove(key)?;
        order.retain(|k| k != key);
        (t.elapsed() < TTL).then_some(v)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A login between the redirect to the provider and its callback.
pub struct Pending {
    pub auth_id: String,
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

/// `name=value` pairs of a Cookie header.
pub fn cookies(header: Option<&str>) -> HashMap<String, String> {
    header
        .unwrap_or("")
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A Set-Cookie value scoped to `path`; `Secure` when the server is on https.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// Cookie names carry a prefix of their value, so parallel logins in one
/// browser do not overwrite each other, and a `ts_` prefix, so they cannot
/// clash with a provider's cookies on the same host.
pub fn cookie_name(kind: &str, value: &str) -> String {
    format!("ts_{kind}_{}", &value[..value.len().min(6)])
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
    fn pending_logins_are_single_use_and_capped() {
        let e: Expiring<u32> = Expiring::default();
        e.insert("a".into(), 1);
        assert_eq!(e.take("a"), Some(1));
        assert_eq!(e.take("a"), None, "single use");
        for i in 0..(CAP + 5) {
            e.insert(format!("k{i}"), i as u32);
        }
        assert_eq!(e.len(), CAP);
        assert_eq!(e.take("k0"), None, "the oldest went first");
        assert!(e.take(&format!("k{}", CAP + 4)).is_some());
    }
}
