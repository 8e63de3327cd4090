//! Our YAML reader (src/yaml) against serde_yaml, which it replaced: it
//! never panics; when serde_yaml reads a text to a value JSON can hold and
//! we read it too, the two agree; and what we write for a value we read
//! reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_yaml::Value as Y;

#[path = "../../src/yaml/serde_yaml_view.rs"]
mod view;
use view::json_of;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ours = tinyscale::yaml::parse(text);
    if let Ok(v) = &ours {
        // What we write for JSON text reads back as serde_json reads that
        // text (serde_json's own float parsing may move a float by an ulp).
        let json = v.to_string();
        let yaml = tinyscale::yaml::from_json(&json).expect("JSON");
        let back: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(tinyscale::yaml::parse(&yaml).as_ref(), Ok(&back), "{yaml:?}");
    }
    // serde_yaml follows YAML 1.1 here, where these are line breaks.
    if text.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
        return;
    }
    // libyaml counts a leading byte order mark as a column, so `---` or
    // `...` right after it is no marker there (it reads "---" as a string).
    if text.strip_prefix('\u{feff}').is_some_and(|t| t.starts_with("---") || t.starts_with("...")) {
        return;
    }
    let Some(theirs) = serde_yaml::from_str::<Y>(text).ok().and_then(|v| json_of(&v)) else { return };
    if let Ok(ours) = ours {
        assert_eq!(ours, theirs, "{text:?}");
    }
});
