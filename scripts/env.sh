# Shared settings for the scripts; sourced, not run.
# shellcheck shell=bash
EVNOTIFY_CACHE=${EVNOTIFY_CACHE:-$HOME/.cache/evnotify}
# KVER: the kernel series to build and test against (every make target takes it). Each is
# Debian's linux-source-$KVER from the suite that ships it; README: Kernel compatibility.
# The newest first: it is the default, and make check tests it first.
KVERS_TESTED=(7.3 7.2)
KVER=${KVER:-${KVERS_TESTED[0]}}
case $KVER in
7.2) ksuite=sid ;;
7.3) ksuite=trixie-backports ;;
# A usage error; vm.sh sets kver_exit to its own usage code.
*) echo "KVER=$KVER: not a tested kernel series; use one of: ${KVERS_TESTED[*]}" >&2
	exit "${kver_exit:-2}" ;;
esac
KVER_SERIES=$KVER
EVNOTIFY_KSUITE=${EVNOTIFY_KSUITE:-$ksuite}
export KVER
BINDGEN=${BINDGEN:-$EVNOTIFY_CACHE/tools/bin/bindgen}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
# The kernel wants the Debian Rust toolchain, which ships rust-src; the rustup one
# first in PATH has none.  HOSTRUSTC builds the proc macros and must match RUSTC.
KMAKE_VARS=(RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver BINDGEN="$BINDGEN")
# Config fragments merged onto tinyconfig, the last to name an option deciding it.
# EVNOTIFY_DEBUG=1 selects the debug kernel (KASAN, kmemleak, debug objects), which must be
# built with clang; EVNOTIFY_BENCH=1 the bench kernel (no lockdep or other checks);
# EVNOTIFY_COVERAGE=1 the coverage kernel (the test kernel with KCOV); EVNOTIFY_TRACE=1 with
# EVNOTIFY_BENCH=1 the trace kernel (the bench kernel with ftrace, for profiles).
_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# A checkout whose path has a space (or any blank) cannot build: Kbuild's M= and the VM's
# initramfs list split paths at blanks. Refuse before anything starts, saying so (a usage
# error; vm.sh sets kver_exit to its own code).
if [[ "$(dirname "$_here")" == *[[:space:]]* ]]; then
	echo "${0##*/}: this checkout's path has a blank in it: '$(dirname "$_here")'." \
		"Kbuild (make M=DIR) and the VM's initramfs list split paths at blanks, so nothing" \
		"can be built or booted from here: move the checkout (or clone it) to a path" \
		"without spaces, and run it from there." >&2
	exit "${kver_exit:-2}"
fi

# wait_lock FD WHAT: takes the lock on descriptor FD (flock); if another process holds it,
# says so first (WHAT: what the holder does) and waits for it.
wait_lock() {
	flock -n "$1" && return 0
	echo "${0##*/}: waiting: $2" >&2
	flock "$1"
}

# lock_checkout: one run at a time in this checkout. Runs share build/, the module's build
# products and user/target, and would corrupt each other's; a second one waits, naming the
# first. The scripts a run calls (check.sh's vm.sh, build.sh) hold it already. The lock file
# is .evnotify.lock at the top (make clean leaves it).
lock_checkout() {
	[ -z "${EVNOTIFY_CHECKOUT_LOCKED:-}" ] || return 0
	local lock
	lock=$(dirname "$_here")/.evnotify.lock
	exec 6>>"$lock"
	wait_lock 6 "another run is using this checkout ($(cat "$lock" 2>/dev/null)); it shares build/ and the builds with this one, which starts when that one ends"
	echo "pid $$, ${0##*/}, since $(date -u '+%H:%M:%S UTC')" >"$lock"
	export EVNOTIFY_CHECKOUT_LOCKED=$$
}
KCONFIGS=("$_here/kernel.config")
# The LLVM major of the bench kernel's clang: it must be rustc-web's own (setup.sh checks), for
# CONFIG_RUST_INLINE_HELPERS (kernel-bench.config) to stick.
BENCH_LLVM=22
# The clang that builds the selected kernel on top of the base toolchain (setup.sh: its
# packages, and its version in the kernel's cache key), if any but the debug kernel's clang-19.
KERNEL_CLANG=
if [ "${EVNOTIFY_DEBUG:-0}" = 1 ]; then
	KCONFIGS+=("$_here/kernel-debug.config")
	KMAKE_VARS+=(LLVM=-19)
elif [ "${EVNOTIFY_BENCH:-0}" = 1 ]; then
	KCONFIGS+=("$_here/kernel-bench.config")
	# clang with rustc's own LLVM, for CONFIG_RUST_INLINE_HELPERS (kernel-bench.config).
	KERNEL_CLANG=clang-$BENCH_LLVM
	KMAKE_VARS+=(LLVM=-$BENCH_LLVM)
	export LIBCLANG_PATH=/usr/lib/llvm-$BENCH_LLVM/lib
	[ "${EVNOTIFY_TRACE:-0}" != 1 ] || KCONFIGS+=("$_here/kernel-trace.config")
elif [ "${EVNOTIFY_COVERAGE:-0}" = 1 ]; then
	KCONFIGS+=("$_here/kernel-coverage.config")
	# On make's command line, where Kbuild looks for it (not in the environment: a shell where
	# someone exported it would give a DKMS build the coverage build's alarm).
	KMAKE_VARS+=(EVNOTIFY_COVERAGE=1)
fi
mkdir -p "$EVNOTIFY_CACHE"
# User-space binaries for the initramfs are static, built for this target.
RUST_TARGET=x86_64-unknown-linux-gnu
