#!/usr/bin/env bash
# What a change costs on the router: the stripped mipsel binary (the mt7621
# build) at two revisions, for the default `router` build and the
# `derp`-only build, as a markdown table.
#
#   cross/size-diff.sh <base-rev> [<rev>]     (rev defaults to the work tree)
#
# Each revision is checked out under target/size-diff/; the builds share one
# target folder, so the second revision rebuilds little.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: cross/size-diff.sh <base-rev> [<rev>]}
rev=${2:-}
t=mipsel-unknown-linux-musl
cross/setup.sh "$t" >/dev/null
out=$PWD/target/size-diff
mkdir -p "$out"

# tree <rev>: a checkout of rev (the work tree itself when rev is empty).
tree() {
  if [ -z "$1" ]; then echo "$PWD"; return; fi
  local sha dir
  sha=$(git rev-parse --short "$1^{commit}")
  dir=$out/src-$sha
  [ -d "$dir" ] || git worktree add --detach "$dir" "$sha" >/dev/null 2>&1
  echo "$dir"
}

size() { # size <tree> <features or empty>
  local log=$out/build.log
  (cd "$1" && CARGO_TARGET_DIR=$out/build SKIP_SETUP=1 FEATURES="$2" cross/build.sh "$t") >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; exit 1; }
  stat -c %s "$out/build/$t/release/tinyscale"
}

base_tree=$(tree "$base")
head_tree=$(tree "$rev")
echo "| mipsel build | $(git rev-parse --short "$base") (bytes) | ${rev:-work tree} (bytes) | change |"
echo "|---|---|---|---|"
for feats in "" derp; do
  a=$(size "$base_tree" "$feats")
  b=$(size "$head_tree" "$feats")
  printf '| %s | %s | %s | %+d |\n' "${feats:-router (default)}" "$a" "$b" "$((b - a))"
done
