#!/usr/bin/env bash
# Builds the static tinyscale binary for one router target, without Docker:
#
#   cross/build.sh aarch64-unknown-linux-musl       # stable std + Debian's cross gcc
#   cross/build.sh mipsel-unknown-linux-musl        # nightly -Zbuild-std + cargo-zigbuild
#   cross/build.sh armv7-unknown-linux-musleabihf   # likewise (rustup's 32-bit ARM std is unreachable here)
#
# The stripped binary lands at target/<target>/release/tinyscale; its size is
# printed as one line "<target> <bytes> bytes". A mipsel binary over its
# budget fails the build: flash is the budget. The budget only moves down:
# 3.5 MiB (3,670,016 bytes) since the HTTP client, the YAML reader and a
# sled built for size.
# FEATURES=... passes cargo features (default: the `router` preset); any
# further arguments go to cargo (e.g. --config 'profile.release.opt-level=3').
# SKIP_SETUP=1 skips cross/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: cross/build.sh <rust-target> [cargo args...]}
shift
[ "${SKIP_SETUP:-}" = 1 ] || cross/setup.sh "$t"
feat=()
[ -n "${FEATURES:-}" ] && feat=(--no-default-features --features "$FEATURES")
MAX_MIPSEL=$((35 * 1024 * 1024 / 10))

case "$t" in
  x86_64-unknown-linux-musl)
    cargo build --locked --release --target "$t" "${feat[@]}" "$@" ;;
  aarch64-unknown-linux-musl)
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
      cargo build --locked --release --target "$t" "${feat[@]}" "$@" ;;
  mipsel-unknown-linux-musl|mips-unknown-linux-musl|armv7-unknown-linux-musleabihf|arm-unknown-linux-musleabi|armv5te-unknown-linux-musleabi)
    # RUSTFLAGS must stay unset: the target's flags are in .cargo/config.toml.
    # optimize_for_size: std's smaller algorithms (sorting, formatting);
    # nothing on the hot paths leans on them.
    env -u RUSTFLAGS cargo +nightly zigbuild --locked --release --target "$t" \
      -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size "${feat[@]}" "$@" ;;
  *) echo "cross/build.sh: unsupported target $t" >&2; exit 2 ;;
esac

bin="${CARGO_TARGET_DIR:-target}/$t/release/tinyscale"
[ -x "$bin" ] || { echo "cross/build.sh: $bin was not produced" >&2; exit 1; }
if command -v file >/dev/null; then
  file "$bin" | grep -Eq 'statically linked|static-pie linked' || { echo "cross/build.sh: $bin is not statically linked: $(file "$bin")" >&2; exit 1; }
fi
size=$(stat -c %s "$bin")
printf '%s\t%s bytes\n' "$t" "$size"
if [ "$t" = mipsel-unknown-linux-musl ] && [ -z "${FEATURES:-}" ] && [ "$size" -gt "$MAX_MIPSEL" ]; then
  echo "cross/build.sh: the mipsel binary is $size bytes, over its budget ($MAX_MIPSEL bytes)" >&2
  exit 1
fi
