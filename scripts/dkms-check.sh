#!/usr/bin/env bash
# DKMS on the host, as a user would run it: add, build and install the module with the
# project's dkms.conf against a kernel build directory (default: the cached test kernel).
# Everything goes to private trees (--sourcetree, --dkmstree, --installtree), so the
# system's DKMS state and /lib/modules are left alone.
#   scripts/dkms-check.sh [KDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kdir=${1:-$("$here/setup.sh")}
# dkms, depmod and modinfo live in sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
if ! command -v dkms >/dev/null; then
	[ "$(id -u)" = 0 ] || { echo "dkms-check.sh: dkms is not installed (apt-get install dkms)" >&2; exit 1; }
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dkms kmod; } >/dev/null
fi
name=$(sed -n 's/^PACKAGE_NAME="\(.*\)"$/\1/p' "$repo/dkms.conf")
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$repo/dkms.conf")
kver=$(cat "$kdir/include/config/kernel.release")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trees=(--sourcetree "$tmp/src" --dkmstree "$tmp/dkms" --installtree "$tmp/root/lib/modules")
# The files DKMS needs, as README tells users to copy them to /usr/src/NAME-VERSION.
# The install tree stands for /lib/modules, where the kernel is "installed". DKMS's own depmod
# would read the real /lib/modules, so it is skipped and run below on the private root.
mkdir -p "$tmp/src/$name-$ver" "$tmp/dkms" "$tmp/root/lib/modules/$kver/kernel"
(cd "$repo" && cp -r Kbuild Makefile dkms.conf ./*.rs include scripts "$tmp/src/$name-$ver/")
set -x
dkms add -m "$name" -v "$ver" "${trees[@]}"
dkms build -m "$name" -v "$ver" -k "$kver" --kernelsourcedir "$kdir" "${trees[@]}" ||
	{ cat "$tmp/dkms/$name/$ver/build/make.log"; exit 1; }
dkms install -m "$name" -v "$ver" -k "$kver" --kernelsourcedir "$kdir" --no-depmod "${trees[@]}"
cp "$kdir"/modules.builtin "$kdir"/modules.builtin.modinfo "$tmp/root/lib/modules/$kver/" 2>/dev/null || :
depmod -b "$tmp/root" "$kver"
status=$(dkms status -m "$name" "${trees[@]}")
set +x
echo "$status"
[[ $status == "$name/$ver, $kver, "*": installed"* ]] || { echo "dkms-check.sh: not installed" >&2; exit 1; }
grep -q "^updates/dkms/$name.ko[.a-z]*:" "$tmp/root/lib/modules/$kver/modules.dep" ||
	{ echo "dkms-check.sh: depmod does not list the installed module" >&2; exit 1; }
ko=$(find "$tmp/root/lib/modules/$kver" -name "$name.ko*" -print -quit)
magic=$(modinfo -F vermagic "$ko")
echo "built $ko: vermagic $magic"
[ "${magic%% *}" = "$kver" ]
