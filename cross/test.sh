#!/usr/bin/env bash
# Runs the library's unit tests for a router target under qemu-user.
#
#   cross/test.sh mips-unknown-linux-musl [cargo test args...]
#
# mips is the one that differs most from the x86 CI machine: big-endian, and
# without 64-bit atomics, so sled runs on its lock shims there (the page-cache
# crash vendor/sled fixes only ever showed on such targets).
#
# The unit tests need to unwind (the harness reports a failing test and goes
# on), so the build-std targets are built here without .cargo/config.toml's
# immediate-abort: RUSTFLAGS replaces that file's flags for the target, and
# keeps only what linking a static musl binary with zig needs.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: cross/test.sh <rust-target> [cargo test args...]}
shift
[ "${SKIP_SETUP:-}" = 1 ] || cross/setup.sh "$t"
upper=$(echo "$t" | tr 'a-z-' 'A-Z_')
# Line tables are enough for a failing test's backtrace; full debug info of
# std and every dependency made the mips build a minute longer (4m01s against
# 3m08s on 2 cores).
debug=(--config 'profile.dev.debug="line-tables-only"' --config 'profile.dev.package."*".debug=false')

case "$t" in
  aarch64-unknown-linux-musl)
    export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static
    cargo test --locked --lib --target "$t" "${debug[@]}" "$@" ;;
  mipsel-unknown-linux-musl|mips-unknown-linux-musl|armv7-unknown-linux-musleabihf|arm-unknown-linux-musleabi|armv5te-unknown-linux-musleabi)
    case "$t" in
      mipsel-*) q=qemu-mipsel-static ;;
      mips-*) q=qemu-mips-static ;;
      *) q=qemu-arm-static ;;
    esac
    export "CARGO_TARGET_${upper}_RUNNER=$q"
    # cargo-zigbuild's own `test` subcommand: `cargo zigbuild` only builds.
    RUSTUP_TOOLCHAIN=nightly \
    RUSTFLAGS="-C target-feature=+crt-static -C link-self-contained=no -A linker-messages" \
      cargo-zigbuild test --locked --lib --target "$t" -Zbuild-std "${debug[@]}" "$@" ;;
  *) echo "cross/test.sh: unsupported target $t" >&2; exit 2 ;;
esac
