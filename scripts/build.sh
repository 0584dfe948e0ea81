#!/usr/bin/env bash
# Build what goes into the VM: the module against KDIR (warning-free, with
# CLIPPY=1), the static user tools and the static C example.
#   scripts/build.sh KDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"
lock_checkout
kdir=$1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
make -s -C "$kdir" M="$repo" "${KMAKE_VARS[@]}" CLIPPY=1 >"$log" 2>&1 || { cat "$log"; exit 1; }
if grep -E '^(warning|error)' "$log"; then
	cat "$log"
	echo "build.sh: the module must build warning-free with CLIPPY=1" >&2
	exit 1
fi

(cd "$repo/user" && RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build -q --release --locked --target "$RUST_TARGET" \
	-p evnotify-cli -p evnotify-vmtests -p evnotify-bench -p evnotify-fuzz -p evnotify-kcov)

mkdir -p "$repo/build"
gcc -static -O2 -Wall -Wextra -Werror -I"$repo/include/uapi" \
	-o "$repo/build/evnotify-example" "$repo/user/examples/evnotify-example.c"
# The probes to profile with (bench/probes, docs/testing.md): C users of the header too.
for p in rtt timer; do
	gcc -static -O2 -Wall -Wextra -Werror -I"$repo/include/uapi" \
		-o "$repo/build/evnotify-probe-$p" "$repo/bench/probes/evnotify-probe-$p.c"
done
