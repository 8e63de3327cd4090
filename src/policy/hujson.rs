//! HuJSON, the "human JSON" Tailscale's policy files are written in: JSON
//! plus `//` and `/* */` comments and trailing commas.
//!
//! A reader of our own (about 300 lines) rather than a crate: it keeps the
//! line and column of every value, so the policy's checks can name the place
//! of a mistake, and it bounds what hostile text can cost (size, nesting).
//! Objects keep their members in order; a repeated key is an error, as Go's
//! JSON v2 decoder (Tailscale's and Headscale's) makes it.

use std::fmt;

/// The largest policy accepted. Real ones are a few KB; Tailscale caps
/// its own at 1 MiB too.
pub const MAX_LEN: usize = 1 << 20;
/// The deepest nesting accepted. A policy is four levels deep; a grant's
/// `app` values may nest a little more.
pub const MAX_DEPTH: usize = 32;

/// 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's text, already checked against JSON's grammar.
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<Member>),
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub key: String,
    /// Where the key starts.
    pub pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HujsonError {
    TooLarge { len: usize },
    TooDeep { pos: Pos },
    Syntax { pos: Pos, what: String },
}

impl fmt::Display for HujsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HujsonError::TooLarge { len } => {
                write!(f, "the policy is {len} bytes, more than the {MAX_LEN} accepted")
            }
            HujsonError::TooDeep { pos } => write!(f, "{pos}: nested more than {MAX_DEPTH} levels deep"),
            HujsonError::Syntax { pos, what } => write!(f, "{pos}: {what}"),
        }
    }
}

impl std::error::Error for HujsonError {}

impl Node {
    /// A short name of the value's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// The value as plain JSON (comments and positions dropped), for the
    /// parts of a policy passed on as they are (a grant's `app` values).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            // The text passed JSON's number grammar, which serde_json reads;
            // an exponent too large for f64 is the one way it could refuse.
            Value::Number(n) => serde_json::from_str(n).unwrap_or(J::Null),
            Value::String(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Object(members) => J::Object(members.iter().map(|m| (m.key.clone(), m.value.to_json())).collect()),
        }
    }
}

/// Reads one HuJSON value (the whole text).
pub fn parse(text: &str) -> Result<Node, HujsonError> {
    if text.len() > MAX_LEN {
        return Err(HujsonError::TooLarge { len: text.len() });
    }
    let mut r = Reader { s: text.as_bytes(), i: 0, line: 1, col: 1 };
    // A UTF-8 byte-order mark, as some editors write.
    if r.s.starts_with(b"\xEF\xBB\xBF") {
        r.i = 3;
    }
    r.skip_blank()?;
    let v = r.value(0)?;
    r.skip_blank()?;
    if r.i < r.s.len() {
        return Err(r.err("unexpected text after the end of the policy"));
    }
    Ok(v)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

impl Reader<'_> {
    fn pos(&self) -> Pos {
        Pos { line: self.line, col: self.col }
    }

    fn err(&self, what: impl Into<String>) -> HujsonError {
        HujsonError::Syntax { pos: self.pos(), what: what.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Consumes one byte, keeping the line and column.
    fn bump(&mut self) {
        if let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            if b == b'\n' {
                self.line += 1;
                self.col = 1;
            } else if b & 0xC0 != 0x80 {
                // Continuation bytes do not start a character.
                self.col += 1;
            }
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the text".into(),
            Some(_) => {
                // The text is a &str, so `i` on a char boundary when we look.
                let rest = std::str::from_utf8(&self.s[self.i..]).unwrap_or("");
                match rest.chars().next() {
                    Some(c) => format!("{c:?}"),
                    None => "the end of the text".into(),
                }
            }
        }
    }

    /// Whitespace and comments.
    fn skip_blank(&mut self) -> Result<(), HujsonError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.bump(),
                Some(b'/') => {
                    let start = self.pos();
                    match self.s.get(self.i + 1) {
                        Some(b'/') => {
                            while !matches!(self.peek(), None | Some(b'\n')) {
                                self.bump();
                            }
                        }
                        Some(b'*') => {
                            self.bump();
                            self.bump();
                            loop {
                                match self.peek() {
                                    None => {
                                        return Err(HujsonError::Syntax {
                                            pos: start,
                                            what: "a /* comment is never closed".into(),
                                        })
                                    }
                                    Some(b'*') if self.s.get(self.i + 1) == Some(&b'/') => {
                                        self.bump();
                                        self.bump();
                                        break;
                                    }
                                    Some(_) => self.bump(),
                                }
                            }
                        }
                        _ => return Err(self.err("a lone '/' (comments start with // or /*)")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, HujsonError> {
        let pos = self.pos();
        let value = match self.peek() {
            Some(b'{') => self.object(depth + 1)?,
            Some(b'[') => self.array(depth + 1)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(b't') => self.word("true", Value::Bool(true))?,
            Some(b'f') => self.word("false", Value::Bool(false))?,
            Some(b'n') => self.word("null", Value::Null)?,
            _ => return Err(self.err(format!("expected a value, found {}", self.found()))),
        };
        Ok(Node { pos, value })
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value, HujsonError> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            for _ in 0..w.len() {
                self.bump();
            }
            Ok(v)
        } else {
            Err(self.err(format!("expected a value, found {}", self.found())))
        }
    }

    fn enter(&self, depth: usize) -> Result<(), HujsonError> {
        if depth > MAX_DEPTH {
            Err(HujsonError::TooDeep { pos: self.pos() })
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, HujsonError> {
        self.enter(depth)?;
        self.bump(); // '['
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.peek() == Some(b']') {
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth)?);
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b']') => {}
                _ => return Err(self.err(format!("expected ',' or ']' in an array, found {}", self.found()))),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, HujsonError> {
        self.enter(depth)?;
        self.bump(); // '{'
        let mut members: Vec<Member> = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                Some(b'}') => {
                    self.bump();
                    break;
                }
                Some(b'"') => {}
                _ => return Err(self.err(format!("expected a key in quotes or '}}', found {}", self.found()))),
            }
            let pos = self.pos();
            let key = self.string()?;
            self.skip_blank()?;
            if self.peek() != Some(b':') {
                return Err(self.err(format!("expected ':' after the key {key:?}, found {}", self.found())));
            }
            self.bump();
            self.skip_blank()?;
            let value = self.value(depth)?;
            members.push(Member { key, pos, value });
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {}
                _ => return Err(self.err(format!("expected ',' or '}}' in an object, found {}", self.found()))),
            }
        }
        // Sorting indices finds repeats in n log n, even in a huge object.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_unstable_by(|&a, &b| members[a].key.cmp(&members[b].key).then(a.cmp(&b)));
        if let Some(w) = order.windows(2).find(|w| members[w[0]].key == members[w[1]].key) {
            let m = &members[w[1]];
            return Err(HujsonError::Syntax { pos: m.pos, what: format!("the key {:?} appears twice", m.key) });
        }
        Ok(Value::Object(members))
    }

    fn number(&mut self) -> Result<String, HujsonError> {
        let start = self.i;
        let pos = self.pos();
        let bad = || HujsonError::Syntax { pos, what: "a malformed number".into() };
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.bump();
                }
            }
            _ => return Err(bad()),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad());
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad());
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.bump();
            }
        }
        // Only ASCII was consumed.
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn hex4(&mut self) -> Result<u32, HujsonError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("expected four hex digits after \\u")),
            };
            n = n * 16 + d as u32;
            self.bump();
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, HujsonError> {
        let start = self.pos();
        self.bump(); // '"'
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(HujsonError::Syntax { pos: start, what: "a string is never closed".into() }),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.bump();
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return Err(self.err("a lone UTF-16 surrogate in a \\u escape"));
                                }
                                self.bump();
                                self.bump();
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("a lone UTF-16 surrogate in a \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.err("a lone UTF-16 surrogate in a \\u escape"))?;
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.err(format!("an unknown escape \\{}", self.found().trim_matches('\'')))),
                    };
                    self.bump();
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(b) if b < 0x20 => return Err(self.err("a control character inside a string (write it escaped)")),
                Some(b) => {
                    out.push(b);
                    self.bump();
                }
            }
        }
        // The input was UTF-8 and escapes were written as UTF-8.
        String::from_utf8(out)
            .map_err(|_| HujsonError::Syntax { pos: start, what: "a string that is not UTF-8".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn comments_trailing_commas_and_positions() {
        let v = parse(
            "// policy\n{\n  /* acls */ \"acls\": [1, 2.5e3, \"x\",],\n  \"b\": {\"t\": true, \"n\": null,},\n}\n",
        )
        .unwrap();
        let Value::Object(m) = &v.value else { panic!() };
        assert_eq!(m[0].key, "acls");
        assert_eq!(m[0].pos, Pos { line: 3, col: 14 });
        let Value::Array(items) = &m[0].value.value else { panic!() };
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].value, Value::Number("2.5e3".into()));
        assert_eq!(items[2].pos, Pos { line: 3, col: 33 });
        assert_eq!(v.to_json(), serde_json::json!({"acls": [1, 2500.0, "x"], "b": {"t": true, "n": null}}));
    }

    #[test]
    fn escapes_and_unicode_columns() {
        let v = parse("[\"é\", \"\\u00e9\\ud83d\\ude00\\n\"]").unwrap();
        let Value::Array(items) = &v.value else { panic!() };
        assert_eq!(items[1].pos, Pos { line: 1, col: 7 });
        assert_eq!(items[1].value, Value::String("é😀\n".into()));
    }

    #[test]
    fn mistakes_name_their_place() {
        assert_eq!(err("{\n  \"a\": 1\n  \"b\": 2}"), "line 3, column 3: expected ',' or '}' in an object, found '\"'");
        assert_eq!(err("[1,,2]"), "line 1, column 4: expected a value, found ','");
        assert_eq!(err("{\"a\":1, \"a\":2}"), "line 1, column 9: the key \"a\" appears twice");
        assert!(err("/* open").contains("never closed"));
        assert!(err("\"open").contains("never closed"));
        assert!(err("[01]").contains("expected ',' or ']'"));
        assert!(err("[1.]").contains("malformed number"));
        assert!(err("{} x").contains("after the end"));
        assert!(err("").contains("expected a value"));
        assert!(err("\"\\ud800\"").contains("surrogate"));
        assert!(err("\"a\tb\"").contains("control character"));
        assert!(err("[tru]").contains("expected a value"));
        assert!(err("{a: 1}").contains("expected a key in quotes"));
    }

    #[test]
    fn bounds_hostile_input() {
        let deep = "[".repeat(100_000);
        assert!(matches!(parse(&deep), Err(HujsonError::TooDeep { .. })));
        let ok_depth = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok_depth).is_ok());
        let big = " ".repeat(MAX_LEN + 1);
        assert!(matches!(parse(&big), Err(HujsonError::TooLarge { .. })));
        // A megabyte of keys in one object is read in n log n.
        let mut wide = String::from("{");
        let mut i = 0;
        while wide.len() < MAX_LEN - 32 {
            wide.push_str(&format!("\"k{i}\":{i},"));
            i += 1;
        }
        wide.push('}');
        assert!(parse(&wide).is_ok());
    }
}
