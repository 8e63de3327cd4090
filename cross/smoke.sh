#!/usr/bin/env bash
# Runs a cross-built binary under qemu-user: `tinyscale version`, then `serve`
# on its embedded defaults in an empty folder answering /health.
#
#   cross/smoke.sh aarch64-unknown-linux-musl [port]
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: cross/smoke.sh <rust-target> [port]}
port=${2:-18180}
case "$t" in
  aarch64-*) q=qemu-aarch64-static ;;
  mipsel-*) q=qemu-mipsel-static ;;
  mips-*) q=qemu-mips-static ;;
  arm*) q=qemu-arm-static ;;
  x86_64-*) q= ;;
  *) echo "cross/smoke.sh: no emulator known for $t" >&2; exit 2 ;;
esac
bin="$PWD/target/$t/release/tinyscale"
[ -x "$bin" ] || { echo "cross/smoke.sh: build $bin first (cross/build.sh $t)" >&2; exit 1; }

echo "== $t: version"
$q "$bin" version

dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
echo "== $t: serve on embedded defaults (listen address moved to :$port)"
(cd "$dir" && exec env -i TINYSCALE_LISTEN_ADDR="127.0.0.1:$port" $q "$bin" serve) >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  if body=$(curl -fsS -m 5 "http://127.0.0.1:$port/health" 2>/dev/null); then
    echo "$body"
    [ "$body" = '{"status":"pass"}' ] || { echo "unexpected /health answer" >&2; exit 1; }
    kill -TERM "$pid"; wait "$pid" || { echo "serve did not exit cleanly" >&2; cat "$dir/serve.log"; exit 1; }
    grep -q 'store flushed' "$dir/serve.log" || { cat "$dir/serve.log"; exit 1; }
    echo "== $t: ok"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
echo "cross/smoke.sh: $t never answered /health" >&2
cat "$dir/serve.log" >&2
exit 1
