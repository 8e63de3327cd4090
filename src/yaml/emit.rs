//! Block-style YAML from JSON text, laid out as serde_yaml (libyaml) wrote
//! it: two-space mappings, a mapping's sequences at the key's column, `[]`
//! and `{}` for empty collections, multi-line strings as `|` blocks.
//!
//! Each string is written plain when it reads back as the same string, in
//! single quotes when plain would read as another type (`'true'`, `'123'`,
//! `''`) or clash with YAML's indicators (`': '`, `' #'`, a leading `-`,
//! `*`, `&`, ...), and in double quotes with escapes when it holds a tab or
//! another character that cannot appear raw.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::scalar::{classify, digits_but_not_number, Plain};

/// JSON with its objects' keys in their written order (serde_json's `Value`
/// sorts them; the CLI's shapes list their fields in a chosen order).
enum Node {
    Scalar(Value),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(n.into())))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(n.into())))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Number::from_f64(f).map_or(Value::Null, Value::Number)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(s)))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = a.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// The YAML document (ending in a line break) for JSON text; `None` when
/// `json` is not JSON.
pub fn from_json(json: &str) -> Option<String> {
    let node: Node = serde_json::from_str(json).ok()?;
    let mut out = String::new();
    match &node {
        Node::Scalar(v) => scalar(&mut out, v, 2),
        Node::Seq(items) if items.is_empty() => out.push_str("[]"),
        Node::Map(entries) if entries.is_empty() => out.push_str("{}"),
        _ => block(&mut out, &node, 0, false),
    }
    out.push('\n');
    Some(out)
}

/// A line break and `indent` spaces, unless this is the first line.
fn new_line(out: &mut String, indent: usize) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A non-empty collection at column `indent`; `inline`: its first entry
/// goes on the current line (after `- `).
fn block(out: &mut String, node: &Node, indent: usize, inline: bool) {
    match node {
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 || !inline {
                    new_line(out, indent);
                }
                out.push_str("- ");
                child(out, item, indent + 2);
            }
        }
        Node::Map(entries) => {
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 || !inline {
                    new_line(out, indent);
                }
                string(out, k, 0, true);
                out.push(':');
                match v {
                    Node::Seq(items) if !items.is_empty() => block(out, v, indent, false),
                    Node::Map(entries) if !entries.is_empty() => block(out, v, indent + 2, false),
                    _ => {
                        out.push(' ');
                        child(out, v, indent + 2);
                    }
                }
            }
        }
        Node::Scalar(v) => scalar(out, v, indent),
    }
}

/// A value after `- ` or `key: `; its own lines (if any) at column `indent`.
fn child(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Seq(items) if items.is_empty() => out.push_str("[]"),
        Node::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Node::Scalar(v) => scalar(out, v, indent),
        _ => block(out, node, indent, true),
    }
}

fn scalar(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::String(s) => string(out, s, indent, false),
        other => out.push_str(&other.to_string()),
    }
}

/// Characters written as they are (libyaml's printable set, less the
/// characters YAML 1.1 took for line breaks).
fn printable(c: char) -> bool {
    matches!(c, ' '..='~')
        || (c >= '\u{a0}' && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'))
}

/// Whether `s` (one line, printable) reads back as itself when written plain.
fn plain_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let blank_after = |i: usize| b.get(i + 1).is_none_or(|&c| c == b' ');
    if b.is_empty() || b[0] == b' ' || b[b.len() - 1] == b' ' || s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    match b[0] {
        b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"' | b'%' | b'@'
        | b'`' => return false,
        b'?' | b':' | b'-' if blank_after(0) => return false,
        _ => {}
    }
    let clash = (0..b.len()).any(|i| (b[i] == b':' && blank_after(i)) || (b[i] == b'#' && i > 0 && b[i - 1] == b' '));
    !clash && !digits_but_not_number(s) && matches!(classify(s), Plain::Str)
}

/// A string as a key or a value; a multi-line value becomes a `|` block
/// whose lines sit at column `indent`.
fn string(out: &mut String, s: &str, indent: usize, key: bool) {
    let special = s.chars().any(|c| c != '\n' && !printable(c));
    if s.contains('\n') {
        // libyaml: no trailing space, no space before a break, nothing special.
        if key || special || s.ends_with(' ') || s.contains(" \n") {
            return double_quoted(out, s);
        }
        out.push('|');
        if s.starts_with([' ', '\n']) {
            out.push('2');
        }
        let body = s.strip_suffix('\n');
        if body.is_none() {
            out.push('-');
        } else if s == "\n" || s.ends_with("\n\n") {
            out.push('+');
        }
        for line in body.unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', indent));
                out.push_str(line);
            }
        }
    } else if special {
        double_quoted(out, s);
    } else if plain_ok(s) {
        out.push_str(s);
    } else {
        out.push('\'');
        out.push_str(&s.replace('\'', "''"));
        out.push('\'');
    }
}

fn double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\0' => "\\0",
            '\u{7}' => "\\a",
            '\u{8}' => "\\b",
            '\t' => "\\t",
            '\n' => "\\n",
            '\u{b}' => "\\v",
            '\u{c}' => "\\f",
            '\r' => "\\r",
            '\u{1b}' => "\\e",
            '\u{85}' => "\\N",
            '\u{2028}' => "\\L",
            '\u{2029}' => "\\P",
            c if printable(c) => {
                out.push(c);
                continue;
            }
            c if u32::from(c) <= 0xff => {
                out.push_str(&format!("\\x{:02X}", u32::from(c)));
                continue;
            }
            c => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
                continue;
            }
        };
        out.push_str(esc);
    }
    out.push('"');
}
