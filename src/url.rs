//! URL pieces the edges share: percent-encoding of one path segment or query
//! value, `a=b&c=d` forms, and the scheme, host and port of an http(s) URL.
//! The coding is the `percent-encoding` crate's and the parsing `http::Uri`'s;
//! this module only fixes the choices (which bytes are escaped, `+` in forms).

use std::collections::HashMap;

use hyper::Uri;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters: safe in a path segment,
/// a query value and a form field alike.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` as one path segment or query value.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// Decodes `%XX` escapes; a malformed escape stays as it is and bytes that
/// are not UTF-8 become U+FFFD, so no input is refused.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The `name=value` pairs of a query or `application/x-www-form-urlencoded`
/// body, decoded (`+` is a space there), in order.
pub fn form_pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let dec = |s: &str| percent_decode(&s.replace('+', " "));
        (dec(k), dec(v))
    })
}

/// A form or query as a map; of repeated names the last wins.
pub fn form(text: &str) -> HashMap<String, String> {
    form_pairs(text).collect()
}

/// The first value of `name` in a query.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// What a server needs of an http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    /// IPv6 literals without their brackets.
    pub host: String,
    /// Explicit, or the scheme's.
    pub port: u16,
}

/// `None` unless `url` is an absolute http:// or https:// URL with a host.
/// Only the scheme and authority are parsed: the rest is the business of
/// whoever serves it (an issuer's path may hold characters `Uri` refuses).
pub fn parse_http(url: &str) -> Option<HttpUrl> {
    let (scheme, rest) = url.split_once("://")?;
    // Lower case only, as every other check of `https://` in tinyscale expects.
    let https = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let uri: Uri = format!("{scheme}://{authority}").parse().ok()?;
    let authority = uri.authority()?;
    let raw_host = authority.host();
    let host = raw_host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(raw_host);
    if host.is_empty() {
        return None;
    }
    // `Uri` reports a port it cannot read (`:99999`, `:`) as no port at all.
    let after_host = authority.as_str().rsplit('@').next()?.strip_prefix(raw_host)?;
    let port = match authority.port_u16() {
        Some(p) => p,
        None if after_host.is_empty() => {
            if https {
                443
            } else {
                80
            }
        }
        None => return None,
    };
    Some(HttpUrl { https, host: host.to_string(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips_and_escapes_all_but_unreserved() {
        for s in ["plain", "a b/c?d&e=f", "ünï", "100%", "+", "x\ny"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_encode("a-b.c_d~e f/ü"), "a-b.c_d~e%20f%2F%C3%BC");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn forms_decode_plus_and_escapes() {
        let f = form("csrf=a%2Bb&x=1+2&&flag&x2=%0a");
        assert_eq!((f["csrf"].as_str(), f["x"].as_str(), f["flag"].as_str()), ("a+b", "1 2", ""));
        assert_eq!(f["x2"], "\n");
        assert_eq!(query_param("user=a&user=b", "user").as_deref(), Some("a"));
        assert_eq!(query_param("usr=a", "user"), None);
    }

    #[test]
    fn http_urls() {
        let p = |u: &str| parse_http(u).map(|h| (h.https, h.host, h.port));
        assert_eq!(p("http://192.168.1.1:8080"), Some((false, "192.168.1.1".into(), 8080)));
        assert_eq!(p("https://hs.example.net"), Some((true, "hs.example.net".into(), 443)));
        assert_eq!(p("http://[fd00::1]/x"), Some((false, "fd00::1".into(), 80)));
        assert_eq!(p("http://[fd00::1]:81/x?y#z"), Some((false, "fd00::1".into(), 81)));
        assert_eq!(p("https://user@Router.lan:8443/"), Some((true, "Router.lan".into(), 8443)));
        assert_eq!(p("https://auth.example/application/o/<slug>/"), Some((true, "auth.example".into(), 443)));
        for bad in [
            "HTTP://x",
            "ftp://x",
            "router.lan:8080",
            "http://",
            "http://:8080",
            "http:///x",
            "",
            "https://a b",
            "http://x:99999",
            "http://x:",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
