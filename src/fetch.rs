//! The outgoing HTTP client (the OIDC provider, `derp.urls`): blocking ureq
//! (callers run it in `spawn_blocking`), rustls with ring, and the system's
//! CA bundle (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) so an authentik behind
//! a private CA works and no root certificates are compiled into the binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Where distributions and OpenWrt's ca-bundle put the trusted roots.
const BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem", "/etc/pki/tls/certs/ca-bundle.crt"];
/// Largest document read from the provider.
const MAX_BODY: u64 = 1024 * 1024;

fn pem_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(f) = env("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    if let Some(dirs) = env("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
        let mut out = Vec::new();
        for d in dirs.split(':') {
            if let Ok(rd) = std::fs::read_dir(d) {
                out.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()));
            }
        }
        return out;
    }
    BUNDLES.iter().map(PathBuf::from).filter(|p| p.is_file()).take(1).collect()
}

/// The trusted roots; an empty list means HTTPS to the provider will fail.
pub fn load_roots(env: &dyn Fn(&str) -> Option<String>) -> Vec<Certificate<'static>> {
    let mut roots = Vec::new();
    for f in pem_files(env) {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        for item in ureq::tls::parse_pem(&bytes).flatten() {
            if let ureq::tls::PemItem::Certificate(c) = item {
                roots.push(c.to_owned());
            }
        }
    }
    roots
}

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

#[derive(Debug)]
pub struct HttpError(pub String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Client {
    pub fn new(roots: Vec<Certificate<'static>>) -> Client {
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Client { agent }
    }

    fn read(mut resp: ureq::http::Response<ureq::Body>, url: &str) -> Result<(u16, Value), HttpError> {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| HttpError(format!("{url}: reading the answer: {e}")))?;
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// GET a JSON document; non-2xx or non-JSON is an error.
    pub fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, HttpError> {
        let mut req = self.agent.get(url).header("Accept", "application/json");
        if let Some(t) = bearer {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| HttpError(format!("{url}: {e}")))?;
        match Self::read(resp, url)? {
            (200..=299, v) if !v.is_null() => Ok(v),
            (s, _) => Err(HttpError(format!("{url} answered HTTP {s}"))),
        }
    }

    /// POST a form (the token request); returns the status and JSON body.
    pub fn post_form(
        &self,
        url: &str,
        basic_auth: Option<String>,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), HttpError> {
        let mut req = self.agent.post(url).header("Accept", "application/json");
        if let Some(a) = basic_auth {
            req = req.header("Authorization", &a);
        }
        let resp = req.send_form(form.iter().copied()).map_err(|e| HttpError(format!("{url}: {e}")))?;
        Self::read(resp, url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_cert_file_wins_and_pem_certificates_load() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=test-ca", "-keyout", "/dev/null", "-out"])
            .arg(dir.path().join("ca.pem"))
            .output()
            .expect("openssl is required for this test");
        assert!(out.status.success());
        let file = dir.path().join("ca.pem").to_string_lossy().into_owned();
        let env = move |k: &str| (k == "SSL_CERT_FILE").then(|| file.clone());
        assert_eq!(load_roots(&env).len(), 1);
        let d = dir.path().to_string_lossy().into_owned();
        let env = move |k: &str| (k == "SSL_CERT_DIR").then(|| d.clone());
        assert_eq!(load_roots(&env).len(), 1);
        let none = |k: &str| (k == "SSL_CERT_FILE").then(|| "/nonexistent.pem".to_string());
        assert!(load_roots(&none).is_empty());
    }
}
