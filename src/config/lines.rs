//! Which line of the YAML text each key path starts on.
//!
//! The YAML reader (`crate::yaml`) reports only its first error with a
//! position and yields a `serde_json::Value` without positions; this small
//! scanner of block-style YAML recovers them, so every
//! config problem can name its line. Flow collections (`{a: 1}`, `[x]`) are not
//! descended into: their keys take the line of the key that holds them.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

enum Frame {
    Key { indent: usize, path: String },
    Item { indent: usize, path: String },
}

impl Frame {
    fn indent(&self) -> usize {
        match self {
            Frame::Key { indent, .. } | Frame::Item { indent, .. } => *indent,
        }
    }
    fn path(&self) -> &str {
        match self {
            Frame::Key { path, .. } | Frame::Item { path, .. } => path,
        }
    }
}

/// The key at the start of `s` (`key:` followed by space or end), unquoted.
fn leading_key(s: &str) -> Option<String> {
    let (raw, after) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), &q[end + 1..])
    } else if let Some(q) = s.strip_prefix('\'') {
        let end = q.find('\'')?;
        (q[..end].to_string(), &q[end + 1..])
    } else {
        let mut end = None;
        for (i, c) in s.char_indices() {
            if c == ':' {
                let next = s[i + 1..].chars().next();
                if next.is_none() || next == Some(' ') || next == Some('\t') {
                    end = Some(i);
                    break;
                }
            }
            if c == '#' && (i == 0 || s[..i].ends_with(' ')) {
                return None;
            }
        }
        let end = end?;
        (s[..end].trim_end().to_string(), &s[end..])
    };
    let after = after.trim_start();
    if !after.starts_with(':') || raw.is_empty() || raw.starts_with(['{', '[', '-', '#']) {
        return None;
    }
    Some(raw)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl LineIndex {
    pub fn build(text: &str) -> LineIndex {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        // Next item index per sequence path.
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut in_block_scalar: Option<usize> = None;

        for (n, line) in text.lines().enumerate() {
            let lineno = n + 1;
            let indent = line.len() - line.trim_start_matches(' ').len();
            let mut rest = line.trim_start_matches(' ');
            if let Some(block_indent) = in_block_scalar {
                if rest.is_empty() || indent > block_indent {
                    continue;
                }
                in_block_scalar = None;
            }
            if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") || rest.starts_with("...") {
                continue;
            }
            let mut indent = indent;
            // Sequence items, possibly several on one line (`- - x`).
            while rest == "-" || rest.starts_with("- ") {
                while stack.last().is_some_and(|f| match f {
                    Frame::Item { indent: i, .. } => *i >= indent,
                    Frame::Key { indent: i, .. } => *i > indent,
                }) {
                    stack.pop();
                }
                let parent = stack.last().map(|f| f.path().to_string()).unwrap_or_default();
                let k = counters.entry(parent.clone()).or_insert(0);
                let path = format!("{parent}[{k}]");
                *k += 1;
                lines.entry(path.clone()).or_insert(lineno);
                stack.push(Frame::Item { indent, path });
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
                if rest.is_empty() {
                    break;
                }
            }
            let Some(key) = leading_key(rest) else { continue };
            while stack.last().is_some_and(|f| f.indent() >= indent) {
                stack.pop();
            }
            let parent = stack.last().map(|f| f.path().to_string()).unwrap_or_default();
            let path = join(&parent, &key);
            lines.entry(path.clone()).or_insert(lineno);
            // A new mapping under this key restarts its sequence numbering.
            counters.remove(&path);
            let value = rest.split_once(':').map_or("", |(_, v)| v).trim();
            if value.starts_with('|') || value.starts_with('>') {
                in_block_scalar = Some(indent);
            }
            stack.push(Frame::Key { indent, path });
        }
        LineIndex { lines }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
server_url: http://x:8080   # trailing
prefixes:
  v4: 100.64.0.0/10

  v6: \"fd7a:115c:a1e0::/48\"
dns:
  nameservers:
    global:
      - 1.1.1.1
      - 8.8.8.8
  extra_records:
    - name: a.example
      type: A
    - { name: b, type: A }
derp:
  urls:
  - https://example/derp
  paths: []
policy:
  text: |
    not: a key
  mode: file
";

    #[test]
    fn finds_keys_and_items() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line_of("server_url"), Some(2));
        assert_eq!(idx.line_of("prefixes.v4"), Some(4));
        assert_eq!(idx.line_of("prefixes.v6"), Some(6));
        assert_eq!(idx.line_of("dns.nameservers.global[1]"), Some(11));
        assert_eq!(idx.line_of("dns.extra_records[0].type"), Some(14));
        assert_eq!(idx.line_of("dns.extra_records[1].name"), Some(15));
        assert_eq!(idx.line_of("derp.urls[0]"), Some(18));
        assert_eq!(idx.line_of("derp.paths"), Some(19));
        assert_eq!(idx.line_of("policy.mode"), Some(23));
        assert_eq!(idx.line_of("policy.text.not"), Some(21));
        assert_eq!(idx.line_of("nope"), None);
    }
}
