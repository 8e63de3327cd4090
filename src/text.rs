//! Making text from outside safe for line-oriented sinks: log lines and the
//! admin's terminal, where a newline would forge a line and an escape
//! sequence would drive the terminal; and reading the comma lists an admin
//! types (tags, routes) on the command line or in a form.

use std::borrow::Cow;

/// Characters that must not reach a line-oriented sink raw: the C0 and C1
/// controls and DEL (newlines, ESC, ...), the Unicode line and paragraph
/// separators, and the bidirectional overrides that reorder what is shown.
/// `a, b,c` as `["a", "b", "c"]`: trimmed, empty items dropped.
pub fn comma_list(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as a Rust escape (`\n`, `\u{1b}`),
/// so it stays on one line and shows what was sent; borrowed when nothing
/// needed escaping, which is nearly always.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// At most `max` characters of `s`, with `…` for what was cut: text from
/// outside is logged this short, so no request can flush a small log
/// buffer (OpenWrt's logd keeps 64 KiB) on its own.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}

/// The longest start of `s` of at most `max` bytes that ends on a
/// character boundary: a byte cut inside a letter would panic.
pub fn head_bytes(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape_controls("laptop ünï \\n"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape_controls("\u{1b}[2J\u{7}\u{7f}\u{9b}"), "\\u{1b}[2J\\u{7}\\u{7f}\\u{9b}");
        assert_eq!(escape_controls("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        assert!(!escape_controls("\u{0}\u{85}\u{2029}\u{2066}").chars().any(unsafe_char));
    }

    #[test]
    fn a_byte_bound_never_cuts_a_letter() {
        assert_eq!(head_bytes("ééé", 3), "é");
        assert_eq!(head_bytes("ééé", 4), "éé");
        assert_eq!(head_bytes("abc", 10), "abc");
        assert_eq!(head_bytes("é", 0), "");
    }

    #[test]
    fn clipped_text_keeps_whole_characters() {
        assert!(matches!(clip("short", 200), Cow::Borrowed("short")));
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("ééééé", 2), "éé…");
        assert_eq!(clip(&"x".repeat(32 * 1024), 200).chars().count(), 201);
    }
}
