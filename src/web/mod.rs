//! What every HTML page tinyscale serves shares: escaping, the headers
//! that keep a page from being framed (clickjacking a confirmation
//! button), sniffed, scripted or leaking its URL, and the look
//! (`layout`). The admin web UI (`admin`, `pages`, `session`) lives here.

pub mod admin;
pub mod layout;
mod pages;
pub mod session;

use base64::Engine;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

/// `name=value` pairs of a Cookie header.
pub fn cookies(header: Option<&str>) -> std::collections::HashMap<String, String> {
    header
        .unwrap_or("")
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Nothing loads, nothing frames the page, forms go only to this server.
const POLICY: &str = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The Content-Security-Policy of a page whose only inline content is the
/// `<style>` element `style` (allowed by its hash, not by `'unsafe-inline'`).
pub fn content_security_policy(style: Option<&str>) -> String {
    match style {
        None => POLICY.to_string(),
        Some(s) => format!("{POLICY}; style-src 'sha256-{}'", sha256_b64(s)),
    }
}

fn sha256_b64(text: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
}

/// The headers of a page with one inline `<style>` and, maybe, one inline
/// `<script>` (allowed by their hashes), which may fetch from this origin.
pub fn page_headers_with(h: &mut HeaderMap, style: &str, script: Option<&str>) {
    page_headers(h, Some(style));
    if let Some(js) = script {
        let csp = format!(
            "{}; script-src 'sha256-{}'; connect-src 'self'",
            content_security_policy(Some(style)),
            sha256_b64(js)
        );
        if let Ok(v) = HeaderValue::try_from(csp) {
            h.insert(CONTENT_SECURITY_POLICY, v);
        }
    }
}

/// Adds the page headers; `style` is the page's one inline `<style>`, if any.
pub fn page_headers(h: &mut HeaderMap, style: Option<&str>) {
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The policy is ASCII and base64, always a valid header value; were it
    // not, the page would still get the stricter policy without styles.
    let csp = HeaderValue::try_from(content_security_policy(style)).unwrap_or(HeaderValue::from_static(POLICY));
    h.insert(CONTENT_SECURITY_POLICY, csp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(html_escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn pages_are_not_framed_and_styles_are_allowed_by_hash() {
        let mut h = HeaderMap::new();
        page_headers(&mut h, Some("body{margin:0}"));
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[REFERRER_POLICY], "no-referrer");
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; form-action 'self'; frame-ancestors 'none'"), "{csp}");
        // `echo -n 'body{margin:0}' | openssl dgst -sha256 -binary | base64`
        assert!(csp.ends_with("style-src 'sha256-IAdwN3biDCQ3brrgp1m8kBEsPQYyqfREKOEfeoREopc='"), "{csp}");
        assert!(!csp.contains("unsafe"));
        assert_eq!(content_security_policy(None), POLICY);
    }
}
