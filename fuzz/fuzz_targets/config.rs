//! The config file: Headscale's YAML, the env overrides over it, and the line
//! index that names each problem's line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let index = tinyscale::config::LineIndex::build(&text);
    let _ = index.line_of("server_url");
    let _ = index.line_of("derp.server.enabled");
    // As a file's text (None would be the embedded defaults, with no file).
    let _ = tinyscale::config::parse(&text, Some(std::path::Path::new("/etc/tinyscale/config.yaml")), &|_| None);
});
