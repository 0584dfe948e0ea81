#!/usr/bin/env bash
# One-shot, idempotent setup: host packages, bindgen, the Debian linux-source
# package and a cached Rust-enabled test kernel.  Prints nothing on stdout but
# the path of the kernel build directory (KDIR), so callers can capture it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

log() { echo "setup: $*" >&2; }

# --- Host packages -----------------------------------------------------------
pkgs=(rustc-web rust-web-src rust-web-clippy rustfmt-web clang-19 libclang-19-dev
      lld-19 llvm-19 flex bison bc libelf-dev libssl-dev cpio busybox-static
      qemu-system-x86 make gcc libc6-dev xz-utils fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	[ "$(id -u)" = 0 ] || { log "need root for apt-get"; exit 1; }
	aptlog=$EVNOTIFY_CACHE/apt-install.log
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$aptlog" 2>&1 ||
		{ tail -n 30 "$aptlog" >&2; exit 1; }
fi

# --- bindgen (bookworm's is too old) -----------------------------------------
if ! "$BINDGEN" --version >/dev/null 2>&1; then
	log "cargo install bindgen-cli"
	cargo install --locked --root "$EVNOTIFY_CACHE/tools" bindgen-cli >&2
fi

# --- Kernel source: Debian linux-source-$KVER_SERIES from trixie-backports ---
aptdir=$EVNOTIFY_CACHE/apt
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$EVNOTIFY_CACHE/src"
src_list=$aptdir/backports.sources
if [ ! -f "$src_list" ]; then
	sysrc=/etc/apt/sources.list.d/debian.sources
	uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sysrc")
	key=$(awk '/^Signed-By:/ {print $2; exit}' "$sysrc")
	printf 'Types: deb\nURIs: %s\nSuites: trixie-backports\nComponents: main\nSigned-By: %s\n' \
		"${uri:-http://deb.debian.org/debian}" "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" >"$src_list"
fi
aptopts=(-o Dir::Etc::sourcelist="$src_list" -o Dir::Etc::sourceparts=- \
	-o Dir::State::Lists="$aptdir/lists" -o Dir::Cache="$aptdir/cache")
deb=$(ls "$EVNOTIFY_CACHE"/src/linux-source-"$KVER_SERIES"_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$deb" ]; then
	log "downloading linux-source-$KVER_SERIES"
	apt-get update -qq "${aptopts[@]}" >&2
	(cd "$EVNOTIFY_CACHE/src" && apt-get download -qq "${aptopts[@]}" "linux-source-$KVER_SERIES" >&2)
	deb=$(ls "$EVNOTIFY_CACHE"/src/linux-source-"$KVER_SERIES"_*.deb | tail -n1)
fi
debver=$(dpkg-deb -f "$deb" Version)
srcdir=$EVNOTIFY_CACHE/src/linux-$debver
if [ ! -f "$srcdir/.extracted" ]; then
	log "extracting $deb"
	rm -rf "$srcdir" && mkdir -p "$srcdir"
	dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$KVER_SERIES.tar.xz" |
		tar -xJ -C "$srcdir" --strip-components=1
	touch "$srcdir/.extracted"
fi

# --- Kernel build, keyed by source version and config fragment ---------------
if [ -n "${EVNOTIFY_KCONFIG:-}" ]; then KCONFIGS=("$EVNOTIFY_KCONFIG"); fi
key=$debver-$(cat "${KCONFIGS[@]}" | sha256sum | cut -c1-12)
objdir=$EVNOTIFY_CACHE/build/$key
mkdir -p "$EVNOTIFY_CACHE/build"
# One build per directory at a time: a second caller waits, then finds it built.
exec 9>"$objdir.lock"
flock 9
if [ ! -f "$objdir/.built" ]; then
	log "building kernel $key (several minutes)"
	mkdir -p "$objdir"
	kmake() { make -C "$srcdir" O="$objdir" "${KMAKE_VARS[@]}" "$@" >&2; }
	kmake tinyconfig
	(cd "$objdir" && "$srcdir/scripts/kconfig/merge_config.sh" -m .config "${KCONFIGS[@]}" >&2)
	kmake olddefconfig
	# Every requested option must have stuck, or the test kernel is not what it claims.
	while IFS= read -r line; do
		case "$line" in CONFIG_*=*) grep -qx "$line" "$objdir/.config" || { log "config did not stick: $line"; exit 1; } ;; esac
	done < <(cat "${KCONFIGS[@]}")
	kmake -j"$(($(nproc) + 1))" bzImage modules
	touch "$objdir/.built"
fi
flock -u 9
echo "$objdir"
