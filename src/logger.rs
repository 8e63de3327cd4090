//! A small `log` backend: one line per record on stderr, as text or JSON.
//!
//! procd hands stderr to logread on OpenWrt, so stderr is the only sink.
//! Secrets never reach this module: callers log names and ids, not values.
//! Records carry text from outside (request paths, a provider's error,
//! hostnames), so every record is made safe here, in both formats: nothing
//! in it can start a line of its own or drive the reader's terminal.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::Serialize;

use crate::text::{escape_controls, unsafe_char};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger;

/// Characters of one record's message: the sites clip text from outside
/// far shorter; this holds for whatever one forgets.
const MAX_MESSAGE: usize = 2048;

static LOGGER: Logger = Logger;
/// The format is chosen after the config is read, once the logger already
/// reports the config's own problems: it stays switchable.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger (once) and sets the level and the format (every call).
pub fn init(level: LevelFilter, format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
    // Already installed by an earlier call: only the level and format change then.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    level: &'static str,
    target: &'a str,
    msg: &'a str,
}

/// serde_json leaves DEL, the C1 controls, the line separators and the
/// bidirectional overrides raw; as `\uXXXX` escapes (all are in the BMP) the
/// decoded value is the same and the line is safe to show.
fn escape_json_extras(json: String) -> String {
    if !json.chars().any(unsafe_char) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders one record; separate from `log` so it can be tested.
fn render(format: Format, now: i64, level: Level, target: &str, msg: &str) -> String {
    let time = crate::clock::rfc3339(now);
    let target = target.strip_prefix("tinyscale::").unwrap_or(target);
    match format {
        Format::Text => format!(
            "{time} {:<5} {}: {}\n",
            level_name(level).to_uppercase(),
            escape_controls(target),
            escape_controls(msg)
        ),
        Format::Json => {
            let line = JsonLine { time: &time, level: level_name(level), target, msg };
            // A struct of strings always serializes; an empty line would be the only loss.
            let mut s = escape_json_extras(serde_json::to_string(&line).unwrap_or_default());
            s.push('\n');
            s
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries' debug chatter (rustls's per-connection lines) stays out of a debug log.
        let ours = metadata.target().starts_with("tinyscale");
        metadata.level() <= log::max_level() && (ours || metadata.level() <= Level::Info)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let format = if JSON.load(Ordering::Relaxed) { Format::Json } else { Format::Text };
        let msg = record.args().to_string();
        // No record may take much of a small log buffer, whatever text it carries.
        let msg = crate::text::clip(&msg, MAX_MESSAGE);
        let line = render(format, crate::clock::now_unix(), record.level(), record.target(), &msg);
        // A full or closed stderr must not take the server down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines() {
        let t = render(Format::Text, 0, Level::Warn, "tinyscale::config", "hi");
        assert_eq!(t, "1970-01-01T00:00:00Z WARN  config: hi\n");
        let j = render(Format::Json, 0, Level::Info, "x", "a \"q\"\n\u{1}");
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["msg"], "a \"q\"\n\u{1}");
        assert_eq!(v["level"], "info");
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["target"], "x");
    }

    #[test]
    fn no_record_forges_a_line_or_reaches_the_terminal_raw() {
        let evil = "refused: x\n1970-01-01T00:00:00Z INFO  oidc: admin logged in\r\u{1b}[2J\u{9b}1m\u{2028}\u{202e}";
        let t = render(Format::Text, 0, Level::Info, "tinyscale::oidc", evil);
        assert_eq!(t.lines().count(), 1, "{t}");
        assert!(!t.trim_end_matches('\n').chars().any(unsafe_char), "{t:?}");
        assert!(t.contains("refused: x\\n1970-01-01T00:00:00Z INFO  oidc: admin logged in\\r\\u{1b}[2J"), "{t}");
        let j = render(Format::Json, 0, Level::Info, "tinyscale::oidc", evil);
        assert_eq!(j.lines().count(), 1, "{j}");
        assert!(!j.trim_end_matches('\n').chars().any(unsafe_char), "{j:?}");
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["msg"], evil, "the JSON value is exactly what was logged");
    }
}
