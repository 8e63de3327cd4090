#!/usr/bin/env bash
# The whole tinyscale test suite, from a fresh clone on a Debian machine:
# installs what the tests need (a real browser among them), runs the unit,
# process and browser tests (with every
# Cargo feature alone too), fuzzes every boundary parser for a short while, then
# cross-builds every board's binary, runs the big-endian mips unit tests
# under qemu, runs the process tests again against the mipsel binary under
# qemu, smoke-tests the ARM and MIPS binaries under qemu, and builds and
# checks every board's OpenWrt package.
#
#   ./tests/run-all.sh
#
# Every missing component makes the run fail; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Every test binary is built once here: no incremental caches, and line
# tables only for debug info (with full debug info a test binary weighs
# 135 MB, and five feature sets of them filled CI's disk).
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
t0=$(date +%s)
# Each stage's time goes into the summary printed at the end.
stages=()
stage_name=""
stage_t=$t0
end_stage() {
  local now
  now=$(date +%s)
  [ -n "$stage_name" ] && stages+=("$(printf '%6ss  %s' $((now - stage_t)) "$stage_name")")
  stage_name="$*"
  stage_t=$now
}
step() { end_stage "$*"; echo; echo "=== $* ($(( $(date +%s) - t0 ))s)"; }

step "tools for the tests (openssl, curl, file, zstd, ip, nsenter, nft)"
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v zstd >/dev/null || missing+=(zstd)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v nft >/dev/null || missing+=(nftables)
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

step "a real browser for the web UI tests (Debian's chromium; puppeteer-core into target/browser)"
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
mkdir -p target/browser
cp tests/browser/package.json tests/browser/package-lock.json target/browser/
(cd target/browser && npm ci --no-audit --no-fund --loglevel=error)

step "cargo-nextest (runs the tests, several processes at once)"
export PATH="$PWD/target/tools/bin:$PATH"
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked --root target/tools

# Lints first: clippy.toml also refuses 64-bit atomics, which only the MIPS
# builds would otherwise catch, much later.
step "clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "unit, process, real-client and OIDC tests"
cargo nextest run --locked

# No feature, then every Cargo feature alone: each builds and its tests
# pass. With none, the whole process suite but the kill -9 storm, the full
# flash, the real clients and the browser (they test the router build,
# which no set here is: they run above and against the mipsel binary).
# With one feature, the unit tests and the process tests whose code or
# checks change with a feature (the relay's, the login's, the logs'); the
# rest would rerun the no-feature run's tests on a build that differs from
# it only by code they do not reach, for about two minutes a set.
# Each set's test binaries and library are used once: they are deleted
# after its run, so the disk holds one set at a time.
marker=target/debug/.feature-run
for f in "" derp oidc fetch; do
  case $f in
    "") only=(-E 'not (binary(crash) | binary(full_flash) | binary(realclient) | binary(admin_ui))') ;;
    derp) only=(--lib --test derp --test relay_limits --test login_limits --test logs_and_pages) ;;
    oidc) only=(--lib --test oidc --test login_limits --test logs_and_pages) ;;
    fetch) only=(--lib --test login_limits --test logs_and_pages) ;;
  esac
  label=${f:+--features $f}
  step "tests with --no-default-features ${label:-(no DERP, no OIDC, no fetch)}"
  touch "$marker"
  cargo nextest run --locked --no-default-features ${f:+--features "$f"} "${only[@]}"
  find target/debug/deps -maxdepth 1 -type f -newer "$marker" \
    \( -name 'libtinyscale-*' -o \( -perm -u+x ! -name '*.so' \) \) -delete
done
df -h target | tail -n 1

step "fuzz every parser at the boundary (fuzz/run.sh, 12 s a target; nightly)"
FUZZ_SECONDS=12 fuzz/run.sh

# The router builds: one binary per board profile's target (mipsel fails the
# build past 3.5 MiB), the unit tests of the big-endian MIPS one under qemu,
# then each router binary under qemu through start, CLI, kill -9 and restart.
step "cross setup (Debian cross gcc, qemu-user, nightly rust-src, cargo-zigbuild)"
cross/setup.sh aarch64-unknown-linux-musl mipsel-unknown-linux-musl x86_64-unknown-linux-musl
for t in aarch64-unknown-linux-musl mipsel-unknown-linux-musl armv7-unknown-linux-musleabihf mips-unknown-linux-musl \
  x86_64-unknown-linux-musl; do
  step "cross build $t"
  SKIP_SETUP=1 cross/build.sh "$t"
done

# The aarch64 unit tests (cross/test.sh aarch64-unknown-linux-musl) are
# left out: little-endian, 64-bit and with 64-bit atomics like x86_64, they
# checked nothing the x86_64 run does not, for ~5 minutes; the aarch64
# binary still runs its smoke test below.
step "unit tests of mips-unknown-linux-musl under qemu-mips (big-endian, no 64-bit atomics)"
SKIP_SETUP=1 cross/test.sh mips-unknown-linux-musl

# The router binary itself through the whole process suite: real Tailscale
# clients, the OpenID provider, DERP, kill -9 and a full flash, against the
# mt7621 build running under qemu-mipsel.
step "process tests against the mipsel binary under qemu-mipsel"
mipsel_bin=target/mipsel-unknown-linux-musl/release/tinyscale
qemu-mipsel-static "$mipsel_bin" version
TINYSCALE_TEST_BIN="$mipsel_bin" TINYSCALE_TEST_RUNNER=qemu-mipsel-static \
  cargo nextest run --locked -E 'kind(test)'

port=18180
for t in aarch64-unknown-linux-musl mipsel-unknown-linux-musl armv7-unknown-linux-musleabihf mips-unknown-linux-musl; do
  step "qemu smoke test $t"
  cross/smoke.sh "$t" "$port"
  port=$((port + 1))
done

for profile in board/*.env; do
  b=$(basename "$profile" .env)
  step "OpenWrt package for $b, installed into a scratch root"
  ipk=$(SKIP_BUILD=1 cross/package.sh "$b")
  cross/check-package.sh "$ipk"
done

step "binary sizes (the README's table is this output)"
cross/sizes.sh

end_stage
echo
echo "=== time per stage"
printf '%s\n' "${stages[@]}"
echo "=== all tests passed in $(( $(date +%s) - t0 ))s"
