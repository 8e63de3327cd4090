//! The `tinyscale` command line: Headscale's verbs and flags.
//!
//! `serve` runs the server; `configtest` and `version` work offline; every
//! other verb asks the running server over its unix socket and prints the
//! answer as a table or, with `-o json|yaml`, as Headscale-shaped data.

mod args;
mod client;
// For the fuzz target of the reply reader.
pub use client::{parse_reply, Reply};
mod output;
mod policy;
mod routes;

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::clock;
use crate::config::{self, Config};
use crate::url::percent_encode;
use args::{switch, value, Flag, Parsed};
use output::{cell, emit, table, when, Format};

const USAGE: &str = "\
tinyscale — a Tailscale control server for the home router

Usage: tinyscale [-c FILE] <command> [flags]

Commands:
  serve                          run the server (embedded defaults when there is no config)
  configtest                     check the config offline; every error with its line
  version                        print the version
  users create NAME              add a user            (--display-name, --email, --picture-url)
  users list                     list users            (-i ID, -n NAME, -e EMAIL)
  users rename                   rename a user         (-i ID | -n NAME) -r NEW
  users destroy                  delete a user         (-i ID | -n NAME) [--force]
  preauthkeys create             make a pre-auth key   -u USER [--reusable] [--ephemeral] [--tags tag:a,tag:b] [-e 1h|90d]
  preauthkeys list               list pre-auth keys    [-u USER]
  preauthkeys expire             expire a key          (-i ID | KEY)
  preauthkeys delete             delete a key          (-i ID | KEY)
  nodes list                     list nodes            [-u USER]
  nodes rename -i ID NEW         rename a node (its MagicDNS name)
  nodes tag -i ID -t tag:a,tag:b the node is owned by these tags from now on
  nodes approve-routes -i ID -r 192.168.1.0/24,0.0.0.0/0
                                 the routes the node serves (announced ones only; -r '' approves none)
  nodes list-routes [-i ID]      announced, approved and served routes
  nodes expire -i ID             expire a node's key now
  nodes delete -i ID [--force]   delete a node
  nodes register --key ID -u USER  approve a waiting device (older form of auth register)
  auth register --auth-id ID -u USER   approve a device waiting at its login URL
  auth pending                   list devices waiting for a login
  debug create-node              add a node without a device (-u USER --name N --key nodekey:...)
  policy get                     print the policy in force
  policy set -f FILE             check and put a policy in force (policy.mode: database)
  policy check -f FILE           check a policy offline; every error with its line and column
  policy simulate --topology TOPO.json -f FILE
                                 what each node would get (filter, peers, routes), offline

Global flags:
  -c, --config FILE              config file (else TINYSCALE_CONFIG, /etc/tinyscale/config.yaml, ./config.yaml)
  -o, --output json|json-line|yaml   machine-readable output on stdout
      --force                    do not ask before deleting
";

/// A failure and the exit code it earns: 2 for a mistake in the command line, 1 otherwise.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

fn usage_err(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

fn fail(message: impl Into<String>) -> Failure {
    Failure { code: 1, message: message.into() }
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    match dispatch(&args) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("Error: {}", f.message);
            f.code
        }
    }
}

struct Ctx {
    config_flag: Option<PathBuf>,
    format: Format,
    force: bool,
}

impl Ctx {
    /// Loads the config quietly: client verbs need only the socket path.
    fn config(&self) -> Result<Config, Failure> {
        let file = config::locate(self.config_flag.as_deref(), &config::process_env).map_err(fail)?;
        config::load(file.as_deref(), &config::process_env)
            .map(|l| l.config)
            .map_err(|e| fail(e.to_string().trim_end().to_string()))
    }

    fn call(&self, method: &str, target: &str, body: Option<Value>) -> Result<Value, Failure> {
        let cfg = self.config()?;
        let reply = client::call(&cfg.unix_socket, method, target, body.as_ref()).map_err(fail)?;
        if reply.status == 200 {
            Ok(reply.body)
        } else {
            let msg = reply.body["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {}", reply.status));
            Err(fail(msg))
        }
    }

    /// GETs a list (optionally `?user=`) and returns the array under `field`.
    fn list_for_user(&self, path: &str, field: &str, user: Option<&str>) -> Result<Vec<Value>, Failure> {
        let q = user.map(|u| format!("?user={}", percent_encode(u))).unwrap_or_default();
        let r = self.call("GET", &format!("{path}{q}"), None)?;
        Ok(r[field].as_array().cloned().unwrap_or_default())
    }

    fn confirm(&self, question: &str) -> Result<(), Failure> {
        if self.force {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(usage_err(format!("{question} Not on a terminal, so add --force to confirm.")));
        }
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            Ok(())
        } else {
            Err(fail("cancelled"))
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), Failure> {
    // Global flags may come before the command; parse them leniently here and
    // strictly again with each command's own flags.
    let first = args.iter().position(|a| !a.starts_with('-') && !is_global_value(args, a));
    let Some(cmd_at) = first else {
        if args.iter().any(|a| a == "-h" || a == "--help") || args.is_empty() {
            print!("{USAGE}");
            return if args.is_empty() { Err(usage_err("no command given")) } else { Ok(()) };
        }
        return Err(usage_err("no command given (see tinyscale --help)"));
    };
    let cmd = args[cmd_at].as_str();
    let rest: Vec<String> = args[..cmd_at].iter().chain(&args[cmd_at + 1..]).cloned().collect();
    match cmd {
        "serve" => serve(&rest),
        "configtest" => configtest(&rest),
        "version" => version(&rest),
        "users" | "user" | "namespaces" | "namespace" => users(&rest),
        "preauthkeys" | "preauthkey" | "authkey" | "authkeys" | "pre" => preauthkeys(&rest),
        "nodes" | "node" | "machines" | "machine" => nodes(&rest),
        "auth" => auth(&rest),
        "debug" => debug(&rest),
        "policy" | "acl" | "acls" => policy::policy(&rest),
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(usage_err(format!("unknown command {other:?} (see tinyscale --help)"))),
    }
}

/// Whether `a` is the value of a preceding global flag (`-c FILE`).
fn is_global_value(args: &[String], a: &str) -> bool {
    args.windows(2).any(|w| w[1] == a && matches!(w[0].as_str(), "-c" | "--config" | "-o" | "--output"))
}

fn ctx(p: &Parsed) -> Result<Ctx, Failure> {
    Ok(Ctx {
        config_flag: p.get("config").map(PathBuf::from),
        format: output::parse_format(p.get("output")).map_err(usage_err)?,
        force: p.has("force"),
    })
}

fn parse(args: &[String], flags: &[Flag], cmd: &str) -> Result<(Parsed, Ctx), Failure> {
    let p = args::parse(args, flags, cmd).map_err(usage_err)?;
    if p.has("help") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let c = ctx(&p)?;
    Ok((p, c))
}

fn no_extra_words(p: &Parsed, from: usize, cmd: &str) -> Result<(), Failure> {
    match p.words.get(from) {
        Some(w) => Err(usage_err(format!("unexpected argument {w:?} for `{cmd}`"))),
        None => Ok(()),
    }
}

fn serve(args: &[String]) -> Result<(), Failure> {
    let (p, c) = parse(args, &[], "serve")?;
    no_extra_words(&p, 0, "serve")?;
    crate::logger::init(log::LevelFilter::Info, crate::logger::Format::Text);
    let file = config::locate(c.config_flag.as_deref(), &config::process_env).map_err(fail)?;
    let loaded = config::load(file.as_deref(), &config::process_env).map_err(|e| {
        for w in &e.warnings {
            log::warn!("config: {w}");
        }
        fail(e.to_string().trim_end().to_string())
    })?;
    crate::logger::init(loaded.config.log_level, loaded.config.log_format);
    match &loaded.config.file {
        Some(f) => log::info!("config {}", f.display()),
        None => log::info!("no config file found: running on embedded defaults"),
    }
    for w in &loaded.warnings {
        log::warn!("config: {w}");
    }
    for n in &loaded.notes {
        log::info!("config: {n}");
    }
    crate::server::run(loaded.config).map_err(|e| fail(e.to_string()))
}

fn configtest(args: &[String]) -> Result<(), Failure> {
    let (p, c) = parse(args, &[], "configtest")?;
    no_extra_words(&p, 0, "configtest")?;
    let file = config::locate(c.config_flag.as_deref(), &config::process_env).map_err(fail)?;
    let name = file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "embedded defaults".into());
    let show = |level: &str, d: &config::Diag| match &file {
        Some(f) if d.line().is_some() => {
            eprintln!("{level}: {}:{}: {}", f.display(), d.line().unwrap_or(0), without_line(d))
        }
        _ => eprintln!("{level}: {d}"),
    };
    match config::load(file.as_deref(), &config::process_env) {
        Ok(l) => {
            for w in &l.warnings {
                show("warning", w);
            }
            for n in &l.notes {
                show("note", n);
            }
            println!("{name}: OK");
            Ok(())
        }
        Err(e) => {
            for w in &e.warnings {
                show("warning", w);
            }
            for d in &e.errors {
                show("error", d);
            }
            Err(fail(format!("{name}: {} error(s)", e.errors.len())))
        }
    }
}

/// A diagnostic without its `line N:` prefix (the caller prints `file:N:`).
fn without_line(d: &config::Diag) -> String {
    config::Diag { origin: config::Origin::File(None), ..d.clone() }.to_string()
}

fn version(args: &[String]) -> Result<(), Failure> {
    let (p, c) = parse(args, &[], "version")?;
    no_extra_words(&p, 0, "version")?;
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "target": env!("TINYSCALE_TARGET"),
        "built": clock::rfc3339(clock::build_epoch()),
    });
    emit(c.format, &v, || {
        format!("tinyscale {} ({}, built {})", env!("CARGO_PKG_VERSION"), cell(&v["target"]), cell(&v["built"]))
    });
    Ok(())
}

fn sub(p: &Parsed, group: &str, verbs: &str) -> Result<String, Failure> {
    p.words.first().cloned().ok_or_else(|| usage_err(format!("`{group}` needs a verb: {verbs}")))
}

fn user_row(u: &Value) -> Vec<String> {
    vec![cell(&u["id"]), cell(&u["name"]), cell(&u["display_name"]), cell(&u["email"]), when(&u["created_at"])]
}

const USER_COLUMNS: &[&str] = &["ID", "Name", "Display name", "Email", "Created"];

/// The id of the user named by `-i ID` or `-n NAME` (or a bare word).
fn pick_user(c: &Ctx, p: &Parsed, word: Option<&String>) -> Result<(u64, String), Failure> {
    let q = match (p.get("identifier"), p.get("name"), word) {
        (Some(id), _, _) => format!("id={}", percent_encode(id)),
        (None, Some(n), _) => format!("name={}", percent_encode(n)),
        (None, None, Some(w)) if w.bytes().all(|b| b.is_ascii_digit()) => format!("id={w}"),
        (None, None, Some(w)) => format!("name={}", percent_encode(w)),
        (None, None, None) => return Err(usage_err("say which user: --identifier ID or --name NAME")),
    };
    let r = c.call("GET", &format!("/api/v1/user?{q}"), None)?;
    let u = r["users"].get(0).ok_or_else(|| fail(format!("no such user ({})", q.replace('=', " "))))?;
    Ok((u["id"].as_u64().unwrap_or(0), cell(&u["name"])))
}

fn users(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[
        value("identifier", Some('i')),
        value("name", Some('n')),
        value("email", Some('e')),
        value("display-name", Some('d')),
        value("picture-url", Some('p')),
        value("new-name", Some('r')),
    ];
    let (p, c) = parse(args, FLAGS, "users")?;
    let verb = sub(&p, "users", "create, list, rename, destroy")?;
    match verb.as_str() {
        "create" | "c" | "new" => {
            let name = p.words.get(1).ok_or_else(|| usage_err("usage: tinyscale users create NAME"))?;
            no_extra_words(&p, 2, "users create")?;
            let body = json!({
                "name": name,
                "display_name": p.get("display-name").unwrap_or(""),
                "email": p.get("email").unwrap_or(""),
                "picture_url": p.get("picture-url").unwrap_or(""),
            });
            let r = c.call("POST", "/api/v1/user", Some(body))?;
            emit(c.format, &r["user"], || {
                format!("User created: {} (id {})", cell(&r["user"]["name"]), cell(&r["user"]["id"]))
            });
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "users list")?;
            let mut q = Vec::new();
            for (flag, key) in [("identifier", "id"), ("name", "name"), ("email", "email")] {
                if let Some(v) = p.get(flag) {
                    q.push(format!("{key}={}", percent_encode(v)));
                }
            }
            let r = c.call("GET", &format!("/api/v1/user?{}", q.join("&")), None)?;
            let list = r["users"].as_array().cloned().unwrap_or_default();
            emit(c.format, &Value::Array(list.clone()), || {
                table(USER_COLUMNS, &list.iter().map(user_row).collect::<Vec<_>>())
            });
        }
        "rename" | "mv" => {
            // Headscale's older form: `users rename OLD NEW`.
            let (id, old) = pick_user(&c, &p, p.words.get(1))?;
            let new_name = p
                .get("new-name")
                .map(str::to_string)
                .or_else(|| p.words.get(2).cloned())
                .ok_or_else(|| usage_err("say the new name: --new-name NEW"))?;
            let r = c.call("POST", &format!("/api/v1/user/{id}/rename/{}", percent_encode(&new_name)), None)?;
            emit(c.format, &r["user"], || format!("User renamed: {old} -> {}", cell(&r["user"]["name"])));
        }
        "destroy" | "delete" | "rm" => {
            let (id, name) = pick_user(&c, &p, p.words.get(1))?;
            c.confirm(&format!("Delete user {name:?} (id {id}) and its pre-auth keys?"))?;
            c.call("DELETE", &format!("/api/v1/user/{id}"), None)?;
            emit(c.format, &json!({"id": id, "name": name, "deleted": true}), || format!("User destroyed: {name}"));
        }
        other => return Err(usage_err(format!("unknown verb `users {other}` (create, list, rename, destroy)"))),
    }
    Ok(())
}

fn key_row(k: &Value, now: i64) -> Vec<String> {
    let owner = match k["acl_tags"].as_array() {
        Some(tags) if !tags.is_empty() => cell(&k["acl_tags"]),
        _ => cell(&k["user"]["name"]),
    };
    let expired =
        clock::parse_rfc3339(k["expiration"].as_str().unwrap_or("")).is_some_and(|t| crate::state::has_passed(t, now));
    let expiration = if expired { format!("{} (expired)", when(&k["expiration"])) } else { when(&k["expiration"]) };
    vec![
        cell(&k["id"]),
        cell(&k["key"]),
        cell(&k["reusable"]),
        cell(&k["ephemeral"]),
        cell(&k["used"]),
        expiration,
        when(&k["created_at"]),
        owner,
    ]
}

/// The id of the key named by `-i ID` or by its text (whole, masked or prefix).
fn pick_key(c: &Ctx, p: &Parsed) -> Result<u64, Failure> {
    if let Some(id) = p.get("id") {
        return id.parse().map_err(|_| usage_err(format!("{id:?} is not a key id")));
    }
    let text = p.words.get(1).ok_or_else(|| usage_err("say which key: --id ID (see `tinyscale preauthkeys list`)"))?;
    let prefix = text.strip_prefix(crate::secrets::AUTH_KEY_PREFIX).unwrap_or(text);
    let prefix = prefix.split('-').next().unwrap_or(prefix);
    let r = c.call("GET", "/api/v1/preauthkey", None)?;
    r["pre_auth_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| {
            k["key"]
                .as_str()
                .and_then(|s| s.strip_prefix(crate::secrets::AUTH_KEY_PREFIX))
                .and_then(|s| s.split('-').next())
                == Some(prefix)
        })
        .and_then(|k| k["id"].as_u64())
        .ok_or_else(|| fail(format!("no pre-auth key {text:?}")))
}

fn preauthkeys(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[
        value("user", Some('u')),
        switch("reusable", None),
        switch("ephemeral", None),
        value("tags", None),
        value("expiration", Some('e')),
        value("id", Some('i')),
    ];
    let (p, c) = parse(args, FLAGS, "preauthkeys")?;
    let verb = sub(&p, "preauthkeys", "create, list, expire, delete")?;
    let now = clock::now_unix();
    match verb.as_str() {
        "create" | "c" | "new" => {
            no_extra_words(&p, 1, "preauthkeys create")?;
            let span = clock::parse_span(p.get("expiration").unwrap_or("1h"))
                .map_err(|e| usage_err(format!("--expiration: {e}")))?;
            let tags = p.list("tags");
            let mut body = json!({
                "reusable": p.has("reusable"),
                "ephemeral": p.has("ephemeral"),
                "expiration": clock::rfc3339(now.saturating_add(span.secs() as i64)),
                "acl_tags": tags,
            });
            if let Some(u) = p.get("user") {
                body["user"] = json!(u);
            } else if tags.is_empty() {
                return Err(usage_err("say whose key it is: --user NAME (or --tags tag:x for a tagged key)"));
            }
            let r = c.call("POST", "/api/v1/preauthkey", Some(body))?;
            emit(c.format, &r["pre_auth_key"], || cell(&r["pre_auth_key"]["key"]));
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "preauthkeys list")?;
            let list = c.list_for_user("/api/v1/preauthkey", "pre_auth_keys", p.get("user"))?;
            emit(c.format, &Value::Array(list.clone()), || {
                let rows: Vec<_> = list.iter().map(|k| key_row(k, now)).collect();
                table(&["ID", "Key/Prefix", "Reusable", "Ephemeral", "Used", "Expiration", "Created", "Owner"], &rows)
            });
        }
        "expire" => {
            no_extra_words(&p, 2, "preauthkeys expire")?;
            let id = pick_key(&c, &p)?;
            let r = c.call("POST", "/api/v1/preauthkey/expire", Some(json!({ "id": id })))?;
            emit(c.format, &r["pre_auth_key"], || format!("Key {id} expired"));
        }
        "delete" | "rm" | "del" => {
            no_extra_words(&p, 2, "preauthkeys delete")?;
            let id = pick_key(&c, &p)?;
            c.call("DELETE", &format!("/api/v1/preauthkey?id={id}"), None)?;
            emit(c.format, &json!({"id": id, "deleted": true}), || format!("Key {id} deleted"));
        }
        other => return Err(usage_err(format!("unknown verb `preauthkeys {other}` (create, list, expire, delete)"))),
    }
    Ok(())
}

fn node_row(n: &Value) -> Vec<String> {
    let expired = n["expired"].as_bool() == Some(true);
    vec![
        cell(&n["id"]),
        cell(&n["name"]),
        cell(&n["given_name"]),
        cell(&n["user"]["name"]),
        cell(&n["ip_addresses"]),
        cell(&n["ephemeral"]),
        when(&n["last_seen"]),
        if n["expiry"].is_null() { "never".into() } else { when(&n["expiry"]) },
        if n["online"].as_bool() == Some(true) { "online".into() } else { "offline".into() },
        if expired { "yes".into() } else { "no".into() },
    ]
}

fn node_id(p: &Parsed) -> Result<u64, Failure> {
    let id =
        p.get("identifier").ok_or_else(|| usage_err("say which node: --identifier ID (see `tinyscale nodes list`)"))?;
    id.parse().map_err(|_| usage_err(format!("{id:?} is not a node id")))
}

fn nodes(args: &[String]) -> Result<(), Failure> {
    // `-t` is a switch for `list` (show tags) and the tags themselves for
    // `tag`, as in Headscale.
    const FLAGS: &[Flag] =
        &[value("user", Some('u')), value("identifier", Some('i')), switch("tags", Some('t')), value("key", Some('k'))];
    const TAG_FLAGS: &[Flag] = &[value("identifier", Some('i')), value("tags", Some('t'))];
    let verb_word = args.iter().find(|a| !a.starts_with('-') && !is_global_value(args, a));
    let tagging = verb_word.is_some_and(|v| matches!(v.as_str(), "tag" | "tags"));
    if verb_word.is_some_and(|v| routes::is_routes_verb(v)) {
        return routes::nodes_routes(args);
    }
    let (p, c) = parse(args, if tagging { TAG_FLAGS } else { FLAGS }, "nodes")?;
    let verb = sub(&p, "nodes", "list, rename, tag, approve-routes, list-routes, expire, delete, register")?;
    match verb.as_str() {
        "tag" | "tags" => {
            no_extra_words(&p, 1, "nodes tag")?;
            let id = node_id(&p)?;
            if p.get("tags").is_none() {
                return Err(usage_err("usage: tinyscale nodes tag -i ID -t tag:a,tag:b"));
            }
            let tags = p.list("tags");
            let body = serde_json::to_value(crate::api::types::SetTags { tags }).map_err(|e| fail(e.to_string()))?;
            let r = c.call("POST", &format!("/api/v1/node/{id}/tags"), Some(body))?;
            emit(c.format, &r["node"], || {
                format!("Node {} tagged: {}", cell(&r["node"]["given_name"]), cell(&r["node"]["tags"]))
            });
        }
        "register" => {
            no_extra_words(&p, 1, "nodes register")?;
            let id =
                p.get("key").ok_or_else(|| usage_err("usage: tinyscale nodes register --key AUTH_ID --user USER"))?;
            approve(&c, id, p.get("user"))?;
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "nodes list")?;
            let list = c.list_for_user("/api/v1/node", "nodes", p.get("user"))?;
            emit(c.format, &Value::Array(list.clone()), || {
                let mut headers = vec![
                    "ID",
                    "Hostname",
                    "Name",
                    "User",
                    "IP addresses",
                    "Ephemeral",
                    "Last seen",
                    "Expiration",
                    "Connected",
                    "Expired",
                ];
                let mut rows: Vec<Vec<String>> = list.iter().map(node_row).collect();
                if p.has("tags") {
                    headers.push("Tags");
                    for (row, n) in rows.iter_mut().zip(&list) {
                        row.push(cell(&n["tags"]));
                    }
                }
                table(&headers, &rows)
            });
        }
        "rename" | "mv" => {
            let id = node_id(&p)?;
            let new_name = p.words.get(1).ok_or_else(|| usage_err("usage: tinyscale nodes rename -i ID NEW_NAME"))?;
            no_extra_words(&p, 2, "nodes rename")?;
            let r = c.call("POST", &format!("/api/v1/node/{id}/rename/{}", percent_encode(new_name)), None)?;
            emit(c.format, &r["node"], || format!("Node renamed: {}", cell(&r["node"]["given_name"])));
        }
        "expire" | "logout" => {
            no_extra_words(&p, 1, "nodes expire")?;
            let id = node_id(&p)?;
            let r = c.call("POST", &format!("/api/v1/node/{id}/expire"), None)?;
            emit(c.format, &r["node"], || format!("Node {} expired", cell(&r["node"]["given_name"])));
        }
        "delete" | "rm" | "del" => {
            no_extra_words(&p, 1, "nodes delete")?;
            let id = node_id(&p)?;
            c.confirm(&format!("Delete node {id}?"))?;
            c.call("DELETE", &format!("/api/v1/node/{id}"), None)?;
            emit(c.format, &json!({"id": id, "deleted": true}), || format!("Node {id} deleted"));
        }
        other => {
            return Err(usage_err(format!(
                "unknown verb `nodes {other}` (list, rename, tag, approve-routes, list-routes, expire, delete)"
            )))
        }
    }
    Ok(())
}

/// Approves the waiting registration `auth_id` for `user`.
fn approve(c: &Ctx, auth_id: &str, user: Option<&str>) -> Result<(), Failure> {
    let user = user.ok_or_else(|| usage_err("say whose device it is: --user NAME"))?;
    // The id is what follows /register/ in the login URL; take the URL too.
    let auth_id = auth_id.rsplit('/').next().unwrap_or(auth_id);
    let r = c.call("POST", "/api/v1/auth/register", Some(json!({ "auth_id": auth_id, "user": user })))?;
    emit(c.format, &r["node"], || {
        format!(
            "Node {} registered for {} ({})",
            cell(&r["node"]["given_name"]),
            cell(&r["node"]["user"]["name"]),
            cell(&r["node"]["ip_addresses"])
        )
    });
    Ok(())
}

fn auth(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[value("auth-id", Some('a')), value("user", Some('u'))];
    let (p, c) = parse(args, FLAGS, "auth")?;
    match sub(&p, "auth", "register, pending")?.as_str() {
        "register" | "approve" => {
            no_extra_words(&p, 1, "auth register")?;
            let id =
                p.get("auth-id").ok_or_else(|| usage_err("usage: tinyscale auth register --auth-id ID --user USER"))?;
            approve(&c, id, p.get("user"))
        }
        "pending" | "list" | "ls" => {
            no_extra_words(&p, 1, "auth pending")?;
            let r = c.call("GET", "/api/v1/auth/pending", None)?;
            let list = r["pending"].as_array().cloned().unwrap_or_default();
            emit(c.format, &Value::Array(list.clone()), || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| vec![cell(&p["auth_id"]), cell(&p["hostname"]), format!("{}s", cell(&p["age_seconds"]))])
                    .collect();
                table(&["Auth ID", "Hostname", "Waiting"], &rows)
            });
            Ok(())
        }
        other => Err(usage_err(format!("unknown verb `auth {other}` (register, pending)"))),
    }
}

fn debug(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[value("user", Some('u')), value("name", Some('n')), value("key", Some('k'))];
    let (p, c) = parse(args, FLAGS, "debug")?;
    match sub(&p, "debug", "create-node")?.as_str() {
        "create-node" => {
            no_extra_words(&p, 1, "debug create-node")?;
            let need = |f: &str| p.get(f).ok_or_else(|| usage_err(format!("debug create-node needs --{f}")));
            let body = json!({ "user": need("user")?, "name": need("name")?, "key": need("key")? });
            let r = c.call("POST", "/api/v1/debug/node", Some(body))?;
            emit(c.format, &r["node"], || {
                format!("Node created: {} {}", cell(&r["node"]["given_name"]), cell(&r["node"]["ip_addresses"]))
            });
            Ok(())
        }
        other => Err(usage_err(format!("unknown verb `debug {other}` (create-node)"))),
    }
}
