#!/usr/bin/env bash
# Prints the size table of the README from the binaries cross/build.sh left
# in target/: one row per board profile whose binary exists, so the README's
# figures are this output, pasted, never typed.
#
#   cross/sizes.sh            (tests/run-all.sh runs it after its builds)
set -euo pipefail
cd "$(dirname "$0")/.."
printf '| board | Rust target | stripped static binary (bytes) | MiB | gzipped (bytes) |\n|---|---|---|---|---|\n'
rows=0
for profile in board/*.env; do
  # shellcheck disable=SC1090
  RUST_TARGET=; BOARD=; . "$profile"
  bin="${CARGO_TARGET_DIR:-target}/$RUST_TARGET/release/tinyscale"
  [ -x "$bin" ] || continue
  bytes=$(stat -c %s "$bin")
  printf '| %s | %s | %s | %s | %s |\n' "$BOARD" "$RUST_TARGET" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')" "$(gzip -9c "$bin" | wc -c)"
  rows=$((rows + 1))
done
[ "$rows" -gt 0 ] || { echo "cross/sizes.sh: no board binary built yet (cross/build.sh <target>)" >&2; exit 1; }
