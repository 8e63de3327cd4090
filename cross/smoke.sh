#!/usr/bin/env bash
# Runs a cross-built binary under qemu-user, as the router would run it:
# `tinyscale version`; `serve` on its embedded defaults in an empty folder,
# answering /health; the CLI over the unix socket making a user and a
# pre-auth key, then 60 more users (enough store traffic to drain sled's page
# cache queues, where the unpatched sled aborted on MIPS after nine); kill -9;
# a restart that still has them all; a clean SIGTERM stop.
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
bin="${CARGO_TARGET_DIR:-target}/$t/release/tinyscale"
# The server runs from a scratch folder: the path must be absolute.
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
[ -x "$bin" ] || { echo "cross/smoke.sh: build $bin first (cross/build.sh $t)" >&2; exit 1; }

dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
fail() { echo "cross/smoke.sh: $t: $*" >&2; [ -f "$dir/serve.log" ] && cat "$dir/serve.log" >&2; exit 1; }
# Run in the empty folder with an empty environment: only the embedded
# defaults, the listen address moved off 8080.
run() { (cd "$dir" && exec env -i TINYSCALE_LISTEN_ADDR="127.0.0.1:$port" $q "$bin" "$@"); }

serve() {
  # exec, so that $! is the server itself and kill -9 reaches it.
  (cd "$dir" && exec env -i TINYSCALE_LISTEN_ADDR="127.0.0.1:$port" $q "$bin" serve) >>"$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do
    if body=$(curl -fsS -m 5 "http://127.0.0.1:$port/health" 2>/dev/null); then
      [ "$body" = '{"status":"pass"}' ] || fail "unexpected /health answer $body"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "serve exited"
    sleep 0.2
  done
  fail "never answered /health"
}

echo "== $t: version"
run version

echo "== $t: serve on embedded defaults (listen address moved to :$port)"
serve
echo "== $t: a user and a pre-auth key over the unix socket"
run users create family -o json-line >/dev/null || fail "users create"
key=$(run preauthkeys create -u family --reusable -e 1h -o json-line | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
[ -n "$key" ] || fail "preauthkeys create printed no key"
echo "== $t: 60 more users"
for i in $(seq 1 60); do
  run users create "member$i" -o json-line >/dev/null || fail "users create member$i"
done

echo "== $t: kill -9 (bash reports it as Killed), restart"
kill -9 "$pid"
{ wait "$pid"; } 2>/dev/null || true
serve
users=$(run users list -o json-line)
grep -q '"name":"family"' <<<"$users" || fail "the user did not survive kill -9"
n=$(grep -o '"name":"member[0-9]*"' <<<"$users" | wc -l)
[ "$n" -eq 60 ] || fail "$n of the 60 users survived kill -9"
# Listings show a key's public prefix only.
run preauthkeys list -u family -o json-line | grep -qF "\"key\":\"${key%-*}-" || fail "the pre-auth key did not survive kill -9"

echo "== $t: SIGTERM"
kill -TERM "$pid"
wait "$pid" || fail "serve did not exit cleanly"
pid=
grep -q 'store flushed' "$dir/serve.log" || fail "no 'store flushed' on SIGTERM"
echo "== $t: ok"
