#!/usr/bin/env bash
# Runs the fuzz targets: each for FUZZ_SECONDS (default 20), or those named.
#
#   fuzz/run.sh                       # every target, 20 s each
#   FUZZ_SECONDS=3600 fuzz/run.sh derp_frames
#
# Needs nightly (rustup toolchain install nightly); installs cargo-fuzz into
# target/tools. Corpora grow in target/fuzz/corpus/<target>, seeded by
# fuzz/seeds.py; a crash leaves its input in target/fuzz/artifacts/<target>/
# and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
export PATH="$PWD/target/tools/bin:$PATH"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --root target/tools
# Without the list, run every target the fuzz crate declares.
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
python3 fuzz/seeds.py target/fuzz/seeds
# Every target in one build: cargo links them side by side, where one
# `cargo fuzz run` per target would build them one after another.
mkdir -p target/fuzz
if [ $# -gt 0 ]; then built=("$@"); else built=(""); fi
for t in "${built[@]}"; do
  cargo +nightly fuzz build --target-dir target/fuzz/build $t >target/fuzz/build.log 2>&1 ||
    { tail -n 60 target/fuzz/build.log >&2; echo "building the fuzz targets failed" >&2; exit 1; }
done
for t in "${targets[@]}"; do
  corpus=target/fuzz/corpus/$t
  artifacts=target/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" target/fuzz/seeds/"$t"
  log=target/fuzz/$t.log
  echo "--- fuzz $t for ${secs}s"
  status=0
  cargo +nightly fuzz run --target-dir target/fuzz/build "$t" "$corpus" "target/fuzz/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 ||
    status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE' "$log" || true
  if [ "$status" -ne 0 ] || compgen -G "$artifacts/*" >/dev/null; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (exit $status); inputs: $(ls "$artifacts")" >&2
    exit 1
  fi
done
