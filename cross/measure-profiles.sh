#!/usr/bin/env bash
# Measures the release profile's opt-level trade: stripped binary size and the
# idle RSS of `serve` on embedded defaults, for opt-level 3 everywhere, the
# shipped profile (z, with the Noise primitives at 3) and z everywhere.
#
#   cross/measure-profiles.sh [target]     (default x86_64-unknown-linux-musl)
#
# Prints one table row per opt-level. Each build goes to its own target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-x86_64-unknown-linux-musl}
cross/setup.sh "$t" >/dev/null
port=18290
printf '| opt-level | %s binary (bytes) | idle RSS after start (KiB) | RSS after 200 CLI calls (KiB) |\n|---|---|---|---|\n' "$t"
at_3=(curve25519-dalek x25519-dalek blake2)
for choice in 3 shipped z; do
  args=()
  case "$choice" in
    3) args=(--config 'profile.release.opt-level=3') ;;
    shipped) ;;
    z) for c in "${at_3[@]}"; do args+=(--config "profile.release.package.$c.opt-level=\"z\""); done ;;
  esac
  dir="target/opt-$choice"
  CARGO_TARGET_DIR="$dir" SKIP_SETUP=1 cross/build.sh "$t" "${args[@]}" >"$dir.log" 2>&1 \
    || { cat "$dir.log" >&2; exit 1; }
  bin="$PWD/$dir/$t/release/tinyscale"
  work=$(mktemp -d)
  port=$((port + 1))
  (cd "$work" && exec env -i TINYSCALE_LISTEN_ADDR="127.0.0.1:$port" "$bin" serve) >"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  (cd "$work" && "$bin" users create alice >/dev/null)
  for i in $(seq 1 100); do
    (cd "$work" && "$bin" preauthkeys create --user alice >/dev/null && "$bin" users list >/dev/null)
  done
  busy=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" || true
  rm -rf "$work"
  printf '| %s | %s | %s | %s |\n' "$choice" "$(stat -c %s "$bin")" "$idle" "$busy"
done
