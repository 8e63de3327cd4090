#!/usr/bin/env bash
# What each dependency costs in the binary, two ways (x86_64 musl, the
# shipped release profile):
#
# 1. By crate: an unstripped build's symbols (nm -S), each counted to the crate
#    its demangled path starts with. With fat LTO, code inlined into a caller
#    counts to the caller, and a generic std type instantiated for our types
#    (Vec<Node>, HashMap<..>) counts to alloc/std: read it as "where the bytes
#    sit", within a few percent.
# 2. By feature: the stripped size of each Cargo feature set, which is what
#    leaving a part out really saves.
#
#   cross/measure-deps.sh           (prints two markdown tables; several builds)
set -euo pipefail
cd "$(dirname "$0")/.."
t=x86_64-unknown-linux-musl
cross/setup.sh "$t" >/dev/null

dir=target/measure-deps
CARGO_TARGET_DIR="$dir/symbols" SKIP_SETUP=1 cross/build.sh "$t" --config 'profile.release.strip=false' \
  >"$dir.symbols.log" 2>&1 || { cat "$dir.symbols.log" >&2; exit 1; }
bin="$dir/symbols/$t/release/tinyscale"
strip -o "$dir/stripped" "$bin"
stripped=$(stat -c %s "$dir/stripped")
nm -S --size-sort -C "$bin" | python3 -c '
import re, sys
total = int(sys.argv[1])
size = {}
for line in sys.stdin:
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 4 or parts[2] not in "tTrRdDbB":
        continue
    n, name = int(parts[1], 16), parts[3]
    # <A as B>::f and <impl X for Y>: the type (A, Y) owns the code.
    m = re.match(r"<(?:impl [^ ]+ for )?&?(?:mut )?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)::", name) or re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    if m:
        crate = m.group(1)
        crate = {"std": "std/core/alloc", "core": "std/core/alloc", "alloc": "std/core/alloc"}.get(crate, crate)
    elif name.startswith("ring_core_") or name.startswith("ring_"):
        crate = "ring"
    elif "yaml" in name:
        crate = "unsafe_libyaml"
    else:
        crate = "C, asm and unnamed (musl libc, ring asm, compiler-rt)"
    size[crate] = size.get(crate, 0) + n
counted = sum(size.values())
print("| crate | bytes | share |\n|---|---|---|")
rest = 0
for crate, n in sorted(size.items(), key=lambda kv: -kv[1]):
    if n * 200 < counted:
        rest += n
        continue
    print(f"| {crate} | {n} | {100 * n / counted:.1f} % |")
print(f"| everything under 0.5 % | {rest} | {100 * rest / counted:.1f} % |")
print(f"\nSymbols counted: {counted} bytes; the stripped binary: {total} bytes (headers, tables, unwinding data and padding are the rest).")
' "$stripped"

echo
echo "| Cargo features | stripped binary (bytes) | vs router |"
echo "|---|---|---|"
router=
for feats in router derp oidc fetch none; do
  args=()
  case "$feats" in
    router) ;;
    none) args=(--no-default-features) ;;
    *) args=(--no-default-features --features "$feats") ;;
  esac
  CARGO_TARGET_DIR="$dir/$feats" SKIP_SETUP=1 cross/build.sh "$t" "${args[@]}" >"$dir.$feats.log" 2>&1 \
    || { cat "$dir.$feats.log" >&2; exit 1; }
  n=$(stat -c %s "$dir/$feats/$t/release/tinyscale")
  router=${router:-$n}
  printf '| %s | %s | %+d |\n' "${feats/none/(none: control server only)}" "$n" "$((n - router))"
done
