#!/usr/bin/env bash
# Build the module against a Rust-enabled kernel build directory, with the Rust compiler that
# kernel was built with: rustc must match the kernel's `CONFIG_RUSTC_VERSION_TEXT` exactly, or
# the kernel crate's metadata cannot be loaded. Used by `make` and by DKMS (dkms.conf).
#
#   scripts/kbuild.sh KDIR [MAKE ARGS...]       (RUSTC=... overrides the search)
set -euo pipefail
kdir=${1:?usage: scripts/kbuild.sh KDIR [MAKE ARGS...]}
shift
src=$(cd "$(dirname "$0")/.." && pwd)
if [[ "$src" == *[[:space:]]* ]]; then
	echo "kbuild.sh: the module's path has a blank in it: '$src'. Kbuild's M=DIR splits it" \
		"there and would build elsewhere: move the sources to a path without spaces." >&2
	exit 1
fi
conf=$kdir/include/config/auto.conf
if ! grep -q '^CONFIG_RUST=y' "$conf" 2>/dev/null; then
	echo "kbuild.sh: $kdir is not a configured kernel build with CONFIG_RUST=y ($conf)" >&2
	exit 1
fi
# Quoted in older trees' auto.conf, bare in newer ones.
# Distribution header packages have the config but not the kernel crate: say so plainly.
if [ ! -e "$kdir/rust/libkernel.rmeta" ]; then
	echo "kbuild.sh: $kdir has CONFIG_RUST=y but no Rust metadata (rust/libkernel.rmeta):" \
		"a header package cannot build Rust modules; use the kernel's full build tree" >&2
	exit 1
fi
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT=//p' "$conf" | sed 's/^"\(.*\)"$/\1/')
[ -n "$want" ] || { echo "kbuild.sh: $conf names no CONFIG_RUSTC_VERSION_TEXT" >&2; exit 1; }
rustc=
cands=()
# RUSTC may be a path or a bare name; a path may hold spaces.
[ -z "${RUSTC:-}" ] || cands+=("$(command -v "$RUSTC" || echo "$RUSTC")")
cands+=(/usr/bin/rustc)
mapfile -t -O "${#cands[@]}" cands < <(type -a -P rustc)
for c in "${cands[@]}"; do
	if [ -x "$c" ] && [ "$("$c" --version 2>/dev/null)" = "$want" ]; then rustc=$c; break; fi
done
if [ -z "$rustc" ]; then
	echo "kbuild.sh: the kernel in $kdir was built with '$want'; no such rustc found" \
		"(tried ${RUSTC:-} /usr/bin/rustc and PATH). Install it, or set RUSTC=/path/to/rustc." >&2
	exit 1
fi
bin=$(dirname "$rustc")
vars=(RUSTC="$rustc" HOSTRUSTC="$rustc")
[ -x "$bin/rustdoc" ] && vars+=(RUSTDOC="$bin/rustdoc")
[ -x "$bin/clippy-driver" ] && vars+=(CLIPPY_DRIVER="$bin/clippy-driver")
# A kernel built by clang wants its modules built by the same clang (Debian: clang-NN).
if grep -q '^CONFIG_CC_IS_CLANG=y' "$conf"; then
	major=$(($(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$conf" | grep -E '^[0-9]+$' || echo 0) / 10000))
	if command -v "clang-$major" >/dev/null; then vars+=(LLVM=-"$major"); else vars+=(LLVM=1); fi
fi
exec make -C "$kdir" M="$src" "${vars[@]}" "$@"
