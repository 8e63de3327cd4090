//! What a browser (or anyone) sends to the login pages: the callback's query
//! string, the confirmation form, the Cookie header, and the names cookies
//! are looked up by. A panic here took the whole router build down once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyscale::oidc::flow;
use tinyscale::url;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let q = url::form(&text);
    if let Some(state) = q.get("state") {
        let _ = flow::is_token(state);
        let _ = flow::cookie_name("state", state);
    }
    let _ = url::query_param(&text, "v");
    let jar = flow::cookies(Some(&text));
    for (k, v) in &jar {
        let _ = flow::cookie_name(k, v);
    }
    let _ = url::parse_http(&text);
    // What is encoded decodes to itself.
    assert_eq!(url::percent_decode(&url::percent_encode(&text)), text);
});
