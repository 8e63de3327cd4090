#!/usr/bin/env bash
# Builds the OpenWrt package for one board profile (board/<name>.env):
#
#   cross/package.sh mt7621          # builds the binary, then the .ipk
#   SKIP_BUILD=1 cross/package.sh mt7621   # packages the binary already built
#
# Writes target/pkg/tinyscale_<version>_<openwrt-arch>.ipk and prints its path.
# An .ipk is what opkg installs (OpenWrt up to 24.10): a gzipped tar of
# debian-binary, control.tar.gz and data.tar.gz. The archives are made
# reproducibly (fixed owner, order and mtime), so the same tree gives the same
# bytes. OpenWrt 25's apk format is not built yet.
#
# The package installs rootfs/ as is, with the board's tuning written into
# etc/tinyscale/config.yaml's @NAME@ placeholders.
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: cross/package.sh <board>   (one of: $(cd board && ls ./*.env | sed 's|./||; s|\.env||' | tr '\n' ' '))}
profile="board/$board.env"
[ -f "$profile" ] || { echo "cross/package.sh: no board profile $profile" >&2; exit 2; }
# shellcheck disable=SC1090
. "$profile"
: "${RUST_TARGET:?$profile sets no RUST_TARGET}" "${OPENWRT_ARCH:?$profile sets no OPENWRT_ARCH}"

[ "${SKIP_BUILD:-}" = 1 ] || cross/build.sh "$RUST_TARGET" >&2
bin="${CARGO_TARGET_DIR:-target}/$RUST_TARGET/release/tinyscale"
[ -x "$bin" ] || { echo "cross/package.sh: $bin is missing (cross/build.sh $RUST_TARGET)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "cross/package.sh: no version in Cargo.toml" >&2; exit 1; }
# The commit's time when there is one, so rebuilding a commit gives the same bytes.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data="$work/data" ctl="$work/control"
mkdir -p "$data" "$ctl" "$work/out"

# The data tree: the rootfs overlay and the binary.
cp -a rootfs/. "$data/"
rm -f "$data/README.md"
install -D -m 0755 "$bin" "$data/usr/bin/tinyscale"
chmod 0755 "$data/etc/init.d/tinyscale"

# Fill the board's tuning into the config; a placeholder left over is a mistake
# in the profile, caught here rather than on the router.
conf="$data/etc/tinyscale/config.yaml"
init="$data/etc/init.d/tinyscale"
for name in SLED_CACHE_BYTES MAX_CONNECTIONS MAX_NODES DERP_MAX_CLIENTS; do
  val=${!name:?$profile sets no $name}
  case "$val" in *[!0-9]*) echo "cross/package.sh: $name=$val in $profile is not a number" >&2; exit 1 ;; esac
  sed -i "s/@$name@/$val/g" "$conf"
done
# Every connection is a file, and so are the store, the sockets and the logs.
sed -i "s/@NOFILE@/$((MAX_CONNECTIONS + 256))/g" "$init"
if grep -n '@[A-Z_]*@' "$conf" "$init" >&2; then
  echo "cross/package.sh: placeholders left in config.yaml or the init script (above)" >&2
  exit 1
fi

installed_size=$(du -sb "$data" | cut -f1)
cat >"$ctl/control" <<EOF
Package: tinyscale
Version: $version
Depends: libc
SourceName: tinyscale
License: BSD-3-Clause
Section: net
SourceDateEpoch: $epoch
Architecture: $OPENWRT_ARCH
Installed-Size: $installed_size
Description: Tailscale control server for the home router (a Headscale drop-in)
 Devices join with: tailscale up --login-server <server_url>. One static
 binary with an embedded DERP relay and STUN; logs in through OpenID Connect.
EOF
# opkg keeps these when they were edited, instead of overwriting them.
cat >"$ctl/conffiles" <<'EOF'
/etc/config/tinyscale
/etc/tinyscale/config.yaml
EOF

# When opkg installs into an image being built, IPKG_INSTROOT is the image's
# root and nothing may run: the boot links are made by hand. On a live router
# the init script makes them, and the service starts.
cat >"$ctl/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
root="${IPKG_INSTROOT}"
if [ -n "$root" ]; then
	mkdir -p "$root/etc/rc.d"
	ln -sf ../init.d/tinyscale "$root/etc/rc.d/S95tinyscale"
	ln -sf ../init.d/tinyscale "$root/etc/rc.d/K10tinyscale"
	exit 0
fi
/etc/init.d/tinyscale enable
/etc/init.d/tinyscale start
exit 0
EOF
cat >"$ctl/prerm" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
root="${IPKG_INSTROOT}"
if [ -n "$root" ]; then
	rm -f "$root/etc/rc.d/S95tinyscale" "$root/etc/rc.d/K10tinyscale"
	exit 0
fi
/etc/init.d/tinyscale stop
/etc/init.d/tinyscale disable
exit 0
EOF
chmod 0755 "$ctl/postinst" "$ctl/prerm"

pack() { # pack <dir> <archive>
  (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    tar --create --no-recursion --owner=0 --group=0 --numeric-owner \
      --mtime="@$epoch" --format=gnu --files-from=- --transform 's|^|./|' |
    gzip -9n) >"$2"
}
printf '2.0\n' >"$work/out/debian-binary"
pack "$ctl" "$work/out/control.tar.gz"
pack "$data" "$work/out/data.tar.gz"
touch -d "@$epoch" "$work/out/"*

mkdir -p target/pkg
ipk="target/pkg/tinyscale_${version}_${OPENWRT_ARCH}.ipk"
(cd "$work/out" &&
  tar --create --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --format=gnu \
    ./debian-binary ./control.tar.gz ./data.tar.gz | gzip -9n) >"$ipk"
echo "$ipk"
