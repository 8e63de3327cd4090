//! Records when the binary was built: a router boots in 1970 until NTP answers,
//! and nothing may be expired while the clock reads earlier than this.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    println!("cargo:rustc-env=TINYSCALE_BUILD_EPOCH={epoch}");
    // The Rust target triple, for `tinyscale version`.
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=TINYSCALE_TARGET={target}");
}
