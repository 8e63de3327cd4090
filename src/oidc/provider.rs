//! The provider's discovery document, read the way authentik needs it:
//! endpoints taken from the document (never glued onto the issuer), the
//! issuer compared exactly, except that a trailing-slash difference only warns
//! (authentik's issuer always ends in `/`). The discovered issuer is the one
//! used from then on, so fixing the config later does not duplicate users.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// `client_secret_basic`: the spec's default.
    Basic,
    Post,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    pub token_auth: TokenAuth,
    pub algs: Vec<String>,
}

pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// Reads a discovery document for the configured issuer; returns the
/// provider and, when the issuers differ only by a trailing slash, a warning.
pub fn from_discovery(doc: &Value, configured: &str) -> Result<(Provider, Option<String>), String> {
    let s = |f: &str| doc.get(f).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
    let issuer = s("issuer").ok_or("the discovery document has no issuer")?;
    let warning = if issuer == configured {
        None
    } else if issuer.trim_end_matches('/') == configured.trim_end_matches('/') {
        Some(format!(
            "oidc.issuer is {configured:?} but the provider calls itself {issuer:?}; using the provider's (add or drop the trailing slash in the config to silence this)"
        ))
    } else {
        return Err(format!(
            "the provider at {configured:?} calls itself {issuer:?}; oidc.issuer must match it exactly"
        ));
    };
    let need = |f: &str| s(f).ok_or_else(|| format!("the discovery document has no {f}"));
    let methods: Vec<String> = doc
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let token_auth = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
        TokenAuth::Basic
    } else if methods.iter().any(|m| m == "client_secret_post") {
        TokenAuth::Post
    } else {
        return Err(format!("the provider offers no client-secret authentication ({methods:?})"));
    };
    let algs = doc
        .get("id_token_signing_alg_values_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok((
        Provider {
            issuer,
            authorization_endpoint: need("authorization_endpoint")?,
            token_endpoint: need("token_endpoint")?,
            userinfo_endpoint: s("userinfo_endpoint"),
            jwks_uri: need("jwks_uri")?,
            token_auth,
            algs,
        },
        warning,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(issuer: &str) -> Value {
        json!({"issuer": issuer, "authorization_endpoint": "https://a.example/application/o/authorize/",
               "token_endpoint": "https://a.example/application/o/token/", "userinfo_endpoint": "https://a.example/application/o/userinfo/",
               "jwks_uri": "https://a.example/application/o/ts/jwks/",
               "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
               "id_token_signing_alg_values_supported": ["RS256"]})
    }

    #[test]
    fn issuers_and_endpoints() {
        let iss = "https://a.example/application/o/ts/";
        let (p, w) = from_discovery(&doc(iss), iss).unwrap();
        assert!(w.is_none());
        assert_eq!(p.authorization_endpoint, "https://a.example/application/o/authorize/", "taken from the document");
        assert_eq!(p.token_auth, TokenAuth::Basic);
        // Only a trailing slash apart: a warning, and the discovered string wins.
        let (p, w) = from_discovery(&doc(iss), "https://a.example/application/o/ts").unwrap();
        assert_eq!(p.issuer, iss);
        assert!(w.unwrap().contains("trailing slash"));
        assert!(from_discovery(&doc("https://evil.example/"), iss).is_err());
        let mut d = doc(iss);
        d["token_endpoint_auth_methods_supported"] = json!(["client_secret_post"]);
        assert_eq!(from_discovery(&d, iss).unwrap().0.token_auth, TokenAuth::Post);
        d.as_object_mut().unwrap().remove("jwks_uri");
        assert!(from_discovery(&d, iss).unwrap_err().contains("jwks_uri"));
        assert_eq!(discovery_url(iss), "https://a.example/application/o/ts/.well-known/openid-configuration");
        assert_eq!(discovery_url("https://x/y"), "https://x/y/.well-known/openid-configuration");
    }
}
