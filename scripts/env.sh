# Shared settings for the scripts; sourced, not run.
# shellcheck shell=bash
EVNOTIFY_CACHE=${EVNOTIFY_CACHE:-$HOME/.cache/evnotify}
KVER_SERIES=${KVER_SERIES:-7.3}
BINDGEN=${BINDGEN:-$EVNOTIFY_CACHE/tools/bin/bindgen}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
# The kernel wants the Debian Rust toolchain, which ships rust-src; the rustup one
# first in PATH has none.  HOSTRUSTC builds the proc macros and must match RUSTC.
KMAKE_VARS=(RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver BINDGEN="$BINDGEN")
mkdir -p "$EVNOTIFY_CACHE"
# User-space binaries for the initramfs are static, built for this target.
RUST_TARGET=x86_64-unknown-linux-gnu
