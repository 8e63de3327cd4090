//! The CLI's reader of the admin socket's HTTP answers (plain and chunked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tinyscale::cli::parse_reply(data);
});
