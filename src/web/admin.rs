//! The admin web UI at `/admin`: who is signed in (a session cookie, made
//! by an OIDC admin login or by an API key), the pages, and the actions,
//! which are plain form POSTs to `/admin/do` carrying the session's CSRF
//! token and run through the REST API's own handler and types.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::layout::{admin_page, public_page, Flash, SCRIPT, STYLE};
use super::pages;
use super::session::{cookie_name, same, Session, Sessions, LIFETIME};
use crate::api::auth::Failures;
use crate::api::types::*;
use crate::clock;
use crate::state::State;

pub type Page = Response<Full<Bytes>>;

/// A form may carry a whole policy, percent-encoded (three bytes a byte at worst).
const MAX_FORM: usize = 3 * crate::policy::hujson::MAX_LEN + 4096;
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// What the status page counts that `state` does not know.
pub type Counter = Arc<dyn Fn() -> usize + Send + Sync>;

pub struct Admin {
    pub state: Arc<State>,
    pub sessions: Arc<Sessions>,
    /// Failed API-key sign-ins count with failed API requests.
    pub failures: Arc<Failures>,
    /// Where an admin without a session is sent to sign in (the OIDC
    /// admin login), if OIDC is configured.
    pub oidc_login: Option<Arc<dyn Fn(IpAddr) -> Page + Send + Sync>>,
    pub server_url: String,
    pub secure_cookies: bool,
    pub started: Instant,
    pub store_path: PathBuf,
    pub derp_clients: Option<Counter>,
}

/// An HTML page with the shared headers: only the inline style and script
/// (by hash) run, nothing frames it, nothing caches it.
pub fn html(status: StatusCode, body: String, cookies: &[String]) -> Page {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    super::page_headers_with(h, STYLE, Some(SCRIPT));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(SET_COOKIE, v);
        }
    }
    r
}

fn redirect(to: &str, cookies: &[String]) -> Page {
    let mut r = html(StatusCode::SEE_OTHER, String::new(), cookies);
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn refused(status: StatusCode, message: &str) -> Page {
    let title = if status == StatusCode::FORBIDDEN { "Not allowed" } else { "Refused" };
    html(status, public_page(title, &format!("<p>{}</p>", super::html_escape(message))), &[])
}

/// The session cookie: HttpOnly, SameSite=Lax, Secure over https; its
/// path is `/` so `/register/<id>` sees it too.
pub fn session_cookie(token: &str, secure: bool) -> String {
    let max_age = if token.is_empty() { 0 } else { LIFETIME.as_secs() };
    format!(
        "{}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

impl Admin {
    /// The signed-in session of a request's Cookie header, with its token.
    /// A session an API key started ends with the key (expired, deleted).
    pub fn session(&self, cookie_header: Option<&str>) -> Option<(String, Session)> {
        let jar = super::cookies(cookie_header);
        let token = jar.get(cookie_name(self.secure_cookies))?;
        let s = self.sessions.get(token, Instant::now())?;
        if s.api_key.as_deref().is_some_and(|prefix| !self.state.api_key_live(prefix, clock::now_unix())) {
            self.sessions.end(token);
            return None;
        }
        Some((token.clone(), s))
    }

    /// Starts a session for `who` (signed in with the API key of prefix
    /// `api_key`, if any) and lands on the devices page.
    pub fn sign_in(&self, who: &str, api_key: Option<&str>) -> Page {
        match self.sessions.start(who, api_key, Instant::now()) {
            Ok(token) => {
                log::info!("admin: {who} signed in to the web UI");
                redirect("/admin", &[session_cookie(&token, self.secure_cookies)])
            }
            Err(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "No randomness available."),
        }
    }

    /// One API call through the REST API's handler. Runs on a blocking
    /// thread: pages and actions are rendered there whole (`blocking`).
    fn api<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<impl Serialize>) -> Result<T, String> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose().map_err(|e| e.to_string())?.unwrap_or_default();
        let answer = self.api_value(method, path, &body)?;
        serde_json::from_slice(&answer).map_err(|e| format!("unexpected answer: {e}"))
    }

    /// [`Admin::api`]'s untyped part, once for every answer type (flash).
    fn api_value(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let (target, query) = path.split_once('?').unwrap_or((path, ""));
        let r = crate::api::handle(&self.state, &crate::api::Request { method, path: target, query, body });
        if r.status == 200 {
            Ok(r.body)
        } else {
            Err(serde_json::from_slice::<ErrorResponse>(&r.body)
                .map_or_else(|_| format!("error {}", r.status), |e| e.message))
        }
    }

    /// Runs `f` on a blocking thread: the API's writes flush to flash.
    async fn blocking(self: &Arc<Self>, f: impl FnOnce(&Admin) -> Page + Send + 'static) -> Page {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .unwrap_or_else(|_| refused(StatusCode::INTERNAL_SERVER_ERROR, "The page could not be made."))
    }

    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>, peer: IpAddr) -> Page {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let cookie = req.headers().get(hyper::header::COOKIE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let session = self.session(cookie.as_deref());
        match (method.as_str(), path.as_str(), session) {
            ("POST", "/admin/login", _) => {
                if self.oidc_login.is_some() {
                    // With a provider, admins are who it says they are.
                    return refused(
                        StatusCode::FORBIDDEN,
                        "Admins sign in through the identity provider: open /admin.",
                    );
                }
                // Anyone may send this: a small body, read apart from the admins' forms.
                let form = match read_small_form(req).await {
                    Ok(f) => f,
                    Err(p) => return p,
                };
                self.key_login(form.get("key").map(String::as_str).unwrap_or(""), peer)
            }
            ("GET", "/admin/live", None) => {
                json(StatusCode::UNAUTHORIZED, &ErrorResponse { code: 401, message: "sign in".into() })
            }
            (_, "/admin/logout", Some((token, s))) if method == "POST" => {
                if let Err(p) = session_form(req, &s, peer).await {
                    return p;
                }
                self.sessions.end(&token);
                let body =
                    public_page("Signed out", "<p>You are signed out.</p><p><a href=/admin>Sign in again</a></p>");
                html(StatusCode::OK, body, &[session_cookie("", self.secure_cookies)])
            }
            (_, _, None) if method == "GET" => match &self.oidc_login {
                // Straight to the provider.
                Some(start) => start(peer),
                None => html(StatusCode::OK, public_page("Sign in to tinyscale", &pages::login_with_key(None)), &[]),
            },
            (_, _, None) => refused(StatusCode::FORBIDDEN, "Sign in first: open /admin."),
            ("POST", "/admin/do", Some((token, s))) => {
                let form = match session_form(req, &s, peer).await {
                    Ok(f) => f,
                    Err(p) => return p,
                };
                self.blocking(move |a| a.act(&form, &token, &s)).await
            }
            ("GET", page, Some((token, s))) => {
                let page = page.to_string();
                self.blocking(move |a| a.page(&page, &token, &s)).await
            }
            (_, _, Some(_)) => refused(StatusCode::METHOD_NOT_ALLOWED, "Not a page of the admin UI."),
        }
    }

    /// `/register/<id>` for a signed-in admin: approve for a user at once.
    /// `None` without a session (or for an unknown login): the page as
    /// everyone else sees it.
    pub async fn register_page(self: &Arc<Self>, auth_id: &str, cookie_header: Option<&str>) -> Option<Page> {
        let (_, s) = self.session(cookie_header)?;
        let pending = self.state.pending_login(auth_id, Instant::now())?;
        let users = self.state.snapshot().users.values().map(|u| crate::api::views::user(u)).collect::<Vec<_>>();
        let body = pages::register_for_admin(&crate::api::views::pending(pending), &users, &s.csrf);
        Some(html(StatusCode::OK, admin_page("Register this device", &s.csrf, None, &body, false), &[]))
    }

    fn key_login(&self, key: &str, peer: IpAddr) -> Page {
        let header = format!("Bearer {}", key.trim());
        match crate::api::auth::check(
            &self.state,
            &self.failures,
            Some(&header),
            peer,
            clock::now_unix(),
            Instant::now(),
        ) {
            crate::api::auth::Verdict::Allowed => {
                let prefix = crate::state::api_key_prefix(key.trim()).to_string();
                self.sign_in(&format!("API key {prefix}"), Some(&prefix))
            }
            crate::api::auth::Verdict::Unauthorized => html(
                StatusCode::UNAUTHORIZED,
                public_page(
                    "Sign in to tinyscale",
                    &pages::login_with_key(Some("That key is not valid (wrong, expired or deleted).")),
                ),
                &[],
            ),
            crate::api::auth::Verdict::TooManyFailures => {
                refused(StatusCode::TOO_MANY_REQUESTS, "Too many failed sign-ins from this address; wait a minute.")
            }
        }
    }

    fn page(&self, page: &str, token: &str, s: &Session) -> Page {
        // What the last action said, kept in the session: a link cannot
        // make the UI say anything (review 13).
        let flash_kept = self.sessions.take_flash(token);
        let flash = flash_kept.as_ref().map(|(text, bad)| Flash { text, bad: *bad });
        let csrf = s.csrf.as_str();
        let shown = |title: &str, body: Result<String, String>, live: bool| match body {
            Ok(b) => html(StatusCode::OK, admin_page(title, csrf, flash, &b, live), &[]),
            Err(e) => html(
                StatusCode::INTERNAL_SERVER_ERROR,
                admin_page(title, csrf, Some(Flash { text: &e, bad: true }), "", false),
                &[],
            ),
        };
        match page {
            "/admin" | "/admin/" => {
                let nodes = self.api::<NodesResponse>("GET", "/api/v1/node", None::<()>);
                shown("Devices", nodes.map(|n| pages::devices(&n.nodes, csrf)), true)
            }
            "/admin/live" => match self.api::<NodesResponse>("GET", "/api/v1/node", None::<()>) {
                Ok(n) => {
                    let nodes: Vec<Live> = n
                        .nodes
                        .iter()
                        .map(|n| Live { id: n.id, online: n.online, last_seen: n.last_seen.clone() })
                        .collect();
                    json(StatusCode::OK, &LiveResponse { nodes })
                }
                Err(e) => json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorResponse { code: 500, message: e }),
            },
            "/admin/pending" => {
                let body = self.api::<PendingResponse>("GET", "/api/v1/auth/pending", None::<()>).and_then(|p| {
                    let u = self.api::<UsersResponse>("GET", "/api/v1/user", None::<()>)?;
                    Ok(pages::pending(&p.pending, &u.users, csrf))
                });
                shown("Waiting devices", body, false)
            }
            "/admin/users" => {
                let u = self.api::<UsersResponse>("GET", "/api/v1/user", None::<()>);
                shown("Users", u.map(|u| pages::users(&u.users, csrf)), false)
            }
            "/admin/keys" => {
                let body = self.api::<PreAuthKeysResponse>("GET", "/api/v1/preauthkey", None::<()>).and_then(|k| {
                    let u = self.api::<UsersResponse>("GET", "/api/v1/user", None::<()>)?;
                    Ok(pages::keys(&k.pre_auth_keys, &u.users, csrf, clock::now_unix()))
                });
                shown("Pre-auth keys", body, false)
            }
            "/admin/policy" => {
                let editable = matches!(self.state.settings().policy, crate::state::PolicySource::Database);
                let text = self.state.policy_text().map(|t| t.to_string()).unwrap_or_default();
                shown("Policy", Ok(pages::policy(&text, editable, csrf)), false)
            }
            "/admin/apikeys" => {
                let k = self.api::<ApiKeysResponse>("GET", "/api/v1/apikey", None::<()>);
                shown("API keys", k.map(|k| pages::api_keys(&k.api_keys, csrf)), false)
            }
            "/admin/status" => {
                let status = self.status();
                shown("Status", Ok(pages::status(&status)), false)
            }
            _ => refused(StatusCode::NOT_FOUND, "No such page."),
        }
    }

    fn status(&self) -> pages::Status {
        let snap = self.state.snapshot();
        let online = snap.nodes.keys().filter(|id| self.state.is_online(**id)).count();
        let (rss_kib, store_bytes) = (rss_kib(), dir_bytes(&self.store_path));
        pages::Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            rss_kib,
            store_bytes,
            nodes: snap.nodes.len(),
            online,
            derp_clients: self.derp_clients.as_ref().map(|c| c()),
            sessions: self.sessions.len(),
        }
    }

    /// Runs one form action; answers with a redirect to the page it came
    /// from (with what happened), or a page of its own.
    fn act(&self, f: &HashMap<String, String>, token: &str, s: &Session) -> Page {
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("").trim().to_string();
        let id = get("id");
        let back = |page: &str, r: Result<String, String>| {
            match r {
                Ok(done) => self.sessions.set_flash(token, done, false),
                Err(e) => self.sessions.set_flash(token, e, true),
            }
            redirect(page, &[])
        };
        let seg = crate::url::percent_encode(&id);
        match get("op").as_str() {
            "rename" => {
                let r = self.api::<NodeResponse>("POST", &renamed("node", &seg, &get("name")), None::<()>);
                back("/admin", r.map(|n| format!("Renamed to {}", n.node.given_name)))
            }
            "expire" => {
                let r = self.api::<NodeResponse>("POST", &format!("/api/v1/node/{seg}/expire"), None::<()>);
                back("/admin", r.map(|n| format!("{} must log in again", n.node.given_name)))
            }
            "delete" => {
                let r = self.api::<Empty>("DELETE", &format!("/api/v1/node/{seg}"), None::<()>);
                back("/admin", r.map(|_| "Device deleted".to_string()))
            }
            "tags" => {
                let tags = crate::text::comma_list(&get("tags")).collect();
                let r = self.api::<NodeResponse>(
                    "POST",
                    &format!("/api/v1/node/{seg}/tags"),
                    Some(SetTagsRequest { tags }),
                );
                back("/admin", r.map(|n| format!("{} tagged {}", n.node.given_name, n.node.tags.join(", "))))
            }
            "routes" => {
                // No box checked: the node serves none.
                let routes = crate::text::comma_list(&get("routes")).collect();
                let r = self.api::<NodeResponse>(
                    "POST",
                    &format!("/api/v1/node/{seg}/approve_routes"),
                    Some(ApproveRoutesRequest { routes }),
                );
                back("/admin", r.map(|n| format!("{} serves {}", n.node.given_name, n.node.approved_routes.join(", "))))
            }
            "approve" => {
                let body = AuthRegisterRequest { auth_id: get("auth_id"), user: UserRef::Text(get("user")) };
                let r = self.api::<NodeResponse>("POST", "/api/v1/auth/register", Some(body));
                back("/admin", r.map(|n| format!("{} joined the tailnet", n.node.given_name)))
            }
            "reject" => {
                let r =
                    self.api::<Empty>("POST", "/api/v1/auth/reject", Some(AuthIdRequest { auth_id: get("auth_id") }));
                back("/admin/pending", r.map(|_| "Refused".to_string()))
            }
            "user_create" => {
                let body = CreateUserRequest { name: get("name"), email: get("email"), ..Default::default() };
                let r = self.api::<UserResponse>("POST", "/api/v1/user", Some(body));
                back("/admin/users", r.map(|u| format!("User {} created", u.user.name)))
            }
            "user_rename" => {
                let r = self.api::<UserResponse>("POST", &renamed("user", &seg, &get("name")), None::<()>);
                back("/admin/users", r.map(|u| format!("Renamed to {}", u.user.name)))
            }
            "user_delete" => {
                let r = self.api::<Empty>("DELETE", &format!("/api/v1/user/{seg}"), None::<()>);
                back("/admin/users", r.map(|_| "User deleted".to_string()))
            }
            "key_create" => {
                let span = match clock::parse_span(&get("expiration")) {
                    Ok(s) => s,
                    Err(e) => return back("/admin/keys", Err(format!("valid for: {e}"))),
                };
                let acl_tags: Vec<String> = crate::text::comma_list(&get("tags")).collect();
                let user = Some(get("user")).filter(|u| !u.is_empty() && acl_tags.is_empty()).map(UserRef::Text);
                let body = CreatePreAuthKeyRequest {
                    user,
                    reusable: !get("reusable").is_empty(),
                    ephemeral: !get("ephemeral").is_empty(),
                    expiration: Some(clock::rfc3339(
                        clock::now_unix().saturating_add(i64::try_from(span.secs()).unwrap_or(i64::MAX)),
                    )),
                    acl_tags,
                };
                match self.api::<PreAuthKeyResponse>("POST", "/api/v1/preauthkey", Some(body)) {
                    Ok(k) => {
                        let body = pages::new_key(&k.pre_auth_key.key, &self.server_url);
                        html(StatusCode::OK, admin_page("New pre-auth key", &s.csrf, None, &body, false), &[])
                    }
                    Err(e) => back("/admin/keys", Err(e)),
                }
            }
            "key_expire" => {
                let id = match id.parse::<u64>() {
                    Ok(i) => i,
                    Err(_) => return back("/admin/keys", Err("not a key id".into())),
                };
                let r = self.api::<Empty>("POST", "/api/v1/preauthkey/expire", Some(ById { id }));
                back("/admin/keys", r.map(|_| format!("Key {id} expired")))
            }
            op @ ("policy_check" | "policy_set") => {
                let policy = f.get("policy").cloned().unwrap_or_default();
                let req = PolicyRequest { policy: policy.clone() };
                let r = if op == "policy_check" {
                    self.api::<Empty>("POST", "/api/v1/policy/check", Some(req))
                        .map(|_| "The policy checks.".to_string())
                } else {
                    self.api::<PolicyResponse>("PUT", "/api/v1/policy", Some(req))
                        .map(|_| "Policy saved and in force.".to_string())
                };
                // The text stays in the editor either way; errors name their lines.
                let (status, flash) = match &r {
                    Ok(t) => (StatusCode::OK, Flash { text: t, bad: false }),
                    Err(e) => (StatusCode::BAD_REQUEST, Flash { text: e, bad: true }),
                };
                html(
                    status,
                    admin_page("Policy", &s.csrf, Some(flash), &pages::policy(&policy, true, &s.csrf), false),
                    &[],
                )
            }
            "apikey_create" => {
                let span = match clock::parse_span(&get("expiration")) {
                    Ok(s) => s,
                    Err(e) => return back("/admin/apikeys", Err(format!("valid for: {e}"))),
                };
                let body = CreateApiKeyRequest {
                    expiration: Some(clock::rfc3339(
                        clock::now_unix().saturating_add(i64::try_from(span.secs()).unwrap_or(i64::MAX)),
                    )),
                };
                match self.api::<CreateApiKeyResponse>("POST", "/api/v1/apikey", Some(body)) {
                    Ok(k) => html(
                        StatusCode::OK,
                        admin_page("New API key", &s.csrf, None, &pages::new_api_key(&k.api_key), false),
                        &[],
                    ),
                    Err(e) => back("/admin/apikeys", Err(e)),
                }
            }
            "apikey_expire" => {
                let body = ExpireApiKeyRequest { prefix: Some(get("prefix")), id: None };
                let r = self.api::<Empty>("POST", "/api/v1/apikey/expire", Some(body));
                back("/admin/apikeys", r.map(|_| "API key expired".to_string()))
            }
            "apikey_delete" => {
                let r = self.api::<Empty>(
                    "DELETE",
                    &format!("/api/v1/apikey/{}", crate::url::percent_encode(&get("prefix"))),
                    None::<()>,
                );
                back("/admin/apikeys", r.map(|_| "API key deleted".to_string()))
            }
            other => back("/admin", Err(format!("unknown action {other:?}"))),
        }
    }
}

/// The API path that renames `kind` (`node`, `user`) `id` to `name`.
fn renamed(kind: &str, id: &str, name: &str) -> String {
    format!("/api/v1/{kind}/{id}/rename/{}", crate::url::percent_encode(name))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Live {
    #[serde(with = "crate::api::types::id")]
    id: u64,
    online: bool,
    last_seen: Option<String>,
}

#[derive(Serialize)]
struct LiveResponse {
    nodes: Vec<Live>,
}

fn json(status: StatusCode, body: &impl Serialize) -> Page {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A form of session `s`'s pages: refused (403) without its CSRF token.
async fn session_form(req: Request<Incoming>, s: &Session, peer: IpAddr) -> Result<HashMap<String, String>, Page> {
    let form = read_form(req).await?;
    if !form.get("csrf").is_some_and(|c| same(c, &s.csrf)) {
        log::info!("admin: a form without this session's token was refused ({peer})");
        return Err(refused(StatusCode::FORBIDDEN, "This form did not come from a page of this session."));
    }
    Ok(form)
}

/// A form body, bounded in size and time; several values of one name are
/// joined by commas (the route checkboxes).
async fn read_form(req: Request<Incoming>) -> Result<HashMap<String, String>, Page> {
    // Forms buffered at once (each may hold a policy): RAM stays bounded.
    static FORMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    // Invariant: the semaphore is static and never closed.
    let _place = FORMS.acquire().await.expect("the form semaphore is never closed");
    let text = read_body(req, MAX_FORM).await?;
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in crate::url::form_pairs(&text) {
        if k == "route" {
            out.entry("routes".into())
                .and_modify(|r| {
                    r.push(',');
                    r.push_str(&v);
                })
                .or_insert(v);
        } else {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// The sign-in form, which anyone may send: an API key, a few hundred bytes.
async fn read_small_form(req: Request<Incoming>) -> Result<HashMap<String, String>, Page> {
    Ok(crate::url::form(&read_body(req, 4096).await?))
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<String, Page> {
    match tokio::time::timeout(FORM_DEADLINE, Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(b)) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Ok(Err(_)) => Err(refused(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.")),
        Err(_) => Err(refused(StatusCode::REQUEST_TIMEOUT, "The form did not arrive in time.")),
    }
}

/// This process's resident memory, from /proc.
fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// The bytes of the files under `dir` (the store), one level of folders deep as sled keeps them.
fn dir_bytes(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let m = e.metadata().ok()?;
        if m.is_dir() {
            for f in std::fs::read_dir(e.path()).ok()?.flatten() {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        } else {
            total += m.len();
        }
    }
    Some(total)
}
