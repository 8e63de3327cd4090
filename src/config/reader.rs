//! Typed reads of config keys that collect every problem instead of stopping at the first.
//!
//! Each read names its key path. The reader looks in the environment first
//! (`TINYSCALE_<PATH>`, then Headscale's `HEADSCALE_<PATH>`), then in the file,
//! then falls back to the default; it remembers every path asked for, so a key in
//! the file that nothing asked for is reported as unknown, with its line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::lines::LineIndex;
use crate::clock::{parse_span, Span};

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(Option<usize>),
    Env(String),
}

/// One problem or remark about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub path: String,
    pub origin: Origin,
    pub message: String,
}

impl Diag {
    pub fn line(&self) -> Option<usize> {
        match self.origin {
            Origin::File(l) => l,
            Origin::Env(_) => None,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(Some(l)) => write!(f, "line {l}: ")?,
            Origin::File(None) => {}
            Origin::Env(name) => write!(f, "environment {name}: ")?,
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A raw value before typing: from the environment (text) or the file (YAML).
enum Raw<'v> {
    Env(String, String),
    Yaml(&'v Value),
}

pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub struct Reader<'a> {
    root: &'a Value,
    lines: &'a LineIndex,
    env: EnvLookup<'a>,
    /// new path → deprecated path whose value it inherits.
    aliases: BTreeMap<&'static str, &'static str>,
    known: BTreeSet<String>,
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
    pub notes: Vec<Diag>,
}

/// `prefixes.v4` → `PREFIXES_V4`.
pub fn env_suffix(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Splits an environment list: YAML flow (`[a, b]`), else commas or whitespace (viper's habit).
fn env_list(text: &str) -> Vec<String> {
    let t = text.trim();
    if t.starts_with('[') {
        if let Ok(Value::Array(items)) = crate::yaml::parse(t) {
            return items.iter().filter_map(scalar_text).collect();
        }
    }
    t.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a Value, lines: &'a LineIndex, env: EnvLookup<'a>) -> Self {
        Reader {
            root,
            lines,
            env,
            aliases: BTreeMap::new(),
            known: BTreeSet::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn lookup(&self, path: &str) -> Option<&'a Value> {
        let mut v = self.root;
        for part in path.split('.') {
            v = match v {
                Value::Object(m) => m.get(part)?,
                _ => return None,
            };
        }
        (!v.is_null()).then_some(v)
    }

    /// Whether the file itself sets `path` (environment not considered).
    pub fn in_file(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    pub fn origin(&self, path: &str) -> Origin {
        Origin::File(self.lines.line_of(path))
    }

    fn diag(&self, path: &str, origin: Origin, message: String) -> Diag {
        Diag { path: path.to_string(), origin, message }
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let origin = self.origin_of_value(path);
        let d = self.diag(path, origin, message.into());
        self.errors.push(d);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        let origin = self.origin_of_value(path);
        let d = self.diag(path, origin, message.into());
        self.warnings.push(d);
    }

    pub fn note(&mut self, path: &str, message: impl Into<String>) {
        let origin = self.origin_of_value(path);
        let d = self.diag(path, origin, message.into());
        self.notes.push(d);
    }

    /// Where the effective value of `path` comes from (env name, or its line).
    fn origin_of_value(&self, path: &str) -> Origin {
        if let Some((name, _)) = self.env_value(path) {
            return Origin::Env(name);
        }
        if !self.in_file(path) {
            if let Some(old) = self.aliases.get(path) {
                return self.origin(old);
            }
        }
        self.origin(path)
    }

    fn env_value(&self, path: &str) -> Option<(String, String)> {
        let suffix = env_suffix(path);
        ["TINYSCALE_", "HEADSCALE_"].iter().find_map(|p| {
            let name = format!("{p}{suffix}");
            (self.env)(&name).map(|v| (name, v))
        })
    }

    /// Whether the environment has `name` (a full variable name).
    pub fn env_has(&self, name: &str) -> bool {
        (self.env)(name).is_some()
    }

    /// `$VAR`/`${VAR}` expansion against the same environment.
    pub fn expand(&self, s: &str) -> String {
        super::expand_env(s, self.env)
    }

    /// Marks a whole subtree as known without reading it (keys Headscale has
    /// that tinyscale accepts and does not use).
    pub fn accept(&mut self, path: &str) {
        self.known.insert(path.to_string());
    }

    /// Declares `old` a deprecated spelling of `new`: the file's `old` value is
    /// used when `new` is not set, with a warning naming the replacement.
    pub fn alias(&mut self, old: &'static str, new: &'static str) {
        self.known.insert(old.to_string());
        if self.in_file(old) {
            let msg = if self.in_file(new) {
                format!("deprecated and ignored, because `{new}` is also set; remove it")
            } else {
                format!("deprecated; use `{new}` instead (the value is still honoured)")
            };
            let o = self.origin(old);
            self.warnings.push(self.diag(old, o, msg));
            self.aliases.insert(new, old);
        }
    }

    /// Declares a key that no longer does anything: warn (with a hint) when it is set.
    pub fn obsolete(&mut self, path: &'static str, hint: &str) {
        self.known.insert(path.to_string());
        if self.in_file(path) {
            let o = self.origin(path);
            self.warnings.push(self.diag(path, o, format!("no longer used and ignored: {hint}")));
        }
    }

    fn get(&mut self, path: &str) -> Option<Raw<'a>> {
        self.known.insert(path.to_string());
        if let Some((name, v)) = self.env_value(path) {
            return Some(Raw::Env(name, v));
        }
        if let Some(v) = self.lookup(path) {
            return Some(Raw::Yaml(v));
        }
        let old = self.aliases.get(path)?;
        self.lookup(old).map(Raw::Yaml)
    }

    fn type_error(&mut self, path: &str, want: &str, got: &Value) {
        self.error(path, format!("expected {want}, found {}", kind_of(got)));
    }

    pub fn opt_string(&mut self, path: &str) -> Option<String> {
        match self.get(path)? {
            Raw::Env(_, v) => Some(v),
            Raw::Yaml(v) => match scalar_text(v) {
                Some(s) => Some(s),
                None => {
                    self.type_error(path, "a string", v);
                    None
                }
            },
        }
    }

    pub fn string(&mut self, path: &str, default: &str) -> String {
        self.opt_string(path).unwrap_or_else(|| default.to_string())
    }

    pub fn boolean(&mut self, path: &str, default: bool) -> bool {
        let (text, yaml) = match self.get(path) {
            None => return default,
            Some(Raw::Env(_, v)) => (v, None),
            Some(Raw::Yaml(Value::Bool(b))) => return *b,
            Some(Raw::Yaml(v @ Value::String(s))) => (s.clone(), Some(v)),
            Some(Raw::Yaml(v)) => {
                self.type_error(path, "true or false", v);
                return default;
            }
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                let _ = yaml;
                self.error(path, format!("expected true or false, found {text:?}"));
                default
            }
        }
    }

    /// A boolean that means something different when absent.
    pub fn opt_bool(&mut self, path: &str) -> Option<bool> {
        let present = self.env_value(path).is_some() || self.in_file(path);
        let v = self.boolean(path, false);
        present.then_some(v)
    }

    pub fn int(&mut self, path: &str, default: i64) -> i64 {
        let text = match self.get(path) {
            None => return default,
            Some(Raw::Env(_, v)) => v,
            Some(Raw::Yaml(Value::Number(n))) => match n.as_i64() {
                Some(i) => return i,
                None => n.to_string(),
            },
            Some(Raw::Yaml(Value::String(s))) => s.clone(),
            Some(Raw::Yaml(v)) => {
                self.type_error(path, "a whole number", v);
                return default;
            }
        };
        match text.trim().parse() {
            Ok(i) => i,
            Err(_) => {
                self.error(path, format!("expected a whole number, found {text:?}"));
                default
            }
        }
    }

    pub fn span(&mut self, path: &str, default: Span) -> Span {
        let text = match self.get(path) {
            None => return default,
            Some(Raw::Env(_, v)) => v,
            Some(Raw::Yaml(Value::String(s))) => s.clone(),
            Some(Raw::Yaml(Value::Number(n))) if n.as_u64() == Some(0) => return Span(0),
            Some(Raw::Yaml(Value::Number(n))) => {
                self.error(path, format!("{n} has no unit; write e.g. {n}s, {n}m or {n}h"));
                return default;
            }
            Some(Raw::Yaml(v)) => {
                self.type_error(path, "a duration such as 30s, 15m or 90d", v);
                return default;
            }
        };
        match parse_span(&text) {
            Ok(s) => s,
            Err(e) => {
                self.error(path, e);
                default
            }
        }
    }

    pub fn string_list(&mut self, path: &str) -> Vec<String> {
        match self.get(path) {
            None => Vec::new(),
            Some(Raw::Env(_, v)) => env_list(&v),
            Some(Raw::Yaml(Value::String(s))) => s.split_whitespace().map(str::to_string).collect(),
            Some(Raw::Yaml(Value::Array(items))) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match scalar_text(item) {
                        Some(s) => out.push(s),
                        None => {
                            let p = format!("{path}[{i}]");
                            self.type_error(&p, "a string", item);
                        }
                    }
                }
                out
            }
            Some(Raw::Yaml(v)) => {
                self.type_error(path, "a list", v);
                Vec::new()
            }
        }
    }

    /// A mapping whose entries are not keys of ours (e.g. `oidc.extra_params`).
    fn mapping(&mut self, path: &str) -> Option<Vec<(String, Value)>> {
        match self.value(path)? {
            Value::Object(m) => Some(m.into_iter().collect()),
            v => {
                self.type_error(path, "a mapping", &v);
                None
            }
        }
    }

    pub fn string_map(&mut self, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in self.mapping(path).unwrap_or_default() {
            match scalar_text(&v) {
                Some(s) => {
                    out.insert(k, s);
                }
                None => self.type_error(&format!("{path}.{k}"), "a string", &v),
            }
        }
        out
    }

    pub fn list_map(&mut self, path: &str) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.mapping(path).unwrap_or_default() {
            let list = match v {
                Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
                v => match scalar_text(&v) {
                    Some(s) => vec![s],
                    None => {
                        self.type_error(&format!("{path}.{k}"), "a list of strings", &v);
                        continue;
                    }
                },
            };
            out.insert(k, list);
        }
        out
    }

    /// The raw YAML at `path`, for structured values deserialized by the caller.
    pub fn value(&mut self, path: &str) -> Option<Value> {
        match self.get(path)? {
            Raw::Yaml(v) => Some(v.clone()),
            Raw::Env(name, text) => match crate::yaml::parse(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.errors.push(Diag {
                        path: path.to_string(),
                        origin: Origin::Env(name),
                        message: format!("not valid YAML: {e}"),
                    });
                    None
                }
            },
        }
    }

    /// Warns about every key in the file that no read asked for.
    pub fn report_unknown_keys(&mut self) {
        let mut found = Vec::new();
        self.walk_unknown(self.root, "", &mut found);
        // In the file's order (the parsed mappings are sorted by key).
        found.sort_by_cached_key(|p| (self.lines.line_of(p), p.clone()));
        for path in found {
            let suggestion = self.closest_known(&path);
            let msg = match suggestion {
                Some(s) => format!("unknown key (did you mean `{s}`?); it is ignored"),
                None => "unknown key; it is ignored".to_string(),
            };
            let o = self.origin(&path);
            self.warnings.push(self.diag(&path, o, msg));
        }
    }

    fn walk_unknown(&self, v: &Value, prefix: &str, found: &mut Vec<String>) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if self.known.contains(&path) {
                continue;
            }
            let section = format!("{path}.");
            if self.known.iter().any(|p| p.starts_with(&section)) {
                self.walk_unknown(child, &path, found);
            } else {
                found.push(path);
            }
        }
    }

    fn closest_known(&self, path: &str) -> Option<String> {
        let (parent, leaf) = match path.rfind('.') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        // Candidates: every known key and every section above one.
        let mut candidates: BTreeSet<&str> = BTreeSet::new();
        for k in &self.known {
            let mut p = k.as_str();
            candidates.insert(p);
            while let Some(i) = p.rfind('.') {
                p = &p[..i];
                candidates.insert(p);
            }
        }
        candidates
            .into_iter()
            .filter_map(|k| {
                let (kp, kl) = match k.rfind('.') {
                    Some(i) => (&k[..i], &k[i + 1..]),
                    None => ("", k),
                };
                let d = if kp == parent { edit_distance(leaf, kl) } else { edit_distance(path, k) };
                (d <= 2.max(leaf.len() / 4)).then_some((d, k))
            })
            .min()
            .map(|(_, k)| k.to_string())
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(cur) };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<R>(text: &str, env: &[(&str, &str)], f: impl FnOnce(&mut Reader) -> R) -> R {
        let root: Value = crate::yaml::parse(text).unwrap();
        let lines = LineIndex::build(text);
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut r = Reader::new(&root, &lines, &lookup);
        f(&mut r)
    }

    #[test]
    fn env_wins_tinyscale_before_headscale() {
        with("log:\n  level: info\n", &[("HEADSCALE_LOG_LEVEL", "debug"), ("TINYSCALE_LOG_LEVEL", "trace")], |r| {
            assert_eq!(r.string("log.level", "x"), "trace")
        });
        with("log:\n  level: info\n", &[("HEADSCALE_LOG_LEVEL", "debug")], |r| {
            assert_eq!(r.string("log.level", "x"), "debug")
        });
        with("log:\n  level: info\n", &[], |r| assert_eq!(r.string("log.level", "x"), "info"));
        with("", &[], |r| assert_eq!(r.string("log.level", "x"), "x"));
    }

    #[test]
    fn env_lists_bools_and_spans() {
        with(
            "",
            &[
                ("TINYSCALE_DNS_SEARCH_DOMAINS", "a.example, b.example"),
                ("TINYSCALE_DERP_URLS", "[https://x, https://y]"),
                ("TINYSCALE_DERP_SERVER_ENABLED", "true"),
                ("TINYSCALE_NODE_EXPIRY", "90d"),
            ],
            |r| {
                assert_eq!(r.string_list("dns.search_domains"), ["a.example", "b.example"]);
                assert_eq!(r.string_list("derp.urls"), ["https://x", "https://y"]);
                assert!(r.boolean("derp.server.enabled", false));
                assert_eq!(r.span("node.expiry", Span(0)), Span(90 * 86_400));
                assert!(r.errors.is_empty());
            },
        );
    }

    #[test]
    fn collects_every_type_error_with_lines() {
        with("a: [1]\nb: yes\nc: 5\nd: banana\n", &[], |r| {
            r.string("a", "");
            r.boolean("b", false);
            r.span("c", Span(0));
            r.int("d", 0);
            let lines: Vec<_> = r.errors.iter().map(|d| (d.path.as_str(), d.line())).collect();
            assert_eq!(lines, [("a", Some(1)), ("b", Some(2)), ("c", Some(3)), ("d", Some(4))]);
        });
    }

    #[test]
    fn unknown_keys_are_named_with_lines_and_suggestions() {
        with("log:\n  levle: debug\nextra: 1\nderp:\n  server:\n    enabled: true\n", &[], |r| {
            r.string("log.level", "info");
            r.boolean("derp.server.enabled", false);
            r.report_unknown_keys();
            let w: Vec<String> = r.warnings.iter().map(|d| d.to_string()).collect();
            assert_eq!(w.len(), 2, "{w:?}");
            assert!(w[0].starts_with("line 2: log.levle: unknown key (did you mean `log.level`?)"), "{w:?}");
            assert!(w[1].starts_with("line 3: extra: unknown key"), "{w:?}");
        });
    }

    #[test]
    fn aliases_carry_old_values_with_a_warning() {
        with("acl_policy_path: /etc/acl.hujson\n", &[], |r| {
            r.alias("acl_policy_path", "policy.path");
            assert_eq!(r.string("policy.path", ""), "/etc/acl.hujson");
            assert_eq!(r.warnings.len(), 1);
            assert!(r.warnings[0].message.contains("use `policy.path`"));
            r.report_unknown_keys();
            assert_eq!(r.warnings.len(), 1);
        });
    }
}
