//! The configuration: Headscale's `config.yaml` schema, tinyscale's defaults,
//! environment overrides and validation that reports every problem at once.
//!
//! A Headscale user's file loads unchanged: keys tinyscale does not use are
//! accepted (some with a note), deprecated keys still work with a warning that
//! names the replacement, and unknown keys are reported with their line.

mod deprecations;
mod lines;
mod read;
mod reader;
mod schema;
mod sections;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use lines::LineIndex;
pub use reader::{env_suffix, Diag, EnvLookup, Origin, Reader};
pub use schema::{
    Admin, Allocation, Config, Database, Derp, DerpServer, Dns, ExtraRecord, Oidc, PkceMethod, PolicyMode, Prefixes,
    Secret, Tls,
};

/// Folder for state when the config does not name paths, relative to the
/// config file's folder (or the working directory when there is no file).
pub const DATA_DIR: &str = "tinyscale-data";
/// The folder searched before `./config.yaml`.
pub const SYSTEM_CONFIG: &str = "/etc/tinyscale/config.yaml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_BASE_DOMAIN: &str = "tailnet.internal";
const DEFAULT_SLED_CACHE: i64 = 1 << 20;

/// A configuration that loaded, with what is worth telling the admin.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diag>,
    pub notes: Vec<Diag>,
}

/// A configuration that did not load: every error found, and the warnings.
#[derive(Debug)]
pub struct Errors {
    pub file: Option<PathBuf>,
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into());
        writeln!(f, "{name}: {} error(s)", self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// The process environment as the reader wants it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Finds the config file: `-c`, then `TINYSCALE_CONFIG`, then
/// `/etc/tinyscale/config.yaml`, then `./config.yaml`; `None` means embedded defaults.
pub fn locate(explicit: Option<&Path>, env: EnvLookup) -> Result<Option<PathBuf>, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Some(p.to_path_buf()))
        } else {
            Err(format!("config file {} does not exist", p.display()))
        };
    }
    if let Some(p) = env("TINYSCALE_CONFIG").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(Some(p))
        } else {
            Err(format!("TINYSCALE_CONFIG names {}, which does not exist", p.display()))
        };
    }
    Ok([Path::new(SYSTEM_CONFIG), Path::new("config.yaml")].into_iter().find(|p| p.is_file()).map(Path::to_path_buf))
}

/// Reads and validates the config at `file` (or the embedded defaults).
pub fn load(file: Option<&Path>, env: EnvLookup) -> Result<Loaded, Errors> {
    let text = match file {
        None => String::new(),
        Some(p) => std::fs::read_to_string(p).map_err(|e| Errors {
            file: Some(p.to_path_buf()),
            errors: vec![Diag {
                path: String::new(),
                origin: Origin::File(None),
                message: format!("cannot read: {e}"),
            }],
            warnings: Vec::new(),
        })?,
    };
    parse(&text, file, env)
}

/// Validates config text; relative paths resolve against `file`'s folder.
pub fn parse(text: &str, file: Option<&Path>, env: EnvLookup) -> Result<Loaded, Errors> {
    let fail = |errors| Errors { file: file.map(Path::to_path_buf), errors, warnings: Vec::new() };
    let root: Value = match crate::yaml::parse(text) {
        Ok(Value::Null) => Value::Object(Default::default()),
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Err(fail(vec![Diag {
                path: String::new(),
                origin: Origin::File(Some(1)),
                message: "the file must be a mapping of keys (like `server_url: ...`)".into(),
            }]))
        }
        Err(e) => {
            return Err(fail(vec![Diag {
                path: String::new(),
                origin: Origin::File(Some(e.line)),
                message: format!("not valid YAML: {e}"),
            }]));
        }
    };
    let lines = LineIndex::build(text);
    let base = file.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let mut r = Reader::new(&root, &lines, env);
    let config = read::read(&mut r, file, &base);
    r.report_unknown_keys();
    if r.errors.is_empty() {
        Ok(Loaded { config, warnings: r.warnings, notes: r.notes })
    } else {
        Err(Errors { file: file.map(Path::to_path_buf), errors: r.errors, warnings: r.warnings })
    }
}

/// A path from the config, relative ones taken from the config file's folder (as Headscale does).
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `0.0.0.0:8080`, `[::]:8080`, `:8080` (all IPv4 interfaces) or `localhost:8080`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| format!("{s:?}: bad port"));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| format!("{s:?}: bad port"));
    }
    s.parse().map_err(|_| format!("{s:?} is not an address:port (e.g. 0.0.0.0:8080)"))
}

/// `$VAR` and `${VAR}` replaced from the environment (unset → empty), as Go's os.ExpandEnv.
pub fn expand_env(s: &str, env: EnvLookup) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, skip) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let n = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            (&after[..n], n)
        };
        if skip == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&env(name).unwrap_or_default());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
