//! The `tinyscale` command line: Headscale's verbs and flags.
//!
//! `serve` runs the server; `configtest` and `version` work offline; every
//! other verb asks the running server over its unix socket and prints the
//! answer as a table or, with `-o json|yaml`, as Headscale-shaped data.

mod apikeys;
mod args;
mod client;
// For the fuzz target of the reply reader.
pub use client::{parse_reply, Reply};
mod keys;
mod nodes;
mod output;
mod policy;
mod routes;
mod shapes;
mod users;

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::types::ErrorResponse;
use crate::clock;
use crate::config::{self, Config};
use args::{Flag, Parsed};
use output::{emit, Format};

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
  apikeys create                 make an API key for the REST API and web UI  [-e 90d]
  apikeys list                   list API keys (prefixes only)
  apikeys expire --prefix P      expire an API key now
  apikeys delete --prefix P      delete an API key
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

    /// One API request over the socket, its answer read as `T`.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        target: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Failure> {
        let cfg = self.config()?;
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| fail(e.to_string()))?;
        let reply = client::call(&cfg.unix_socket, method, target, body.as_deref()).map_err(fail)?;
        if reply.status == 200 {
            serde_json::from_slice(&reply.body).map_err(|e| fail(format!("unexpected answer from the server: {e}")))
        } else {
            let msg = serde_json::from_slice::<ErrorResponse>(&reply.body)
                .map_or_else(|_| format!("the server answered {}", reply.status), |e| e.message);
            Err(fail(msg))
        }
    }

    /// [`Ctx::call`] without a body.
    fn get<T: DeserializeOwned>(&self, method: &str, target: &str) -> Result<T, Failure> {
        self.call(method, target, None::<&()>)
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
        "users" | "user" | "namespaces" | "namespace" => users::users(&rest),
        "preauthkeys" | "preauthkey" | "authkey" | "authkeys" | "pre" => keys::preauthkeys(&rest),
        "apikeys" | "apikey" => apikeys::apikeys(&rest),
        "nodes" | "node" | "machines" | "machine" => nodes::nodes(&rest),
        "auth" => nodes::auth(&rest),
        "debug" => nodes::debug(&rest),
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
    #[derive(Serialize)]
    struct Version {
        version: &'static str,
        target: &'static str,
        built: String,
    }
    let v = Version {
        version: env!("CARGO_PKG_VERSION"),
        target: env!("TINYSCALE_TARGET"),
        built: clock::rfc3339(clock::build_epoch()),
    };
    emit(c.format, &v, || format!("tinyscale {} ({}, built {})", v.version, v.target, v.built));
    Ok(())
}

fn sub(p: &Parsed, group: &str, verbs: &str) -> Result<String, Failure> {
    p.words.first().cloned().ok_or_else(|| usage_err(format!("`{group}` needs a verb: {verbs}")))
}
