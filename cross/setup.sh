#!/usr/bin/env bash
# Installs what cross/build.sh and cross/smoke.sh need for the given targets,
# on a Debian machine like CI's (root, no Docker). Idempotent and quiet when
# everything is already there; any failure stops the run loudly.
#
#   cross/setup.sh aarch64-unknown-linux-musl mipsel-unknown-linux-musl
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

for t in "$@"; do
  case "$t" in
    aarch64-unknown-linux-musl)
      have aarch64-linux-gnu-gcc || need_apt+=(gcc-aarch64-linux-gnu)
      have qemu-aarch64-static || need_apt+=(qemu-user-static) ;;
    x86_64-unknown-linux-musl)
      have musl-gcc || need_apt+=(musl-tools) ;;
    mipsel-*|mips-*|armv7-*|arm-*|armv5te-*)
      have qemu-mipsel-static || need_apt+=(qemu-user-static) ;;
    *) echo "cross/setup.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
have curl || need_apt+=(curl)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "cross/setup.sh: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

for t in "$@"; do
  case "$t" in
    aarch64-unknown-linux-musl|x86_64-unknown-linux-musl)
      rustup target list --installed | grep -qx "$t" || rustup target add "$t" ;;
    *)
      # Tier 3 (MIPS) and 32-bit ARM (whose rustup std is not reachable here):
      # nightly builds std itself, zig supplies musl and the C compiler.
      if ! rustup toolchain list | grep -q '^nightly'; then
        echo "cross/setup.sh: $t needs the nightly toolchain, which this machine lacks" >&2
        exit 1
      fi
      rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
        || rustup component add rust-src --toolchain nightly
      if ! have cargo-zigbuild || ! python3 -c 'import ziglang' 2>/dev/null; then
        echo "cross/setup.sh: pip install ziglang cargo-zigbuild"
        python3 -m pip install -q ziglang cargo-zigbuild
      fi ;;
  esac
done
