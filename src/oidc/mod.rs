//! Login through an OpenID Connect provider (authentik, or any other), as
//! Headscale's `oidc:` section configures it.
//!
//! `/register/<id>` sends the browser to the provider with state, nonce and
//! PKCE bound to it by cookies; `/oidc/callback` exchanges the code, verifies
//! the ID token and admits the person; a confirmation page (POST with a CSRF
//! token) then registers the device and answers its waiting client. Network
//! calls use the blocking `fetch` client and always run in `spawn_blocking`; the rules
//! (`jwt`, `identity`, `provider`, `flow`) are pure.

pub mod flow;
pub mod identity;
pub mod jwt;
pub mod pages;
pub mod provider;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

use crate::clock;
use crate::config::Oidc as Config;
use crate::fetch as http;
use crate::quota::Source;
use crate::state::State;
use identity::{Identity, Refusal};
use provider::{Provider, TokenAuth};

/// Clock skew tolerated on `exp`, `iat` and `nbf` (routers without an RTC drift).
const LEEWAY: i64 = 60;
/// A JWKS refetch for an unknown key id happens at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);

struct Jwks {
    keys: Vec<jwt::Jwk>,
    fetched: Option<Instant>,
}

struct Confirmation {
    auth_id: String,
    identity: Identity,
    expiry: Option<i64>,
}

pub struct Oidc {
    cfg: Config,
    secret: Vec<u8>,
    http: http::Client,
    provider: RwLock<Option<Arc<Provider>>>,
    jwks: Mutex<Jwks>,
    logins: flow::Expiring<flow::Pending>,
    confirmations: flow::Expiring<Confirmation>,
    state: Arc<State>,
    redirect_uri: String,
    secure_cookies: bool,
    /// Who may sign in to the admin web UI, and the UI that starts their session.
    admin_rules: crate::config::Admin,
    admin_ui: std::sync::OnceLock<std::sync::Weak<crate::web::admin::Admin>>,
    /// Signs admin logins' states (random at each start; `None` if the
    /// system had no randomness, and then no admin logs in).
    admin_key: Option<[u8; 32]>,
}

/// An admin login's nonce and PKCE verifier wait in these cookies.
const ADMIN_NONCE: &str = "ts_admin_nonce";
const ADMIN_PKCE: &str = "ts_admin_pkce";

type Page = Response<Full<Bytes>>;

fn html(status: StatusCode, body: String, cookies: &[String]) -> Page {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    crate::web::page_headers(h, Some(pages::STYLE));
    for c in cookies {
        if let Ok(v) = hyper::header::HeaderValue::from_str(c) {
            h.append(hyper::header::SET_COOKIE, v);
        }
    }
    r
}

fn refusal(r: &Refusal) -> Page {
    html(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN),
        pages::refused(r.status, &r.message, r.hint.as_deref()),
        &[],
    )
}

fn unreachable_provider() -> Page {
    refuse(503, "The identity provider is not reachable right now; try again in a minute.")
}

fn refuse(status: u16, message: &str) -> Page {
    refusal(&Refusal { status, message: message.into(), hint: None })
}

impl Oidc {
    pub fn new(
        cfg: Config,
        admin_rules: crate::config::Admin,
        state: Arc<State>,
        server_url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Oidc {
        let roots = http::load_roots(env);
        if roots.is_empty() && cfg.issuer.starts_with("https://") {
            log::warn!("no CA bundle found (set SSL_CERT_FILE, or install ca-bundle); HTTPS to the provider will fail");
        }
        let secret = cfg.client_secret.as_ref().map(|s| s.expose().as_bytes().to_vec()).unwrap_or_default();
        Oidc {
            secret,
            http: http::Client::new(roots),
            provider: RwLock::new(None),
            jwks: Mutex::new(Jwks { keys: Vec::new(), fetched: None }),
            logins: flow::Expiring::default(),
            confirmations: flow::Expiring::default(),
            state,
            redirect_uri: format!("{}/oidc/callback", server_url.trim_end_matches('/')),
            secure_cookies: server_url.starts_with("https://"),
            admin_rules,
            admin_ui: std::sync::OnceLock::new(),
            admin_key: {
                let mut k = [0u8; 32];
                crate::secrets::random_bytes(&mut k).ok().map(|_| k)
            },
            cfg,
        }
    }

    /// The admin web UI whose sessions admin logins start.
    pub fn set_admin_ui(&self, ui: &Arc<crate::web::admin::Admin>) {
        let _ = self.admin_ui.set(Arc::downgrade(ui));
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    pub fn only_start_if_available(&self) -> bool {
        self.cfg.only_start_if_oidc_is_available
    }

    pub fn ready(&self) -> bool {
        self.provider.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn provider(&self) -> Option<Arc<Provider>> {
        self.provider.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Discovery and the first JWKS fetch. Blocking: call from `spawn_blocking`.
    pub fn discover(&self) -> Result<(), String> {
        let url = provider::discovery_url(&self.cfg.issuer);
        let doc = self.http.get_json(&url, None).map_err(|e| e.to_string())?;
        let (p, warning) = provider::from_discovery(&doc, &self.cfg.issuer)?;
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        if !p.algs.is_empty() && p.algs.iter().all(|a| a == "ES512") {
            log::warn!("the provider signs only with ES512 (P-521), which tinyscale cannot verify; give it an RSA, P-256 or P-384 key");
        }
        self.fetch_jwks(&p)?;
        log::info!("using {} (token auth {:?}, algorithms {:?})", p.issuer, p.token_auth, p.algs);
        *self.provider.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
        Ok(())
    }

    fn fetch_jwks(&self, p: &Provider) -> Result<(), String> {
        let doc = self.http.get_json(&p.jwks_uri, None).map_err(|e| e.to_string())?;
        let keys = jwt::parse_jwks(&doc);
        let mut j = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        j.keys = keys;
        j.fetched = Some(Instant::now());
        Ok(())
    }

    /// `GET /register/<id>` from the browser at `from`: off to the provider.
    pub fn start(&self, auth_id: &str, from: IpAddr) -> Page {
        let Some(pending) = self.state.pending_login(auth_id, Instant::now()) else {
            return refuse(
                410,
                "This login link is unknown or has expired (they last 15 minutes). Run tailscale up again.",
            );
        };
        let Some(p) = self.provider() else { return unreachable_provider() };
        let (Ok(state), Ok((nonce, verifier))) = (flow::random_hex(32), self.fresh_secrets()) else {
            return refuse(500, "No randomness available.");
        };
        log::debug!("login for pending device {} ({})", pending.hostname, auth_id);
        let ttl = flow::TTL.as_secs();
        let cookies = vec![
            flow::set_cookie(&flow::cookie_name("state", &state), &state, "/oidc/callback", ttl, self.secure_cookies),
            flow::set_cookie(&flow::cookie_name("nonce", &nonce), &nonce, "/oidc/callback", ttl, self.secure_cookies),
        ];
        let login = flow::Pending {
            purpose: flow::Purpose::Device(auth_id.to_string()),
            nonce: nonce.clone(),
            verifier: verifier.clone(),
        };
        let source = Source::new(from, pending.machine_key.0);
        if self.logins.insert(state.clone(), source, login, Instant::now()).is_err() {
            log::debug!("login from {from} refused: {} logins are in flight", self.logins.len());
            return refuse(503, "Too many logins are in progress right now; try again in a few minutes.");
        }
        self.to_provider(&p, &state, &nonce, verifier.as_deref(), cookies)
    }

    /// A login's nonce and PKCE verifier (when PKCE is on).
    fn fresh_secrets(&self) -> Result<(String, Option<String>), crate::secrets::RandomUnavailable> {
        let nonce = flow::random_hex(32)?;
        let verifier = if self.cfg.pkce_enabled { Some(flow::new_verifier()?) } else { None };
        Ok((nonce, verifier))
    }

    /// `GET /admin` without a session: off to the provider for an admin
    /// login. Nothing is kept on the server (anyone may ask, as often as it
    /// likes, and must not crowd out device logins): the state carries when
    /// it was made and a MAC over that, the nonce and the PKCE verifier,
    /// which wait in this browser's cookies.
    pub fn start_admin(&self) -> Page {
        let Some(p) = self.provider() else { return unreachable_provider() };
        let Ok((nonce, verifier)) = self.fresh_secrets() else { return refuse(500, "No randomness available.") };
        let issued = clock::mono_secs();
        let Some(mac) = self.admin_mac(issued, &nonce, verifier.as_deref()) else {
            return refuse(500, "No randomness available.");
        };
        let state = format!("adm-{issued:016x}-{mac}");
        let ttl = flow::TTL.as_secs();
        let mut cookies = vec![
            flow::set_cookie(&flow::cookie_name("state", &state), &state, "/oidc/callback", ttl, self.secure_cookies),
            flow::set_cookie(ADMIN_NONCE, &nonce, "/oidc/callback", ttl, self.secure_cookies),
        ];
        if let Some(v) = &verifier {
            cookies.push(flow::set_cookie(ADMIN_PKCE, v, "/oidc/callback", ttl, self.secure_cookies));
        }
        self.to_provider(&p, &state, &nonce, verifier.as_deref(), cookies)
    }

    /// The MAC an admin login's state carries (`None` without a key).
    fn admin_mac(&self, issued: u64, nonce: &str, verifier: Option<&str>) -> Option<String> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.admin_key.as_ref()?);
        let msg = format!("tinyscale admin login\0{issued}\0{nonce}\0{}", verifier.unwrap_or(""));
        Some(crate::tailcfg::encode_hex(&ring::hmac::sign(&key, msg.as_bytes()).as_ref()[..16]))
    }

    /// The admin login a callback's state and cookies prove, if any.
    fn admin_pending(&self, state: &str, jar: &std::collections::HashMap<String, String>) -> Option<flow::Pending> {
        let (issued_hex, mac) = state.strip_prefix("adm-")?.split_once('-')?;
        let issued = u64::from_str_radix(issued_hex, 16).ok()?;
        if clock::mono_secs().checked_sub(issued)? > flow::TTL.as_secs() {
            return None;
        }
        let nonce = jar.get(ADMIN_NONCE)?.clone();
        let verifier = jar.get(ADMIN_PKCE).filter(|v| !v.is_empty()).cloned();
        let want = self.admin_mac(issued, &nonce, verifier.as_deref())?;
        crate::web::session::same(&want, mac).then_some(flow::Pending {
            purpose: flow::Purpose::Admin,
            nonce,
            verifier,
        })
    }

    /// The redirect to the provider.
    fn to_provider(
        &self,
        p: &Provider,
        state: &str,
        nonce: &str,
        verifier: Option<&str>,
        cookies: Vec<String>,
    ) -> Page {
        let url = flow::auth_url(&flow::AuthRequest {
            endpoint: &p.authorization_endpoint,
            client_id: &self.cfg.client_id,
            redirect_uri: &self.redirect_uri,
            scope: &self.cfg.scope,
            state,
            nonce,
            pkce: verifier.map(|v| (flow::challenge(v, self.cfg.pkce_method), self.cfg.pkce_method)),
            extra: &self.cfg.extra_params,
        });
        let mut r = html(StatusCode::FOUND, String::new(), &cookies);
        if let Ok(v) = hyper::header::HeaderValue::from_str(&url) {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
        r
    }

    /// `GET /oidc/callback` from the browser at `from`.
    pub async fn callback(self: Arc<Self>, query: &str, cookie_header: Option<&str>, from: IpAddr) -> Page {
        let q = crate::url::form(query);
        if let Some(err) = q.get("error") {
            let why = q.get("error_description").cloned().unwrap_or_else(|| err.clone());
            // Debug, and short: anyone can send this, as often as it likes.
            log::debug!("the provider refused a login: {}", crate::text::clip(err, 200));
            return refuse(403, &format!("The identity provider did not sign you in: {why}"));
        }
        let (Some(state), Some(code)) =
            (q.get("state").filter(|s| flow::is_token(s)), q.get("code").filter(|c| !c.is_empty()))
        else {
            return refuse(400, "The callback lacks its code or state.");
        };
        let jar = flow::cookies(cookie_header);
        match jar.get(&flow::cookie_name("state", state)) {
            None => {
                log::debug!("callback without its state cookie");
                return refuse(400, "This login did not start in this browser (its cookie is missing). Open the login link from tailscale up again, in one browser.");
            }
            Some(c) if c != state => return refuse(403, "This login's cookie does not match."),
            Some(_) => {}
        }
        let pending = match self.logins.take(state, Instant::now()) {
            Some(p) => {
                if jar.get(&flow::cookie_name("nonce", &p.nonce)) != Some(&p.nonce) {
                    return refuse(403, "This login's nonce cookie is missing or does not match.");
                }
                p
            }
            // An admin login: proven by its MAC and this browser's cookies.
            None => match self.admin_pending(state, &jar) {
                Some(p) => p,
                None => {
                    log::debug!("a login state was replayed, expired or forged");
                    return refuse(
                        410,
                        "This login was already used or has expired. Run tailscale up again for a new link.",
                    );
                }
            },
        };
        let nonce_cookie = flow::cookie_name("nonce", &pending.nonce);
        let this = self.clone();
        let code = code.clone();
        let purpose = pending.purpose.clone();
        let outcome = tokio::task::spawn_blocking(move || this.finish(&code, &pending)).await;
        let claims = match outcome {
            Ok(Ok(x)) => x,
            Ok(Err(r)) => return refusal(&r),
            Err(_) => return refuse(500, "The login could not be completed."),
        };
        let auth_id = match purpose {
            flow::Purpose::Device(id) => id,
            flow::Purpose::Admin => return self.admin_login(&claims, state),
        };
        if let Err(r) = identity::admit(&claims, &self.cfg) {
            log::info!("login refused: {}", r.message);
            return refusal(&r);
        }
        let identity = identity::identity(&claims, &self.cfg);
        let expiry = if self.cfg.use_expiry_from_token { claims.exp } else { None };
        let Ok(csrf) = flow::random_hex(32) else { return refuse(500, "No randomness available.") };
        let waiting = self.state.pending_login(&auth_id, Instant::now());
        // A login that is gone fails at the confirmation; its charge falls on no device.
        let machine = waiting.as_ref().map_or([0; 32], |p| p.machine_key.0);
        let device = waiting.map(|p| p.hostname).unwrap_or_else(|| "this device".into());
        let shown =
            if identity.display_name.is_empty() { identity.username.clone() } else { identity.display_name.clone() };
        let body = pages::confirm(&auth_id, &csrf, &shown, &device);
        let cookies = [
            flow::set_cookie("ts_csrf", &csrf, "/register/confirm", flow::TTL.as_secs(), self.secure_cookies),
            flow::set_cookie(&flow::cookie_name("state", state), "", "/oidc/callback", 0, self.secure_cookies),
            // The state and nonce cookies have done their job.
            flow::set_cookie(&nonce_cookie, "", "/oidc/callback", 0, self.secure_cookies),
        ];
        let confirmation = Confirmation { auth_id, identity, expiry };
        if self.confirmations.insert(csrf, Source::new(from, machine), confirmation, Instant::now()).is_err() {
            log::debug!("confirmation for {from} refused: {} are waiting", self.confirmations.len());
            return refuse(503, "Too many logins are in progress right now; try again in a few minutes.");
        }
        html(StatusCode::OK, body, &cookies)
    }

    /// An admin login's verified claims: a session if they name an admin,
    /// else the refusal page (403) and no session.
    fn admin_login(&self, claims: &jwt::Claims, state: &str) -> Page {
        let done = [
            flow::set_cookie(&flow::cookie_name("state", state), "", "/oidc/callback", 0, self.secure_cookies),
            flow::set_cookie(ADMIN_NONCE, "", "/oidc/callback", 0, self.secure_cookies),
            flow::set_cookie(ADMIN_PKCE, "", "/oidc/callback", 0, self.secure_cookies),
        ];
        let who = identity::provider_id(&claims.iss, &claims.sub);
        if let Err(r) = identity::admit_admin(claims, &self.admin_rules) {
            log::info!("admin login refused for {who}: {}", r.message);
            let mut page = refusal(&r);
            for c in &done {
                if let Ok(v) = hyper::header::HeaderValue::from_str(c) {
                    page.headers_mut().append(hyper::header::SET_COOKIE, v);
                }
            }
            return page;
        }
        let Some(ui) = self.admin_ui.get().and_then(std::sync::Weak::upgrade) else {
            return refuse(503, "The admin web UI is not running.");
        };
        let id = identity::identity(claims, &self.cfg);
        let shown = if id.email.is_empty() { id.username } else { id.email };
        let mut page = ui.sign_in(&format!("{shown} ({who})"), None);
        for c in &done {
            if let Ok(v) = hyper::header::HeaderValue::from_str(c) {
                page.headers_mut().append(hyper::header::SET_COOKIE, v);
            }
        }
        page
    }

    /// The blocking part of a callback: code exchange, token checks and
    /// userinfo; the verified claims. Admission is the caller's.
    fn finish(&self, code: &str, pending: &flow::Pending) -> Result<jwt::Claims, Refusal> {
        let fail = |status: u16, message: &str| Refusal { status, message: message.into(), hint: None };
        let p = self.provider().ok_or_else(|| fail(503, "The identity provider is not reachable right now."))?;
        let mut form: Vec<(&str, &str)> =
            vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", &self.redirect_uri)];
        if let Some(v) = &pending.verifier {
            form.push(("code_verifier", v));
        }
        let secret = String::from_utf8_lossy(&self.secret).into_owned();
        let basic = match p.token_auth {
            TokenAuth::Basic => Some(flow::basic_auth(&self.cfg.client_id, &secret)),
            TokenAuth::Post => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", &secret));
                None
            }
        };
        let (status, tok) = self.http.post_form(&p.token_endpoint, basic, &form).map_err(|e| {
            log::warn!("token request failed: {e}");
            fail(502, "The identity provider could not be reached to finish the login.")
        })?;
        if !(200..300).contains(&status) {
            let err = tok.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error");
            log::info!("the provider refused the code exchange ({status} {})", crate::text::clip(err, 200));
            return Err(fail(403, &format!("The identity provider did not accept this login ({err}).")));
        }
        let id_token =
            tok.get("id_token").and_then(|t| t.as_str()).ok_or_else(|| fail(502, "The provider sent no ID token."))?;
        let now = clock::now_unix();
        let expect = jwt::Expect {
            issuer: &p.issuer,
            client_id: &self.cfg.client_id,
            nonce: &pending.nonce,
            now,
            leeway: LEEWAY,
            clock_sane: clock::clock_is_sane(now),
        };
        let keys = self.jwks.lock().unwrap_or_else(|e| e.into_inner()).keys.clone();
        let mut claims = match jwt::verify(id_token, &keys, &self.secret, &expect) {
            Err(jwt::JwtError::UnknownKey(_)) if self.may_refetch_jwks() => {
                // The provider rotated its keys: fetch them once more.
                self.fetch_jwks(&p).map_err(|e| {
                    log::warn!("JWKS refetch failed: {e}");
                    fail(502, "The provider's signing keys could not be fetched.")
                })?;
                let keys = self.jwks.lock().unwrap_or_else(|e| e.into_inner()).keys.clone();
                jwt::verify(id_token, &keys, &self.secret, &expect)
            }
            other => other,
        }
        .map_err(|e| {
            log::warn!("ID token refused: {e}");
            Refusal {
                status: 403,
                message: "The identity provider's answer could not be verified.".into(),
                hint: Some(e.to_string()),
            }
        })?;
        if let (Some(url), Some(access)) = (&p.userinfo_endpoint, tok.get("access_token").and_then(|t| t.as_str())) {
            match self.http.get_json(url, Some(access)) {
                Ok(v) => match serde_json::from_value::<jwt::Claims>(v) {
                    Ok(info) => identity::merge_userinfo(&mut claims, &info),
                    Err(e) => log::info!("userinfo not understood ({e}); using the ID token's claims"),
                },
                Err(e) => log::info!("userinfo failed ({e}); using the ID token's claims"),
            }
        }
        Ok(claims)
    }

    fn may_refetch_jwks(&self) -> bool {
        let j = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        j.fetched.is_none_or(|t| t.elapsed() >= JWKS_REFETCH)
    }

    /// `POST /register/confirm/<id>`: the person said yes.
    pub async fn confirm(self: Arc<Self>, auth_id: &str, body: &[u8], cookie_header: Option<&str>) -> Page {
        let f = crate::url::form(&String::from_utf8_lossy(body));
        let Some(csrf) = f.get("csrf").filter(|c| !c.is_empty()) else {
            return refuse(400, "The form lacks its token.");
        };
        if flow::cookies(cookie_header).get("ts_csrf") != Some(csrf) {
            return refuse(403, "This confirmation did not come from the page this browser was shown.");
        }
        let Some(c) = self.confirmations.take(csrf, Instant::now()) else {
            return refuse(410, "This confirmation was already used or has expired. Run tailscale up again.");
        };
        if c.auth_id != auth_id {
            return refuse(400, "This confirmation is for another device.");
        }
        let state = self.state.clone();
        let res = tokio::task::spawn_blocking(move || {
            let now = clock::now_unix();
            let user = state.login_user(&c.identity, now)?;
            let node = state.approve_login(&c.auth_id, user.id, "oidc", c.expiry, now, Instant::now())?;
            Ok::<_, crate::state::StateError>((user, node))
        })
        .await;
        match res {
            Ok(Ok((user, node))) => {
                log::info!("{} registered node {} ({})", user.name, node.id, node.given_name);
                let shown = if user.display_name.is_empty() { user.name.clone() } else { user.display_name.clone() };
                let cookies = [flow::set_cookie("ts_csrf", "", "/register/confirm", 0, self.secure_cookies)];
                html(StatusCode::OK, pages::success(&shown, &node.given_name), &cookies)
            }
            Ok(Err(e)) => {
                log::warn!("registration failed: {e}");
                refuse(410, &format!("The device could not be added: {e}"))
            }
            Err(_) => refuse(500, "The device could not be added."),
        }
    }
}
