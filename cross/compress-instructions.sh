#!/usr/bin/env bash
# What compressing a map costs a MIPS router, in instructions: a small
# mipsel program (built as cross/build.sh builds tinyscale: opt-level z, fat
# LTO, build-std) compresses each file once, with ruzstd's Fastest level as
# src/mapper/frame.rs does or, for comparison, with the C zstd library at
# levels 1 and 3; qemu-mipsel runs it one instruction per translation block
# and logs each block executed (a branch and its delay slot count as one).
# `ours` is what frame.rs ships: src/mapper/matcher.rs (compiled into the
# program as it is) with ruzstd's entropy coding.
# The count of a run that only reads the file is subtracted. Deterministic:
# the same file gives the same count on every run. Also prints what the
# encoder adds to that program's stripped size.
#
#   cross/compress-instructions.sh <file.json>...      (ours, ruzstd, C -1, C -3)
#   MODES="ours rz" cross/compress-instructions.sh ...  (some of them)
#
# Maps to measure: `BENCH_DUMP=target/map cargo bench --bench compression`
# writes target/map.<message>.json. A 1.4 MB map logs about 300 million
# lines through a pipe: a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 <file>..." >&2; exit 2; }
t=mipsel-unknown-linux-musl
cross/setup.sh "$t" >/dev/null
# The ruzstd this tinyscale locks.
rz=$(awk '/^name = "ruzstd"$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)
dir=$PWD/target/compress-instructions
mkdir -p "$dir/src" "$dir/.cargo"
cat >"$dir/Cargo.toml" <<EOF
[package]
name = "compress-once"
version = "0.0.0"
edition = "2021"
publish = false

[features]
rz = ["dep:ruzstd"]
c = ["dep:zstd"]

[dependencies]
ruzstd = { version = "=$rz", default-features = false, optional = true }
zstd = { version = "0.13", default-features = false, optional = true }

[profile.release]
opt-level = "z"
lto = "fat"
codegen-units = 1
panic = "abort"
strip = true

[workspace]
EOF
# The router targets' flags, as .cargo/config.toml gives them to tinyscale.
grep -A1 "^\[target.$t\]" .cargo/config.toml >"$dir/.cargo/config.toml"
cat >"$dir/src/main.rs" <<EOF
//! compress-once <none|ours|rz|c1|c3> <file>: compresses the file once, prints the size.
#[cfg(feature = "rz")]
#[path = "$PWD/src/mapper/matcher.rs"]
mod matcher;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&a[2]).unwrap();
    let n = match a[1].as_str() {
        #[cfg(feature = "rz")]
        "rz" => ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest).len(),
        #[cfg(feature = "rz")]
        "ours" => {
            let mut out = Vec::new();
            let level = ruzstd::encoding::CompressionLevel::Fastest;
            let mut e = ruzstd::encoding::FrameCompressor::new_with_matcher(matcher::FastMatcher::new(&data), level);
            e.set_source(&data[..]);
            e.set_drain(&mut out);
            e.compress();
            drop(e);
            out.len()
        }
        #[cfg(feature = "c")]
        "c1" => zstd::bulk::compress(&data, 1).unwrap().len(),
        #[cfg(feature = "c")]
        "c3" => zstd::bulk::compress(&data, 3).unwrap().len(),
        _ => std::hint::black_box(&data).len(),
    };
    println!("{n}");
}
EOF
build() { # build <features>: the binary's path
  local out=$dir/target-${1:-none}
  (cd "$dir" && env -u RUSTFLAGS CARGO_TARGET_DIR=$out cargo +nightly zigbuild --release --target $t \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size ${1:+--features $1}) >"$dir/build.log" 2>&1 \
    || { tail -n 30 "$dir/build.log" >&2; exit 1; }
  echo "$out/$t/release/compress-once"
}
none_bin=$(build "")
rz_bin=$(build rz)
# The C library takes long to build: only when a mode needs it.
c_bin=$rz_bin
case " ${MODES:-c1} " in *" c"[13]" "*) c_bin=$(build c) ;; esac
count() { # count <binary> <mode> <file>
  qemu-mipsel-static -singlestep -d nochain,exec -D /dev/stdout "$1" "$2" "$3" | grep -c '^Trace'
}
modes=${MODES:-ours rz c1 c3}
head="| file | bytes |" rule="|---|---|"
for m in $modes; do
  case $m in ours) n="ours (matcher.rs + ruzstd)" ;; rz) n="ruzstd Fastest" ;; *) n="C zstd -${m#c}" ;; esac
  head="$head $n (bytes, instructions) |" rule="$rule---|"
done
echo "$head"
echo "$rule"
for f in "$@"; do
  row="| $(basename "$f") | $(stat -c %s "$f")"
  for m in $modes; do
    b=$c_bin; case $m in ours | rz) b=$rz_bin ;; esac
    base=$(count "$b" none "$f")
    n=$(count "$b" "$m" "$f")
    size=$(qemu-mipsel-static "$b" "$m" "$f")
    row="$row | $size, $((n - base))"
  done
  echo "$row |"
done
echo
s() { stat -c %s "$1"; }
line="stripped program: $(s "$none_bin") bytes; with ruzstd's encoder and our matcher $(s "$rz_bin") (+$(($(s "$rz_bin") - $(s "$none_bin"))))"
[ "$c_bin" = "$rz_bin" ] || line="$line; with the C library instead $(s "$c_bin") (+$(($(s "$c_bin") - $(s "$none_bin"))))"
echo "$line"
