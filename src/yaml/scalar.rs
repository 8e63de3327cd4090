//! Scalars: what a plain scalar means (YAML 1.2's core schema, resolved as
//! serde_yaml 0.9 resolved it), quoted scalars with their escapes and line
//! folding, and block scalars (`|`, `>`) with libyaml's folding and chomping.

use serde_json::{Number, Value};

use super::parse::{push_fold, Parser};
use super::Error;

/// What a plain scalar's text means.
pub(super) enum Plain {
    Null,
    Bool(bool),
    Int(Number),
    /// Finite, or one of `.inf`, `-.inf`, `.nan`.
    Float(f64),
    Str,
}

pub(super) fn classify(s: &str) -> Plain {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        _ => {}
    }
    if let Some(u) = unsigned(s) {
        return Plain::Int(u.into());
    }
    if let Some(i) = negative(s) {
        return Plain::Int(i.into());
    }
    if !digits_but_not_number(s) {
        if let Some(f) = float(s) {
            return Plain::Float(f);
        }
    }
    Plain::Str
}

/// A plain scalar as JSON. JSON has no infinity or NaN: those stay the
/// strings `.inf`, `-.inf` and `.nan` (how serde_yaml printed them).
pub(super) fn resolve(s: &str) -> Value {
    match classify(s) {
        Plain::Null => Value::Null,
        Plain::Bool(b) => Value::Bool(b),
        Plain::Int(n) => Value::Number(n),
        Plain::Float(f) => match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => Value::String(".nan".into()),
            None if f < 0.0 => Value::String("-.inf".into()),
            None => Value::String(".inf".into()),
        },
        Plain::Str => Value::String(s.to_string()),
    }
}

/// A plain key as JSON's string key: `900` → "900", `true` → "true", `~` → "null".
pub(super) fn key_text(s: &str) -> String {
    match resolve(s) {
        Value::String(s) => s,
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// `0770`, `-012`: leading zeros make a string in YAML 1.2 (as in serde_yaml).
pub(super) fn digits_but_not_number(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `s` without one leading `+` (none when a sign follows it).
fn unpositive(s: &str) -> Option<&str> {
    match s.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => None,
        Some(u) => Some(u),
        None => Some(s),
    }
}

fn unsigned(s: &str) -> Option<u64> {
    let u = unpositive(s)?;
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = u.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = u64::from_str_radix(rest, radix) {
                return Some(n);
            }
        }
    }
    if u.starts_with(['+', '-']) || digits_but_not_number(s) {
        return None;
    }
    u.parse().ok()
}

fn negative(s: &str) -> Option<i64> {
    for (prefix, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = s.strip_prefix(prefix) {
            if let Ok(n) = i64::from_str_radix(&format!("-{rest}"), radix) {
                return Some(n);
            }
        }
    }
    if digits_but_not_number(s) {
        return None;
    }
    s.parse().ok()
}

fn float(s: &str) -> Option<f64> {
    let u = unpositive(s)?;
    if matches!(u, ".inf" | ".Inf" | ".INF") {
        return Some(f64::INFINITY);
    }
    if matches!(s, "-.inf" | "-.Inf" | "-.INF") {
        return Some(f64::NEG_INFINITY);
    }
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    u.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn hex(digits: &str) -> Option<char> {
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok().and_then(char::from_u32)
}

impl Parser<'_> {
    /// A single- or double-quoted scalar at `pos`; may span lines (folded).
    pub(super) fn quoted(&mut self) -> Result<String, Error> {
        let open = self.pos;
        let q = self.at(open);
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self.at(self.pos);
            match c {
                0 => return self.err(open, "this quoted value is never closed"),
                b'\'' if q == b'\'' && self.at(self.pos + 1) == b'\'' => {
                    out.push('\'');
                    self.pos += 2;
                }
                b'\\' if q == b'"' && self.at(self.pos + 1) == b'\n' => {
                    // An escaped line break joins the lines without a space.
                    self.pos += 1;
                    let breaks = self.quoted_breaks()?;
                    out.extend(std::iter::repeat_n('\n', breaks - 1));
                }
                b'\\' if q == b'"' => self.escape(&mut out)?,
                b' ' | b'\t' | b'\n' => {
                    let start = self.pos;
                    self.skip_blanks();
                    if self.at(self.pos) == b'\n' {
                        let breaks = self.quoted_breaks()?;
                        push_fold(&mut out, breaks);
                    } else {
                        out.push_str(&self.text[start..self.pos]);
                    }
                }
                _ if c == q => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => {
                    let start = self.pos;
                    self.pos += 1;
                    while !matches!(self.at(self.pos), 0 | b'\'' | b'"' | b'\\' | b' ' | b'\t' | b'\n') {
                        self.pos += 1;
                    }
                    out.push_str(&self.text[start..self.pos]);
                }
            }
        }
    }

    /// From a line break inside quotes: past it, blank lines and the next
    /// line's leading blanks; how many breaks there were.
    fn quoted_breaks(&mut self) -> Result<usize, Error> {
        let mut breaks = 0;
        while self.at(self.pos) == b'\n' {
            breaks += 1;
            self.pos += 1;
            if self.doc_marker_at(self.pos) {
                return self.err(self.pos, "a document marker inside a quoted value");
            }
            self.skip_blanks();
        }
        Ok(breaks)
    }

    /// One escape sequence of a double-quoted scalar, at its `\`.
    fn escape(&mut self, out: &mut String) -> Result<(), Error> {
        let at = self.pos;
        let c = self.at(at + 1);
        self.pos += 2;
        let ch = match c {
            b'0' => '\0',
            b'a' => '\u{7}',
            b'b' => '\u{8}',
            b't' | b'\t' => '\t',
            b'n' => '\n',
            b'v' => '\u{b}',
            b'f' => '\u{c}',
            b'r' => '\r',
            b'e' => '\u{1b}',
            b' ' => ' ',
            b'"' => '"',
            b'/' => '/',
            b'\'' => '\'',
            b'\\' => '\\',
            b'N' => '\u{85}',
            b'_' => '\u{a0}',
            b'L' => '\u{2028}',
            b'P' => '\u{2029}',
            b'x' | b'u' | b'U' => {
                let len = match c {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = self.text.get(self.pos..self.pos + len).and_then(hex);
                let Some(ch) = digits else {
                    return self.err(at, format!("`\\{}` needs {len} hex digits of a Unicode character", c as char));
                };
                self.pos += len;
                ch
            }
            _ => return self.err(at, "an unknown escape (`\\n`, `\\t`, `\\\"`, `\\\\` and `\\uXXXX` are known)"),
        };
        out.push(ch);
        Ok(())
    }

    /// A block scalar at its `|` or `>`, inside a collection at column `n`
    /// (-1 for the document). Ends at the start of the first line less
    /// indented than its content.
    pub(super) fn block_scalar(&mut self, n: isize) -> Result<Value, Error> {
        let literal = self.at(self.pos) == b'|';
        self.pos += 1;
        let (mut chomp, mut step) = (0i8, 0usize);
        for _ in 0..2 {
            match self.at(self.pos) {
                b'+' | b'-' if chomp == 0 => chomp = if self.at(self.pos) == b'+' { 1 } else { -1 },
                c @ b'1'..=b'9' if step == 0 => step = usize::from(c - b'0'),
                b'0' => return self.err(self.pos, "an indentation indicator must be 1 to 9"),
                _ => break,
            }
            self.pos += 1;
        }
        if !self.blankz_at(self.pos) && self.at(self.pos) != b'#' {
            return self.err(self.pos, "unexpected text after `|` or `>`");
        }
        self.end_of_line("a block scalar's `|` or `>`")?;
        let min = usize::try_from(n + 1).unwrap_or(0).max(1);
        let mut indent = if step > 0 { usize::try_from(n).map_or(step, |n| n + step) } else { 0 };
        // libyaml's scan_block_scalar: leading_break, trailing_breaks, blanks.
        let mut out = String::new();
        let mut trailing = String::new();
        let mut leading_break = false;
        let mut leading_blank = false;
        self.block_breaks(&mut indent, min, &mut trailing)?;
        while self.pos - self.line_start(self.pos) == indent && !self.eof() {
            let trailing_blank = matches!(self.at(self.pos), b' ' | b'\t');
            if !literal && leading_break && !leading_blank && !trailing_blank {
                if trailing.is_empty() {
                    out.push(' ');
                }
            } else if leading_break {
                out.push('\n');
            }
            leading_break = false;
            out.push_str(&trailing);
            trailing.clear();
            leading_blank = trailing_blank;
            let start = self.pos;
            while !matches!(self.at(self.pos), b'\n' | 0) {
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            if self.eof() {
                break;
            }
            self.pos += 1;
            leading_break = true;
            self.block_breaks(&mut indent, min, &mut trailing)?;
        }
        if chomp != -1 && leading_break {
            out.push('\n');
        }
        if chomp == 1 {
            out.push_str(&trailing);
        }
        if !self.eof() {
            self.pos = self.line_start(self.pos);
        }
        Ok(Value::String(out))
    }

    /// Past a block scalar's empty lines (each a `\n` in `trailing`) and the
    /// indentation of the next line; settles `indent` when it is still 0.
    fn block_breaks(&mut self, indent: &mut usize, min: usize, trailing: &mut String) -> Result<(), Error> {
        let mut max_indent = 0;
        loop {
            let line = self.pos;
            while (*indent == 0 || self.pos - line < *indent) && self.at(self.pos) == b' ' {
                self.pos += 1;
            }
            max_indent = max_indent.max(self.pos - line);
            if (*indent == 0 || self.pos - line < *indent) && self.at(self.pos) == b'\t' {
                return self.err(self.pos, "a tab in the indentation of a block scalar");
            }
            if self.at(self.pos) != b'\n' {
                break;
            }
            self.pos += 1;
            trailing.push('\n');
        }
        if *indent == 0 {
            *indent = max_indent.max(min);
        }
        Ok(())
    }
}
