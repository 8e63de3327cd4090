//! What the CLI prints: a readable table by default, or exactly the JSON
//! (or YAML) object on stdout with `-o json|json-line|yaml`.
//!
//! Readable output shows text that devices chose (hostnames of devices not
//! even admitted yet): every control character is shown escaped, so none
//! can start a forged row or drive the admin's terminal.

use serde::Serialize;

use crate::text::escape_controls;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    JsonLine,
    Yaml,
}

pub fn parse_format(s: Option<&str>) -> Result<Format, String> {
    match s {
        None | Some("") => Ok(Format::Table),
        Some("json") => Ok(Format::Json),
        Some("json-line") => Ok(Format::JsonLine),
        Some("yaml") => Ok(Format::Yaml),
        Some(other) => Err(format!("unknown output format {other:?} (json, json-line or yaml)")),
    }
}

/// Prints `value` in the machine formats, or what `human` renders otherwise.
pub fn emit<T: Serialize + ?Sized>(format: Format, value: &T, human: impl FnOnce() -> String) {
    let text = match format {
        // Cells are escaped already; this catches any other text from the server.
        Format::Table => human().split('\n').map(escape_controls).collect::<Vec<_>>().join("\n"),
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        Format::JsonLine => serde_json::to_string(value).unwrap_or_default(),
        Format::Yaml => serde_json::to_string(value)
            .ok()
            .and_then(|j| crate::yaml::from_json(&j))
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    };
    println!("{text}");
}

/// Columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|c| escape_controls(c).into_owned()).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$} | ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Text as a table cell: `-` when empty, control characters escaped.
pub fn text(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        escape_controls(s).into_owned()
    }
}

/// A list as one cell.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.iter().map(|i| text(i)).collect::<Vec<_>>().join(", ")
    }
}

/// An RFC 3339 time as `2026-11-27 15:37:01`.
pub fn when(t: &str) -> String {
    match t.get(..19) {
        Some(head) => head.replace('T', " "),
        None => "-".into(),
    }
}

pub fn when_opt(t: Option<&str>) -> String {
    t.map_or_else(|| "-".into(), when)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["ID", "Name"], &[vec!["1".into(), "alice".into()], vec!["10".into(), "b".into()]]);
        assert_eq!(t, "ID | Name\n1  | alice\n10 | b");
        assert_eq!(when("2026-11-27T15:37:01Z"), "2026-11-27 15:37:01");
        assert_eq!(when_opt(None), "-");
        assert_eq!(list(&[]), "-");
        assert!(parse_format(Some("xml")).is_err());
    }

    #[test]
    fn text_from_devices_cannot_forge_rows_or_drive_the_terminal() {
        assert_eq!(text("evil\u{1b}[2J\nfake | row\r"), "evil\\u{1b}[2J\\nfake | row\\r");
        let t = table(&["ID", "Hostname"], &[vec!["1".into(), "a\nb\u{7}".into()]]);
        assert_eq!(t, "ID | Hostname\n1  | a\\nb\\u{7}");
    }
}
