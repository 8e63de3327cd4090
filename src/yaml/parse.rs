//! The structure: one document of block mappings and sequences, flow `[..]`
//! and `{..}`, with the scalars of `scalar.rs` as leaves.
//!
//! A recursive descent over the bytes. A block node ends at the start of the
//! first line that does not belong to it (or at the end of the text); its
//! extent follows YAML's indentation rules as libyaml (serde_yaml's parser)
//! applies them: a mapping's keys share one column, a mapping value may be a
//! sequence at the key's own column, plain scalars continue on lines indented
//! more than their collection.

use serde_json::{Map, Value};

use super::scalar::{key_text, resolve};
use super::{Error, MAX_DEPTH};

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    depth: usize,
}

/// Where a block value starts: what came just before it on its line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// The start of the document (or `---`): anything may follow.
    Document,
    /// `- `: a mapping or another sequence may start on the same line.
    Dash,
    /// `key:`: only a scalar or a flow collection on the same line; a
    /// sequence may start on the next line at the key's own column.
    Key,
}

/// Reads one YAML document into a JSON value (an empty document is null).
pub fn parse(text: &str) -> Result<Value, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // CR LF and a lone CR are line breaks; the line count stays the same.
    let normalized;
    let text = if text.contains('\r') {
        normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        &normalized
    } else {
        text
    };
    let mut p = Parser { text, b: text.as_bytes(), pos: 0, depth: 0 };
    p.document()
}

#[cfg(test)]
thread_local! {
    /// Bytes the parser has looked at on this thread: what the linear-time
    /// test counts instead of timing (a timed test fails on a slow machine).
    pub(super) static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[inline(always)]
fn examined(_n: usize) {
    #[cfg(test)]
    EXAMINED.with(|c| c.set(c.get() + _n));
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl<'a> Parser<'a> {
    pub(super) fn err<T>(&self, pos: usize, message: impl Into<String>) -> Result<T, Error> {
        Err(Error::at(self.text, pos, message))
    }

    /// The byte at `i`, or 0 past the end (the text has no NUL: `document` refuses it).
    pub(super) fn at(&self, i: usize) -> u8 {
        examined(1);
        self.b.get(i).copied().unwrap_or(0)
    }

    /// How many spaces start at `i`.
    fn spaces_at(&self, i: usize) -> usize {
        let n = self.b.get(i..).unwrap_or_default().iter().take_while(|&&c| c == b' ').count();
        examined(n + 1);
        n
    }

    pub(super) fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// A space, a tab, a line break or the end.
    pub(super) fn blankz_at(&self, i: usize) -> bool {
        matches!(self.at(i), b' ' | b'\t' | b'\n' | 0)
    }

    pub(super) fn skip_blanks(&mut self) {
        while is_blank(self.at(self.pos)) {
            self.pos += 1;
        }
    }

    pub(super) fn line_start(&self, i: usize) -> usize {
        let i = i.min(self.b.len());
        let start = self.b[..i].iter().rposition(|&c| c == b'\n').map_or(0, |n| n + 1);
        examined(i - start + 1);
        start
    }

    /// `---` or `...` at the start of the line at `i`.
    pub(super) fn doc_marker_at(&self, i: usize) -> bool {
        let m = self.b.get(i..i + 3);
        (m == Some(b"---") || m == Some(b"...")) && self.blankz_at(i + 3) && (i == 0 || self.at(i - 1) == b'\n')
    }

    /// From a line start, past lines that are blank or only a comment.
    fn skip_blank_lines(&mut self) {
        loop {
            let start = self.pos;
            self.skip_blanks();
            match self.at(self.pos) {
                b'\n' => self.pos += 1,
                b'#' => self.skip_line(),
                0 => return,
                _ => {
                    self.pos = start;
                    return;
                }
            }
        }
    }

    /// To the start of the next line.
    fn skip_line(&mut self) {
        while !matches!(self.at(self.pos), b'\n' | 0) {
            self.pos += 1;
        }
        if !self.eof() {
            self.pos += 1;
        }
    }

    /// The indentation of the (non-blank) line starting at `pos`.
    fn indent(&self) -> Result<usize, Error> {
        let n = self.spaces_at(self.pos);
        if self.at(self.pos + n) == b'\t' {
            return self.err(self.pos + n, "a tab in the indentation (YAML indents with spaces)");
        }
        Ok(n)
    }

    /// The rest of the line after a value: blanks and an optional comment.
    pub(super) fn end_of_line(&mut self, what: &str) -> Result<(), Error> {
        self.skip_blanks();
        match self.at(self.pos) {
            b'#' | b'\n' | 0 => {
                self.skip_line();
                Ok(())
            }
            b':' => self.err(self.pos, format!("unexpected `:` after {what} (quote a value that contains `: `)")),
            _ => self.err(self.pos, format!("unexpected text after {what}")),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(pos, format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn document(&mut self) -> Result<Value, Error> {
        if let Some(i) = self.text.find('\0') {
            return self.err(i, "a NUL character");
        }
        // libyaml skipped one there and counted it as indentation.
        if let Some(i) = self.text.find("\n\u{feff}") {
            return self.err(i + 1, "a byte order mark (U+FEFF) at the start of a line");
        }
        self.skip_blank_lines();
        if self.at(self.pos) == b'%' {
            return self.err(self.pos, "directives (`%YAML`, `%TAG`) are not supported");
        }
        let mut value = Value::Null;
        let explicit = self.doc_marker_at(self.pos) && self.at(self.pos) == b'-';
        if explicit {
            self.pos += 3;
        }
        if explicit || !(self.eof() || self.doc_marker_at(self.pos)) {
            value = self.block_value(-1, After::Document)?;
        }
        self.skip_blank_lines();
        if self.doc_marker_at(self.pos) && self.at(self.pos) == b'.' {
            self.pos += 3;
            self.end_of_line("`...`")?;
            self.skip_blank_lines();
        }
        if self.eof() {
            Ok(value)
        } else if self.doc_marker_at(self.pos) || self.at(self.pos) == b'%' {
            self.err(self.pos, "more than one document (`---`) is not supported")
        } else {
            self.err(self.pos, "unexpected text after the document (check the indentation)")
        }
    }

    /// The value after `- `, `key:` or at the document's start: on the rest
    /// of this line, or on the lines below indented more than `n` (the
    /// column of the collection that holds it; -1 for the document).
    fn block_value(&mut self, n: isize, after: After) -> Result<Value, Error> {
        self.skip_blanks();
        if matches!(self.at(self.pos), b'#' | b'\n' | 0) {
            self.skip_line();
            self.skip_blank_lines();
            if self.eof() || self.doc_marker_at(self.pos) {
                return Ok(Value::Null);
            }
            let i = self.indent()?;
            let item = self.at(self.pos + i) == b'-' && self.blankz_at(self.pos + i + 1);
            if i as isize > n {
                self.pos += i;
                return self.node(n, true);
            }
            if after == After::Key && i as isize == n && item {
                self.pos += i;
                return self.block_seq(i);
            }
            return Ok(Value::Null);
        }
        self.node(n, after != After::Key)
    }

    /// A node starting at `pos`; `collections`: whether a block mapping or
    /// sequence may start here (not on the line of a key).
    fn node(&mut self, n: isize, collections: bool) -> Result<Value, Error> {
        let start = self.pos;
        let col = start - self.line_start(start);
        match self.at(start) {
            b'-' if self.blankz_at(start + 1) => {
                if !collections {
                    return self.err(start, "a list cannot start on the line of its key; put its `- ` items below");
                }
                self.block_seq(col)
            }
            b'|' | b'>' => self.block_scalar(n),
            b'[' | b'{' => {
                let v = self.flow_node()?;
                self.skip_blanks();
                if self.at(self.pos) == b':' {
                    return self.err(start, "a [..] or {..} cannot be a key");
                }
                self.end_of_line("a [..] or {..} value")?;
                Ok(v)
            }
            b'"' | b'\'' => {
                let s = self.quoted()?;
                self.skip_blanks();
                if self.at(self.pos) == b':' && self.blankz_at(self.pos + 1) {
                    if !collections {
                        return self.err(self.pos, "a mapping cannot start on the line of its key");
                    }
                    if self.text[start..self.pos].contains('\n') {
                        return self.err(start, "a key must fit on one line");
                    }
                    self.pos += 1;
                    return self.block_map(col, s, start);
                }
                self.end_of_line("a quoted value")?;
                Ok(Value::String(s))
            }
            _ => {
                self.plain_start(start, false)?;
                let first = self.plain_line(false);
                if self.at(self.pos) == b':' {
                    if !collections {
                        return self.err(
                            self.pos,
                            "a mapping cannot start on the line of its key (quote a value that contains `: `)",
                        );
                    }
                    self.pos += 1;
                    return self.block_map(col, key_text(first), start);
                }
                let text = self.plain_rest(first, n)?;
                self.end_of_line("a value")?;
                Ok(resolve(&text))
            }
        }
    }

    /// A block mapping at column `m` whose first key has been read (and its `:`).
    fn block_map(&mut self, m: usize, first: String, first_pos: usize) -> Result<Value, Error> {
        self.enter(first_pos)?;
        let mut map = Map::new();
        let (mut key, mut key_pos) = (first, first_pos);
        loop {
            if map.contains_key(&key) {
                return self.err(key_pos, format!("duplicate key `{key}`"));
            }
            let value = self.block_value(m as isize, After::Key)?;
            map.insert(key, value);
            self.skip_blank_lines();
            if self.eof() || self.doc_marker_at(self.pos) {
                break;
            }
            let i = self.indent()?;
            if i < m {
                break;
            }
            if i > m {
                return self.err(self.pos + i, "unexpected indentation");
            }
            self.pos += i;
            key_pos = self.pos;
            key = self.key()?;
        }
        self.depth -= 1;
        Ok(Value::Object(map))
    }

    /// A key at `pos` and its `:`.
    fn key(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let key = match self.at(start) {
            b'"' | b'\'' => {
                let s = self.quoted()?;
                if self.text[start..self.pos].contains('\n') {
                    return self.err(start, "a key must fit on one line");
                }
                s
            }
            b'-' if self.blankz_at(start + 1) => {
                return self.err(start, "a `- ` item where a key (`name: value`) was expected");
            }
            b'[' | b'{' => return self.err(start, "a [..] or {..} cannot be a key"),
            _ => {
                self.plain_start(start, false)?;
                key_text(self.plain_line(false))
            }
        };
        self.skip_blanks();
        if self.at(self.pos) == b':' && self.blankz_at(self.pos + 1) {
            self.pos += 1;
            return Ok(key);
        }
        self.err(start, "expected a key followed by `:`")
    }

    /// A block sequence whose `-` is at `pos`, column `s`.
    fn block_seq(&mut self, s: usize) -> Result<Value, Error> {
        self.enter(self.pos)?;
        let mut items = Vec::new();
        loop {
            self.pos += 1;
            items.push(self.block_value(s as isize, After::Dash)?);
            self.skip_blank_lines();
            if self.eof() || self.doc_marker_at(self.pos) {
                break;
            }
            let i = self.indent()?;
            if i < s {
                break;
            }
            if i > s {
                return self.err(self.pos + i, "unexpected indentation");
            }
            if !(self.at(self.pos + i) == b'-' && self.blankz_at(self.pos + i + 1)) {
                break;
            }
            self.pos += i;
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    /// Checks that a plain scalar may start at `i` (else says what is there).
    pub(super) fn plain_start(&self, i: usize, flow: bool) -> Result<(), Error> {
        let c = self.at(i);
        let next_ends = self.blankz_at(i + 1) || (flow && is_flow_indicator(self.at(i + 1)));
        let msg = match c {
            b'&' => "anchors (`&name`) are not supported".to_string(),
            b'*' => "aliases (`*name`) are not supported".to_string(),
            b'!' => "tags (`!tag`) are not supported".to_string(),
            b'?' if next_ends || flow => "complex keys (`? `) are not supported".to_string(),
            b':' if next_ends || flow => "a key is missing before `:`".to_string(),
            b'-' if self.blankz_at(i + 1) => "a `- ` item is not allowed here".to_string(),
            b'|' | b'>' if flow => "a block scalar (`|`, `>`) cannot be inside [..] or {..}".to_string(),
            b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'|' | b'>' | b'%' | b'@' | b'`' | b'"' | b'\'' => {
                format!("unexpected `{}`", c as char)
            }
            b'\n' | 0 => "a value is missing".to_string(),
            _ => return Ok(()),
        };
        self.err(i, msg)
    }

    /// One line of a plain scalar from `pos`: up to `: `, ` #`, the line's end
    /// or (in flow) `,[]{}`; `pos` is left there, the text returned trimmed.
    pub(super) fn plain_line(&mut self, flow: bool) -> &'a str {
        let start = self.pos;
        let mut end = start;
        loop {
            let c = self.at(self.pos);
            match c {
                0 | b'\n' => break,
                b' ' | b'\t' => {
                    self.pos += 1;
                    continue;
                }
                b'#' if self.pos > start && is_blank(self.at(self.pos - 1)) => break,
                b':' if self.blankz_at(self.pos + 1) || (flow && is_flow_indicator(self.at(self.pos + 1))) => break,
                b',' | b'[' | b']' | b'{' | b'}' if flow => break,
                _ => {}
            }
            self.pos += 1;
            end = self.pos;
        }
        &self.text[start..end]
    }

    /// The lines that continue a plain scalar whose first line was `first`
    /// (block context: lines indented more than `n`). Single breaks fold to
    /// spaces, n breaks to n-1 newlines. `pos` is left after the last text.
    fn plain_rest(&mut self, first: &str, n: isize) -> Result<String, Error> {
        let mut out = first.to_string();
        // Only a scalar that ran to its line's end continues.
        while self.at(self.pos) == b'\n' {
            let end = self.pos;
            let mut breaks = 0;
            let mut p = self.pos;
            // Past the break and any blank lines, to the next line's text.
            let stop = loop {
                breaks += 1;
                p += 1;
                let line = p;
                let spaces = self.spaces_at(p);
                p += spaces;
                while is_blank(self.at(p)) {
                    p += 1;
                }
                if self.at(p) != b'\n' {
                    break matches!(self.at(p), b'#' | 0) || spaces as isize <= n || self.doc_marker_at(line);
                }
            };
            if stop {
                self.pos = end;
                break;
            }
            self.pos = p;
            let text = self.plain_line(false);
            push_fold(&mut out, breaks);
            out.push_str(text);
        }
        Ok(out)
    }

    /// A flow node at `pos`: `[..]`, `{..}`, a quoted or a plain scalar.
    fn flow_node(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        match self.at(start) {
            b'[' | b'{' => {
                self.enter(start)?;
                self.pos += 1;
                let v = if self.at(start) == b'[' { self.flow_seq(start)? } else { self.flow_map(start)? };
                self.depth -= 1;
                Ok(v)
            }
            b'"' | b'\'' => Ok(Value::String(self.quoted()?)),
            _ => {
                self.plain_start(start, true)?;
                let text = self.plain_flow();
                Ok(resolve(&text))
            }
        }
    }

    /// Past blanks, line breaks and comments inside [..] or {..} opened at `open`.
    fn skip_flow_space(&mut self, open: usize) -> Result<(), Error> {
        loop {
            match self.at(self.pos) {
                b' ' | b'\t' | b'\n' => self.pos += 1,
                b'#' => {
                    while !matches!(self.at(self.pos), b'\n' | 0) {
                        self.pos += 1;
                    }
                }
                0 => break,
                _ if self.doc_marker_at(self.pos) => break,
                _ => return Ok(()),
            }
        }
        let close = if self.at(open) == b'[' { ']' } else { '}' };
        self.err(open, format!("this `{}` is never closed with `{close}`", self.at(open) as char))
    }

    fn flow_seq(&mut self, open: usize) -> Result<Value, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_flow_space(open)?;
            if self.at(self.pos) == b']' {
                self.pos += 1;
                break;
            }
            let key_pos = self.pos;
            let node = self.flow_node()?;
            self.skip_flow_space(open)?;
            if self.at(self.pos) == b':' {
                // `[key: value]` is a one-entry mapping.
                let key = self.flow_key(node, key_pos)?;
                self.pos += 1;
                let value = self.flow_value(open)?;
                items.push(Value::Object(Map::from_iter([(key, value)])));
            } else {
                items.push(node);
            }
            if self.flow_separator(open, b']')? {
                break;
            }
        }
        Ok(Value::Array(items))
    }

    fn flow_map(&mut self, open: usize) -> Result<Value, Error> {
        let mut map = Map::new();
        loop {
            self.skip_flow_space(open)?;
            if self.at(self.pos) == b'}' {
                self.pos += 1;
                break;
            }
            let key_pos = self.pos;
            let node = self.flow_node()?;
            let key = self.flow_key(node, key_pos)?;
            self.skip_flow_space(open)?;
            let value = if self.at(self.pos) == b':' {
                self.pos += 1;
                self.flow_value(open)?
            } else {
                Value::Null
            };
            if map.contains_key(&key) {
                return self.err(key_pos, format!("duplicate key `{key}`"));
            }
            map.insert(key, value);
            if self.flow_separator(open, b'}')? {
                break;
            }
        }
        Ok(Value::Object(map))
    }

    /// After a flow item: a `,` (more follow) or the `close` that ends the
    /// collection (returns true); both are consumed.
    fn flow_separator(&mut self, open: usize, close: u8) -> Result<bool, Error> {
        self.skip_flow_space(open)?;
        match self.at(self.pos) {
            b',' => {
                self.pos += 1;
                Ok(false)
            }
            c if c == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => self.err(self.pos, format!("expected `,` or `{}`", close as char)),
        }
    }

    /// The value after a `:` in flow: a node, or null before `,`, `]`, `}`.
    fn flow_value(&mut self, open: usize) -> Result<Value, Error> {
        self.skip_flow_space(open)?;
        if matches!(self.at(self.pos), b',' | b']' | b'}') {
            return Ok(Value::Null);
        }
        self.flow_node()
    }

    fn flow_key(&self, node: Value, pos: usize) -> Result<String, Error> {
        match node {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Null => Ok("null".into()),
            _ => self.err(pos, "a [..] or {..} cannot be a key"),
        }
    }

    /// A plain scalar inside [..] or {..}, which may continue on later lines.
    fn plain_flow(&mut self) -> String {
        let mut out = self.plain_line(true).to_string();
        while self.at(self.pos) == b'\n' {
            let end = self.pos;
            let mut breaks = 0;
            while matches!(self.at(self.pos), b'\n' | b' ' | b'\t') {
                breaks += usize::from(self.at(self.pos) == b'\n');
                self.pos += 1;
            }
            let c = self.at(self.pos);
            if matches!(c, b'#' | b',' | b'[' | b']' | b'{' | b'}' | 0)
                || (c == b':' && (self.blankz_at(self.pos + 1) || is_flow_indicator(self.at(self.pos + 1))))
                || self.doc_marker_at(self.pos)
            {
                self.pos = end;
                break;
            }
            let text = self.plain_line(true);
            push_fold(&mut out, breaks);
            out.push_str(text);
        }
        out
    }
}

/// Line folding: one break is a space, n breaks are n-1 newlines.
pub(super) fn push_fold(out: &mut String, breaks: usize) {
    if breaks == 1 {
        out.push(' ');
    } else {
        out.extend(std::iter::repeat_n('\n', breaks - 1));
    }
}
