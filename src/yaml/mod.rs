//! The YAML that tinyscale reads and writes, without a YAML library.
//!
//! Reading (`parse`) covers what Headscale-style config files, DERP map files
//! and `TINYSCALE_*` environment values use: block mappings and sequences,
//! flow `[..]` and `{..}`, plain, single- and double-quoted scalars, block
//! scalars (`|`, `>`), comments, one document with an optional `---`/`...`.
//! Plain scalars resolve by YAML 1.2's core schema as serde_yaml 0.9 did
//! (`yes` and `on` stay strings, `0770` is a string, `0x1f` a number). Anchors,
//! aliases, tags, complex keys and several documents are refused with an
//! error naming the line, as is nesting deeper than [`MAX_DEPTH`]. The result
//! is a `serde_json::Value`; typed reads go through `serde_json::from_value`.
//!
//! Writing (`from_json`) turns JSON text into block-style YAML for the CLI's
//! `-o yaml`, in the JSON's own key order, quoting every string that would
//! read back as something else.

mod emit;
mod parse;
mod scalar;

use std::fmt;

pub use emit::from_json;
pub use parse::parse;

/// How deeply collections may nest; hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why text is not YAML we read, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Error {
    /// The error at byte `pos` of `text`.
    fn at(text: &str, pos: usize, message: impl Into<String>) -> Error {
        let before = &text.as_bytes()[..pos.min(text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        Error { line, column, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {} column {}", self.message, self.line, self.column)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_serde_yaml;
