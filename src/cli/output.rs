//! What the CLI prints: a readable table by default, or exactly the JSON
//! (or YAML) object on stdout with `-o json|json-line|yaml`.
//!
//! Readable output shows text that devices chose (hostnames of devices not
//! even admitted yet): every control character is shown escaped, so none
//! can start a forged row or drive the admin's terminal.

use serde_json::Value;

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
pub fn emit(format: Format, value: &Value, human: impl FnOnce() -> String) {
    let text = match format {
        // Cells are escaped already; this catches any other text from the server.
        Format::Table => human().split('\n').map(escape_controls).collect::<Vec<_>>().join("\n"),
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        Format::JsonLine => value.to_string(),
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default().trim_end().to_string(),
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

/// A JSON field as table text.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => escape_controls(s).into_owned(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// An RFC 3339 time as `2026-11-27 15:37:01`.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => t[..19].replace('T', " "),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["ID", "Name"], &[vec!["1".into(), "alice".into()], vec!["10".into(), "b".into()]]);
        assert_eq!(t, "ID | Name\n1  | alice\n10 | b");
        assert_eq!(when(&Value::String("2026-11-27T15:37:01Z".into())), "2026-11-27 15:37:01");
        assert!(parse_format(Some("xml")).is_err());
    }

    #[test]
    fn text_from_devices_cannot_forge_rows_or_drive_the_terminal() {
        let host = Value::String("evil\u{1b}[2J\nfake | row\r".into());
        assert_eq!(cell(&host), "evil\\u{1b}[2J\\nfake | row\\r");
        let t = table(&["ID", "Hostname"], &[vec!["1".into(), "a\nb\u{7}".into()]]);
        assert_eq!(t, "ID | Hostname\n1  | a\\nb\\u{7}");
    }
}
