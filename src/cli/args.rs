//! A small flag parser: `--name value`, `--name=value`, `-n value`, boolean
//! `--flag`, flags anywhere among the words. Each command declares its flags,
//! so a typo is an error rather than silently ignored.

use std::collections::BTreeMap;

#[derive(Clone, Copy)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    pub takes_value: bool,
}

pub const fn value(long: &'static str, short: Option<char>) -> Flag {
    Flag { long, short, takes_value: true }
}

pub const fn switch(long: &'static str, short: Option<char>) -> Flag {
    Flag { long, short, takes_value: false }
}

/// Flags every command takes.
pub const GLOBAL: &[Flag] =
    &[value("config", Some('c')), value("output", Some('o')), switch("force", None), switch("help", Some('h'))];

#[derive(Debug, Default)]
pub struct Parsed {
    pub words: Vec<String>,
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Parsed {
    pub fn get(&self, long: &str) -> Option<&str> {
        self.values.get(long).and_then(|v| v.last()).map(String::as_str)
    }
    pub fn has(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }
    pub fn all(&self, long: &str) -> Vec<&str> {
        self.values.get(long).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default()
    }

    /// Every value of a list flag: each use counts, each a comma-separated
    /// list; empty items (and so an empty value) add nothing.
    pub fn list(&self, long: &str) -> Vec<String> {
        self.all(long).iter().flat_map(|v| crate::text::comma_list(v)).collect()
    }
}

/// Parses `args` against `flags` (plus [`GLOBAL`]); `cmd` names the command in errors.
pub fn parse(args: &[String], flags: &[Flag], cmd: &str) -> Result<Parsed, String> {
    let find_long = |name: &str| flags.iter().chain(GLOBAL).find(|f| f.long == name).copied();
    let find_short = |c: char| flags.iter().chain(GLOBAL).find(|f| f.short == Some(c)).copied();
    let mut out = Parsed::default();
    let mut it = args.iter();
    let mut only_words = false;
    while let Some(a) = it.next() {
        if only_words || a == "-" || !a.starts_with('-') {
            out.words.push(a.clone());
            continue;
        }
        if a == "--" {
            only_words = true;
            continue;
        }
        let (flag, inline) = if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            (
                find_long(name)
                    .ok_or_else(|| format!("unknown flag --{name} for `{cmd}` (see `tinyscale {cmd} --help`)"))?,
                inline,
            )
        } else {
            let mut chars = a[1..].chars();
            let c = chars.next().unwrap_or('-');
            let rest: String = chars.collect();
            let flag =
                find_short(c).ok_or_else(|| format!("unknown flag -{c} for `{cmd}` (see `tinyscale {cmd} --help`)"))?;
            let inline = (!rest.is_empty()).then(|| rest.trim_start_matches('=').to_string());
            (flag, inline)
        };
        let v = if flag.takes_value {
            match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| format!("flag --{} needs a value", flag.long))?,
            }
        } else {
            match inline.as_deref() {
                None | Some("true") => "true".to_string(),
                Some("false") => continue,
                Some(v) => return Err(format!("flag --{} takes no value (got {v:?})", flag.long)),
            }
        };
        out.values.entry(flag.long).or_default().push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_anywhere_in_every_form() {
        let flags = [value("user", Some('u')), switch("reusable", None), value("tags", None)];
        let p = parse(&s(&["create", "-u", "alice", "--reusable", "--tags=tag:a,tag:b", "-ojson", "x"]), &flags, "t")
            .unwrap();
        assert_eq!(p.words, ["create", "x"]);
        assert_eq!(p.get("user"), Some("alice"));
        assert!(p.has("reusable"));
        assert_eq!(p.get("tags"), Some("tag:a,tag:b"));
        assert_eq!(p.get("output"), Some("json"));
        let p = parse(&s(&["--reusable=false", "--", "-x"]), &flags, "t").unwrap();
        assert!(!p.has("reusable"));
        assert_eq!(p.words, ["-x"]);
    }

    #[test]
    fn mistakes_are_errors() {
        let flags = [value("user", Some('u'))];
        assert!(parse(&s(&["--usr", "a"]), &flags, "t").unwrap_err().contains("unknown flag --usr"));
        assert!(parse(&s(&["--user"]), &flags, "t").unwrap_err().contains("needs a value"));
        assert!(parse(&s(&["-z"]), &flags, "t").unwrap_err().contains("unknown flag -z"));
        assert!(parse(&s(&["--force=yes"]), &flags, "t").unwrap_err().contains("takes no value"));
    }
}
