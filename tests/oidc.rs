//! OIDC login against the real test provider (../shared/test-idp), with the
//! Rust test client as the device and curl with a cookie jar as the browser.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use common::client::{self, Client};
use common::idp::{self, confirm_form, Browser, Idp};
use common::*;

struct Setup {
    dir: tempfile::TempDir,
    idp: Idp,
    server: Server,
    url: String,
}

impl Setup {
    fn d(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// tinyscale with the seed's oidc block, pointed at a fresh test provider
/// that signs with `alg` and logs in `user` (through `extra_params.login_hint`).
fn setup(alg: &str, user: &str, oidc_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let oidc = format!(
        "  only_start_if_oidc_is_available: true\n  scope: [\"openid\", \"profile\", \"email\", \"custom\"]\n  extra_params:\n    domain_hint: acmecorp.net\n    login_hint: {user}\n  allowed_groups:\n    - /headscale\n  pkce:\n    enabled: true\n    method: S256\n  strip_email_domain: true\n{oidc_extra}"
    );
    let (idp, server, url) = idp::server_with_provider(dir.path(), &[("ALG", alg)], "", &oidc);
    Setup { dir, idp, server, url }
}

/// A device asking to join: its client, node key and login URL.
async fn device(s: &Setup, hostname: &str) -> (Client, [u8; 32], String) {
    let addr = s.server.host_port();
    let server = client::server_key(&addr).await;
    let mut c = Client::connect(&addr, server, client::random32()).await.unwrap();
    let node = client::random32();
    let (status, r) = c
        .register(&json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node), "Hostinfo": {"Hostname": hostname}}))
        .await;
    assert_eq!(status, 200);
    let url = r["AuthURL"].as_str().expect("an AuthURL").to_string();
    assert!(url.starts_with(&format!("{}/register/", s.url)), "{url}");
    (c, node, url)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The whole happy path: browser login, confirmation, the device admitted.
async fn join(s: &Setup, hostname: &str) -> Value {
    let (mut c, node, url) = device(s, hostname).await;
    let follow = json!({"Version": client::VERSION, "NodeKey": client::node_key_text(&node), "Followup": url});
    let waiting = tokio::spawn(async move { c.register(&follow).await });
    let d = s.d();
    let base = s.url.clone();
    let done = blocking(move || {
        let b = Browser::new(&d);
        let page = b.get(&url);
        assert_eq!(page.status, 200, "the login did not reach the confirmation page: {}", page.body);
        assert!(page.body.contains("Add this device to the tailnet?"), "{}", page.body);
        let (action, csrf) = confirm_form(&page.body);
        b.post(&format!("{base}{action}"), &format!("csrf={csrf}"))
    })
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Device added"), "{}", done.body);
    let (status, r) = tokio::time::timeout(std::time::Duration::from_secs(15), waiting).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["MachineAuthorized"], true, "the waiting client was not answered: {r}");
    r
}

fn nodes(d: &Path) -> Vec<Value> {
    json(d, &["nodes", "list", "-o", "json"]).as_array().unwrap().clone()
}

#[tokio::test]
async fn alice_joins_with_the_seed_config() {
    let s = setup("RS256", "alice", "");
    let r = join(&s, "laptop").await;
    assert_eq!(r["Login"]["LoginName"], "alice@example.com");
    let n = nodes(&s.d());
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["user"]["name"], "alice");
    assert_eq!(n[0]["user"]["provider"], "oidc");
    assert!(n[0]["user"]["provider_id"].as_str().unwrap().starts_with(s.idp.issuer.trim_end_matches('/')));
    assert_eq!(n[0]["register_method"], "REGISTER_METHOD_OIDC");
    // The same person again is the same user, never a second one.
    join(&s, "phone").await;
    let users = json(&s.d(), &["users", "list", "-o", "json"]);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert!(!s.server.log().contains(idp::SECRET), "the client secret reached the log");
}

#[tokio::test]
async fn bob_joins_with_a_group_name_without_the_slash() {
    let s = setup("RS256", "bob", "");
    join(&s, "bobs-pc").await;
    assert_eq!(nodes(&s.d())[0]["user"]["name"], "bob");
}

#[tokio::test]
async fn es256_and_hs256_tokens_are_accepted() {
    for alg in ["ES256", "HS256", "PS256", "ES384"] {
        let s = setup(alg, "alice", "");
        join(&s, "laptop").await;
        assert_eq!(nodes(&s.d()).len(), 1, "{alg}");
    }
}

#[tokio::test]
async fn es512_is_refused_with_a_reason() {
    let s = setup("ES512", "alice", "");
    let (_c, _node, url) = device(&s, "laptop").await;
    let d = s.d();
    let page = blocking(move || Browser::new(&d).get(&url)).await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("P-521"), "{}", page.body);
    assert!(nodes(&s.d()).is_empty());
}

/// Logs in and expects a refusal page with `status` mentioning `says`.
async fn refused(s: &Setup, status: u16, says: &str) -> String {
    let (_c, _node, url) = device(s, "laptop").await;
    let d = s.d();
    let page = blocking(move || Browser::new(&d).get(&url)).await;
    assert_eq!(page.status, status, "{}", page.body);
    assert!(page.body.contains(says), "the page should say {says:?}:\n{}", page.body);
    assert!(nodes(&s.d()).is_empty(), "a refused login registered a node");
    page.body
}

#[tokio::test]
async fn dave_outside_the_allowed_group_is_refused() {
    let s = setup("RS256", "dave", "");
    refused(&s, 401, "not in a group allowed").await;
}

#[tokio::test]
async fn carol_with_an_unverified_email_is_told_what_to_change() {
    let s = setup("RS256", "carol", "  allowed_domains: [example.com]\n");
    let body = refused(&s, 401, "not verified").await;
    assert!(body.contains("email_verified_required"), "the admin is told the fix:\n{body}");
}

#[tokio::test]
async fn replayed_states_missing_cookies_and_wrong_verifiers_are_refused() {
    let s = setup("RS256", "alice", "");
    let cb = format!("{}/oidc/callback", s.url);
    // A: walk to the callback, use it once, then replay it.
    let (_c, _n, url) = device(&s, "laptop").await;
    let d = s.d();
    let cb2 = cb.clone();
    let (first, replay, nocookie) = blocking(move || {
        let b = Browser::new(&d);
        let callback = b.walk_until(&url, &cb2);
        let first = b.get(&callback);
        let replay = b.get(&callback);
        // The same callback from a browser that never started the login.
        let nocookie = Browser::new(&d).get(&callback);
        (first, replay, nocookie)
    })
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(replay.status, 410, "{}", replay.body);
    assert_eq!(nocookie.status, 400, "{}", nocookie.body);
    assert!(nocookie.body.contains("did not start in this browser"));
    // B and C in one browser: C's code with B's state (and so B's PKCE verifier).
    let (_c1, _n1, url_b) = device(&s, "b").await;
    let (_c2, _n2, url_c) = device(&s, "c").await;
    let d = s.d();
    let mixed = blocking(move || {
        let b = Browser::new(&d);
        let cb_b = b.walk_until(&url_b, &cb);
        let cb_c = b.walk_until(&url_c, &cb);
        let state_b = cb_b.split("state=").nth(1).unwrap().split('&').next().unwrap().to_string();
        let code_c = cb_c.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
        b.get(&format!("{cb}?code={code_c}&state={state_b}"))
    })
    .await;
    assert_eq!(mixed.status, 403, "{}", mixed.body);
    assert!(mixed.body.contains("did not accept"), "{}", mixed.body);
    assert!(nodes(&s.d()).is_empty());
    // The confirmation needs the CSRF cookie.
    let (_c3, _n3, url_d) = device(&s, "d").await;
    let d = s.d();
    let base = s.url.clone();
    let forged = blocking(move || {
        let b = Browser::new(&d);
        let page = b.get(&url_d);
        let (action, csrf) = confirm_form(&page.body);
        Browser::new(&d).post(&format!("{base}{action}"), &format!("csrf={csrf}"))
    })
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(nodes(&s.d()).is_empty());
    // A state that is no state of ours, with a two-byte character across its
    // sixth byte: it once took a byte slice off a char boundary (a panic,
    // which aborts the router builds). Refused, and the server lives on.
    let (status, body) = http_get(&s.server.host_port(), "/oidc/callback?state=aaaaa%C3%A9bbbbbbbbbbbbbbbbbb&code=x");
    assert_eq!(status, 400, "{body}");
    assert_eq!(http_get(&s.server.host_port(), "/health").0, 200);
}

#[tokio::test]
async fn use_expiry_from_token_sets_the_node_expiry() {
    let s = setup("RS256", "alice", "  use_expiry_from_token: true\n");
    join(&s, "laptop").await;
    let n = nodes(&s.d());
    let exp = tinyscale::clock::parse_rfc3339(n[0]["expiry"].as_str().expect("an expiry")).unwrap();
    let left = exp - tinyscale::clock::now_unix();
    assert!((200..=330).contains(&left), "expiry {left}s away; the test IdP's tokens live 300s");
}

#[tokio::test]
async fn cli_users_are_linked_only_by_a_verified_email() {
    let s = setup("RS256", "alice", "");
    let d = s.d();
    ok(&d, &["users", "create", "alice", "--email", "alice@example.com"]);
    ok(&d, &["users", "create", "bob"]);
    let before = json(&d, &["users", "list", "--name", "alice", "-o", "json"])[0]["id"].clone();
    join(&s, "laptop").await;
    let alice = json(&d, &["users", "list", "--name", "alice", "-o", "json"]);
    assert_eq!(alice[0]["id"], before, "the CLI user with alice's verified email is alice");
    assert_eq!(alice[0]["provider"], "oidc");
    drop(s);
    // bob exists from the CLI with no email: bob's login is a new user, bob-1.
    let s = setup("RS256", "bob", "");
    let d = s.d();
    ok(&d, &["users", "create", "bob"]);
    join(&s, "pc").await;
    let n = nodes(&d);
    assert_eq!(n[0]["user"]["name"], "bob-1");
    assert_eq!(json(&d, &["users", "list", "--name", "bob", "-o", "json"])[0]["provider"], "");
}

/// Issue 10, item 4: with `email_verified_required: false`, carol's
/// unverified email (the test provider sends `email_verified: false` for her)
/// must not take over the CLI user who has that email.
#[tokio::test]
async fn an_unverified_email_never_takes_over_a_cli_user() {
    let s = setup("RS256", "carol", "  email_verified_required: false\n");
    let d = s.d();
    ok(&d, &["users", "create", "carol", "--email", "carol@example.com"]);
    let cli = json(&d, &["users", "list", "--name", "carol", "-o", "json"])[0].clone();
    join(&s, "laptop").await;
    let n = nodes(&d);
    assert_eq!(n[0]["user"]["name"], "carol-1", "the login got the CLI user: {}", n[0]["user"]);
    assert_eq!(n[0]["user"]["provider"], "oidc");
    assert_eq!(n[0]["user"]["email"], "carol@example.com", "the unverified email is kept on the new user");
    let after = json(&d, &["users", "list", "--name", "carol", "-o", "json"])[0].clone();
    assert_eq!(after, cli, "the CLI user changed");
}

#[test]
fn an_unreachable_provider_stops_the_start_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}/application/o/tinyscale/", idp::free_port());
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("listen_addr: 127.0.0.1:0\noidc:\n  issuer: \"{dead}\"\n  client_id: x\n  client_secret: y\n"),
    )
    .unwrap();
    let o = run(dir.path(), &["serve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&dead), "the message names the issuer URL:\n{}", stderr(&o));
    // Without the requirement it starts, and pre-auth keys and the CLI work.
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("listen_addr: 127.0.0.1:0\noidc:\n  only_start_if_oidc_is_available: false\n  issuer: \"{dead}\"\n  client_id: x\n  client_secret: y\n"),
    )
    .unwrap();
    let s = Server::start(dir.path(), &[], &[]);
    assert!(s.log().contains("starting without it"), "{}", s.log());
    ok(dir.path(), &["users", "create", "eve"]);
}

#[test]
fn a_real_client_logs_in_as_alice_through_the_provider() {
    use common::netns::Netns;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new();
    let (_idp, url) = idp::in_namespace(&ns, d, "", "alice");
    let _server = ns.serve(d);
    let node = ns.start_node("laptop", url, None, &d.join("n"));
    let prefix = format!("{url}/register/");
    assert!(node.wait_log(30, |l| l.contains(&prefix)), "no AuthURL from the client");
    let log = node.log();
    let at = log.find(&prefix).unwrap();
    let auth_url: String =
        log[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || ":/._-".contains(*c)).collect();
    let pid = ns.pid();
    let browser = Browser::inside(d, move || {
        let mut c = std::process::Command::new("nsenter");
        c.args(["-t", &pid, "-n", "--"]);
        c
    });
    let page = browser.get(&auth_url);
    assert_eq!(page.status, 200, "{}", page.body);
    let (action, csrf) = confirm_form(&page.body);
    let done = browser.post(&format!("{url}{action}"), &format!("csrf={csrf}"));
    assert!(done.body.contains("Device added"), "{}", done.body);
    assert!(node.wait_running(60), "the client never reached Running after the login");
    let list = json(d, &["nodes", "list", "-o", "json"]);
    assert_eq!(list[0]["user"]["name"], "alice");
    assert_eq!(list[0]["given_name"], "laptop");
    node.stop();
}
