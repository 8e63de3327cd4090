#!/usr/bin/env bash
# The whole tinyscale test suite, from a fresh clone on a Debian machine:
# installs what the tests need, runs the unit and process tests, then
# cross-builds for an ARM and a MIPS router and smoke-tests both under qemu.
#
#   ./tests/run-all.sh
#
# Every missing component makes the run fail; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
t0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t0 ))s)"; }

step "tools for the process tests (openssl, curl, file, zstd, ip, nsenter)"
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v zstd >/dev/null || missing+=(zstd)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "the real Tailscale client (../shared/realclient, into target/realclient)"
../shared/realclient/install.sh "$PWD/target/realclient"

step "the test OpenID provider (../shared/test-idp, into target/idp)"
mkdir -p target/idp
cp ../shared/test-idp/package.json ../shared/test-idp/package-lock.json ../shared/test-idp/server.mjs target/idp/
(cd target/idp && npm ci --no-audit --no-fund --loglevel=error)

step "unit, process, real-client and OIDC tests"
cargo test --locked

for t in aarch64-unknown-linux-musl mipsel-unknown-linux-musl; do
  step "cross build $t"
  cross/build.sh "$t"
  step "qemu smoke test $t"
  port=18180
  [ "$t" = mipsel-unknown-linux-musl ] && port=18181
  cross/smoke.sh "$t" "$port"
done

step "all tests passed"
