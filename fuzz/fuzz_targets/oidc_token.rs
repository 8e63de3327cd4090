//! What the identity provider sends back: ID tokens, the JWKS and the
//! discovery document. A token is parsed, then verified against keys parsed
//! from the same input, which must never panic whatever the algorithm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::oidc::{jwt, provider};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Input: a token, a newline, then a JSON document (JWKS or discovery).
    let (token, doc) = text.split_once('\n').unwrap_or((&text, ""));
    let keys = serde_json::from_str::<serde_json::Value>(doc).map(|v| {
        let _ = provider::from_discovery(&v, "https://idp.example/application/o/tinyscale/");
        jwt::parse_jwks(&v)
    });
    let keys = keys.unwrap_or_default();
    if let Ok(t) = jwt::parse(token) {
        let _ = jwt::verify_signature(&t, &keys, b"client-secret");
    }
    let expect = jwt::Expect {
        issuer: "https://idp.example/application/o/tinyscale/",
        client_id: "tinyscale",
        nonce: "n",
        now: 1_800_000_000,
        leeway: 60,
        clock_sane: true,
    };
    let _ = jwt::verify(token, &keys, b"client-secret", &expect);
});
