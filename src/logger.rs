//! A small `log` backend: one line per record on stderr, as text or JSON.
//!
//! procd hands stderr to logread on OpenWrt, so stderr is the only sink.
//! Secrets never reach this module: callers log names and ids, not values.

use std::io::Write;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    format: Format,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger (first call wins) and sets the level (every call).
pub fn init(level: LevelFilter, format: Format) {
    let logger = LOGGER.get_or_init(|| Logger { format });
    // Already installed by an earlier call: only the level changes then.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

fn json_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
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

/// Renders one record; separate from `log` so it can be tested.
fn render(format: Format, now: i64, level: Level, target: &str, msg: &str) -> String {
    let time = crate::clock::rfc3339(now);
    let target = target.strip_prefix("tinyscale::").unwrap_or(target);
    match format {
        Format::Text => format!("{time} {:<5} {target}: {msg}\n", level_name(level).to_uppercase()),
        Format::Json => {
            let mut s = String::with_capacity(64 + msg.len());
            s.push_str("{\"time\":\"");
            s.push_str(&time);
            s.push_str("\",\"level\":\"");
            s.push_str(level_name(level));
            s.push_str("\",\"target\":\"");
            json_escape(target, &mut s);
            s.push_str("\",\"msg\":\"");
            json_escape(msg, &mut s);
            s.push_str("\"}\n");
            s
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries' debug chatter (ureq's per-request lines) stays out of a debug log.
        let ours = metadata.target().starts_with("tinyscale");
        metadata.level() <= log::max_level() && (ours || metadata.level() <= Level::Info)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line =
            render(self.format, crate::clock::now_unix(), record.level(), record.target(), &record.args().to_string());
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
    }
}
