//! Extra DNS records: `dns.extra_records` in the config, or the JSON file
//! at `dns.extra_records_path` (Headscale's format, a list of
//! `{"name", "type", "value"}`), checked the same way. Every client gets
//! them in every map, so their number and size are bounded.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::tailcfg::DnsRecord;

/// The largest records file read (about 2,500 records of typical size).
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Records a tailnet may carry: each is in every client's map.
pub const MAX_RECORDS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsError {
    /// The record's position in the list (from 0), where one is to blame.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "record {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RecordsError {}

/// One record as written: Headscale's files use `name`, Tailscale's own
/// JSON `Name`, and Go reads either, so both are accepted here.
#[derive(Deserialize)]
struct Written {
    #[serde(alias = "Name")]
    name: String,
    #[serde(rename = "type", alias = "Type", default)]
    kind: String,
    #[serde(alias = "Value")]
    value: String,
}

/// Reads a records file's bytes. An empty file is `Ok(None)`: Headscale
/// takes it for a file caught half-written and keeps what it had, and so
/// does the watcher (`[]` clears the records).
pub fn parse_file(bytes: &[u8]) -> Result<Option<Vec<DnsRecord>>, RecordsError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(whole(format!("the file is larger than {MAX_FILE_BYTES} bytes, the most that is read")));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let written: Vec<Written> = serde_json::from_slice(bytes)
        .map_err(|e| whole(format!("not a JSON list of {{\"name\", \"type\", \"value\"}}: {e}")))?;
    checked(written.into_iter().map(|w| (w.name, w.kind, w.value))).map(Some)
}

/// Checks records given as (name, type, value), drops exact repeats
/// (Headscale keeps them as a set) and returns them in the order given.
pub fn checked(records: impl IntoIterator<Item = (String, String, String)>) -> Result<Vec<DnsRecord>, RecordsError> {
    let mut out: Vec<DnsRecord> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, (name, kind, value)) in records.into_iter().enumerate() {
        let at = |message: String| RecordsError { index: Some(i), message };
        let bare = name.strip_suffix('.').unwrap_or(&name);
        if !super::valid_domain(bare) {
            return Err(at(format!(
                "name {name:?} is not a domain name (letters, digits, '-' and '_' in dot-separated labels)"
            )));
        }
        let ip: IpAddr = value.parse().map_err(|_| at(format!("value {value:?} of {name:?} is not an IP address")))?;
        match (kind.as_str(), ip) {
            ("A", IpAddr::V4(_)) | ("AAAA", IpAddr::V6(_)) | ("", _) => {}
            ("A", _) | ("AAAA", _) => {
                return Err(at(format!("{name:?}: an {kind} record cannot hold {value}")));
            }
            _ => {
                return Err(at(format!(
                    "{name:?} has type {kind:?}: Tailscale clients answer only A and AAAA records"
                )));
            }
        }
        let record = DnsRecord { name, kind, value };
        if seen.insert((record.name.to_ascii_lowercase(), record.kind.clone(), ip)) {
            if out.len() == MAX_RECORDS {
                return Err(at(format!("more than {MAX_RECORDS} records: each one is in every client's map")));
            }
            out.push(record);
        }
    }
    Ok(out)
}

fn whole(message: String) -> RecordsError {
    RecordsError { index: None, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Vec<DnsRecord>>, RecordsError> {
        parse_file(s.as_bytes())
    }

    #[test]
    fn headscale_and_tailscale_spellings_both_read() {
        let r = parse(
            r#"[{"name": "nas.lan", "type": "A", "value": "192.168.1.5"},
                {"Name": "cam.tailnet.internal.", "Type": "AAAA", "Value": "fd7a:115c:a1e0::9"},
                {"name": "nas.lan", "type": "A", "value": "192.168.1.5", "comment": "ignored"}]"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.len(), 2, "the repeat is dropped: {r:?}");
        assert_eq!(r[1].name, "cam.tailnet.internal.");
        assert_eq!(parse(" \n").unwrap(), None);
        assert_eq!(parse("[]").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn bad_records_name_their_fault() {
        let cases = [
            (r#"[{"name": "a b", "type": "A", "value": "1.2.3.4"}]"#, "not a domain name"),
            (r#"[{"name": "x.lan", "type": "A", "value": "fd00::1"}]"#, "cannot hold"),
            (r#"[{"name": "x.lan", "type": "AAAA", "value": "10.0.0.1"}]"#, "cannot hold"),
            (r#"[{"name": "x.lan", "type": "CNAME", "value": "1.2.3.4"}]"#, "only A and AAAA"),
            (r#"[{"name": "x.lan", "type": "A", "value": "nas"}]"#, "not an IP address"),
            (r#"[{"name": "x.lan", "type": "A"}]"#, "missing field `value`"),
            (r#"{"name": "x.lan"}"#, "not a JSON list"),
            (r#"[{"name": "x.lan", "type": "A", "value": "1.2.3.4"}"#, "not a JSON list"),
            ("\u{feff}[]", "not a JSON list"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn size_and_count_are_bounded() {
        let big = format!("[{}]", " ".repeat(MAX_FILE_BYTES));
        assert!(parse(&big).unwrap_err().to_string().contains("the most that is read"));
        let many: Vec<String> = (0..=MAX_RECORDS)
            .map(|i| format!(r#"{{"name":"h{i}.lan","type":"A","value":"10.0.{}.{}"}}"#, i / 256, i % 256))
            .collect();
        let e = parse(&format!("[{}]", many.join(","))).unwrap_err();
        assert_eq!(e.index, Some(MAX_RECORDS));
        assert!(e.to_string().contains("every client's map"));
        assert_eq!(parse(&format!("[{}]", many[..MAX_RECORDS].join(","))).unwrap().unwrap().len(), MAX_RECORDS);
    }
}
