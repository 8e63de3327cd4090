#!/usr/bin/env bash
# Checks a built .ipk the way opkg and the router would use it, without a
# router: the archive layout, the control data, every installed path and mode,
# the maintainer scripts run against a scratch root (IPKG_INSTROOT, as when an
# image is built), the init script's syntax, the firewall include (nft -c), the packaged binary's architecture
# and the packaged config through `tinyscale configtest` (a host build).
#
#   cross/check-package.sh target/pkg/tinyscale_0.1.0_mipsel_24kc.ipk [host-tinyscale]
set -euo pipefail
cd "$(dirname "$0")/.."
ipk=${1:?usage: cross/check-package.sh <file.ipk> [host tinyscale binary]}
if [ -n "${2:-}" ]; then host_bin=$2; else
  cargo build --locked --quiet
  host_bin="${CARGO_TARGET_DIR:-target}/debug/tinyscale"
fi
fail() { echo "check-package: $*" >&2; exit 1; }

w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/outer" "$w/control" "$w/root"
tar -xzf "$ipk" -C "$w/outer"
[ "$(cd "$w/outer" && ls -A | LC_ALL=C sort | tr '\n' ' ')" = "control.tar.gz data.tar.gz debian-binary " ] ||
  fail "the outer archive holds $(ls -A "$w/outer")"
[ "$(cat "$w/outer/debian-binary")" = "2.0" ] || fail "debian-binary is not 2.0"
tar -xzf "$w/outer/control.tar.gz" -C "$w/control"
tar -xzf "$w/outer/data.tar.gz" -C "$w/root"
# Every member owned by root, as opkg would otherwise install them.
tar -tvzf "$w/outer/data.tar.gz" | awk '$2 != "0/0" { bad = 1; print } END { exit bad }' >&2 ||
  fail "data.tar.gz has members not owned by 0/0"

field() { sed -n "s/^$1: //p" "$w/control/control"; }
for f in Package Version Architecture Installed-Size Description; do
  [ -n "$(field "$f")" ] || fail "control has no $f"
done
[ "$(field Package)" = tinyscale ] || fail "Package is $(field Package)"
case "$ipk" in *"_$(field Version)_$(field Architecture).ipk") ;; *) fail "the file name does not say version and arch" ;; esac

# Paths and modes.
need() { # need <mode> <path>
  [ -e "$w/root/$2" ] || fail "/$2 is not in the package"
  [ "$(stat -c %a "$w/root/$2")" = "$1" ] || fail "/$2 has mode $(stat -c %a "$w/root/$2"), not $1"
}
need 755 usr/bin/tinyscale
need 755 etc/init.d/tinyscale
need 644 etc/config/tinyscale
need 644 etc/tinyscale/config.yaml
need 644 lib/upgrade/keep.d/tinyscale
need 644 usr/share/tinyscale/firewall.nft
while read -r conffile; do
  [ -f "$w/root$conffile" ] || fail "conffile $conffile is not in the package"
done <"$w/control/conffiles"
grep -qx /etc/tinyscale/ "$w/root/lib/upgrade/keep.d/tinyscale" || fail "sysupgrade would not keep /etc/tinyscale/"

# The binary is static and for the board's CPU.
desc=$(file -b "$w/root/usr/bin/tinyscale")
echo "$desc" | grep -Eq 'statically linked|static-pie linked' || fail "the binary is not static: $desc"
case "$(field Architecture)" in
  mips_*) want='MSB.*MIPS' ;;
  mipsel_*) want='LSB.*MIPS' ;;
  arm_*) want='ARM,' ;;
  aarch64_*) want='ARM aarch64' ;;
  x86_64) want='x86-64' ;;
  *) fail "unknown architecture $(field Architecture)" ;;
esac
echo "$desc" | grep -Eq "$want" || fail "the binary is not for $(field Architecture): $desc"

sh -n "$w/root/etc/init.d/tinyscale" || fail "the init script does not parse"
grep -q '^USE_PROCD=1' "$w/root/etc/init.d/tinyscale" || fail "the init script is not a procd one"
# Every connection the config allows needs a file descriptor to spare.
nofile=$(sed -n 's/.*limits nofile="\([0-9]*\) .*/\1/p' "$w/root/etc/init.d/tinyscale")
maxconn=$(sed -n 's/^ *max_connections: *\([0-9]*\).*/\1/p' "$w/root/etc/tinyscale/config.yaml")
[ -n "$nofile" ] && [ -n "$maxconn" ] || fail "no nofile limit in the init script or no max_connections in the config"
[ "$nofile" -gt "$maxconn" ] || fail "nofile $nofile does not cover max_connections $maxconn"

# The fw4 include is a rule snippet for the input_wan chain: nft checks it in
# such a chain (-c: nothing is loaded).
command -v nft >/dev/null || fail "nft is missing (apt-get install nftables)"
{ echo 'table inet tinyscale_check {'; echo 'chain input_wan {'; cat "$w/root/usr/share/tinyscale/firewall.nft"; echo '}'; echo '}'; } >"$w/fw.nft"
nft -c -f "$w/fw.nft" || fail "firewall.nft does not parse as an input_wan rule snippet"

# Maintainer scripts, as in an image build.
IPKG_INSTROOT="$w/root" sh "$w/control/postinst" || fail "postinst failed"
for l in S95tinyscale K10tinyscale; do
  [ "$(readlink "$w/root/etc/rc.d/$l")" = ../init.d/tinyscale ] || fail "postinst made no /etc/rc.d/$l"
done
IPKG_INSTROOT="$w/root" sh "$w/control/prerm" || fail "prerm failed"
[ -z "$(ls -A "$w/root/etc/rc.d")" ] || fail "prerm left $(ls -A "$w/root/etc/rc.d")"

# The shipped config passes configtest. Its paths point at /etc/tinyscale on
# the router; configtest reads the file and checks it, it does not touch them.
"$host_bin" configtest -c "$w/root/etc/tinyscale/config.yaml" || fail "the packaged config fails configtest"
echo "check-package: $ipk ok ($(field Architecture), $(stat -c %s "$ipk") bytes)"
