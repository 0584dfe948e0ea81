#!/usr/bin/env bash
# One-shot, idempotent setup: host packages, bindgen, the Debian linux-source
# package and a cached Rust-enabled test kernel.  Prints nothing on stdout but
# the path of the kernel build directory (KDIR), so callers can capture it.
#
#   EVNOTIFY_APT_ROOT (/etc/apt)  where the host's apt sources are read from
#   KVER (7.3)                          the kernel series: 7.2 (sid) or 7.3 (trixie-backports)
#   EVNOTIFY_KSUITE                     the Debian suite of linux-source-$KVER (by KVER)
#   EVNOTIFY_ANY_OS=1                   go on on a host that is not Debian 12 (unsupported)
#
# Sourcing it (as check.sh's self-tests do) defines the functions and runs nothing.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/env.sh"

log() { echo "setup: $*" >&2; }

# apt_source SUITE: a deb822 stanza for SUITE on the host's own Debian mirror and keyring, read
# from $EVNOTIFY_APT_ROOT in either format: deb822 (sources.list.d/*.sources) or one-line
# (sources.list, sources.list.d/*.list).  The mirror is the first enabled "deb" entry with
# component main whose URI ends in /debian (security archives do not), looking in
# debian.sources and sources.list before other files; without one, deb.debian.org.
apt_source() {
	local root=${EVNOTIFY_APT_ROOT:-/etc/apt} files=() f mirror
	# The system's own files first: third-party repositories also live under /debian URIs.
	for f in "$root/sources.list.d/debian.sources" "$root/sources.list" \
		"$root"/sources.list.d/*.list "$root"/sources.list.d/*.sources; do
		[ -f "$f" ] && [[ " ${files[*]} " != *" $f "* ]] && files+=("$f")
	done
	# One "URI<TAB>KEYRING<TAB>COMPONENTS" line per URI of each enabled deb entry.
	mirror=$( ((${#files[@]})) && awk '
		function flush() {
			if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false|off|disable)$/)
				for (i = 1; i <= split(uris, u, " "); i++) print u[i] "\t" key "\t" comps
			types = uris = key = enabled = comps = ""
		}
		FNR == 1 { flush() }
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[ \t]*$/) { flush(); next }
			if ($0 ~ /^#/ || $0 ~ /^[ \t]/) next
			field = tolower($1); $1 = ""; sub(/^[ \t]+/, "")
			if (field == "types:") types = $0
			else if (field == "uris:") uris = $0
			else if (field == "signed-by:") key = $0
			else if (field == "enabled:") enabled = tolower($0)
			else if (field == "components:") comps = $0
			next
		}
		$1 == "deb" {
			key = ""; n = 2
			if ($2 ~ /^\[/) {
				for (; n <= NF; n++) {
					o = $n; gsub(/[][]/, "", o)
					if (o ~ /^signed-by=/) key = substr(o, 11)
					if ($n ~ /\]$/) { n++; break }
				}
			}
			comps = ""
			for (i = n + 2; i <= NF; i++) comps = comps " " $i
			print $n "\t" key "\t" comps
		}
		END { flush() }' "${files[@]}" |
		awk -F '\t' '$1 ~ /\/debian\/?$/ && $3 ~ /(^| )main( |$)/ && !m { m = $1 "\t" $2 } END { print m }' || true)
	local uri=${mirror%%$'\t'*} key=${mirror#*$'\t'}
	# A Signed-By may hold the key itself (deb822 allows it): then use the archive keyring.
	[[ "$key" == /* ]] || key=/usr/share/keyrings/debian-archive-keyring.gpg
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"${uri:-http://deb.debian.org/debian}" "$1" "$key"
}

# toolchain: the versions of every compiler a kernel build uses, one per line.  They are part
# of the kernel cache key: a kernel built by another compiler must not be reused.
toolchain() {
	/usr/bin/rustc --version
	"$BINDGEN" --version
	clang-19 --version | sed -n 1p
	# The bench kernel's clang (env.sh), only in its key: the other kernels' keys stay.
	[ -z "$KERNEL_CLANG" ] || "$KERNEL_CLANG" --version | sed -n 1p
	gcc --version | sed -n 1p
}

# The host's packages: the kernel build's toolchain, and every command a script runs that
# no Essential package has (scripts/tools.txt maps each command to its package, and
# check.sh checks that the table covers the scripts and that each package is here or
# Essential): python3 (bench.sh, mutants.sh, rust-analyzer.sh, the lint), mawk (awk is not
# Essential), qemu, busybox, binutils (readelf and addr2line, which coverage.py runs; objdump
# and nm, which profile.py runs)...
SETUP_PACKAGES=(rustc-web rust-web-src rust-web-clippy rustfmt-web clang-19 libclang-19-dev
	lld-19 llvm-19 flex bison bc libelf-dev libssl-dev cpio busybox-static
	qemu-system-x86 make gcc libc6-dev xz-utils fonts-dejavu-core python3 mawk binutils)
# Without a cargo of its own (no rustup toolchain): Debian's, which matches rustc-web.
SETUP_CARGO_PACKAGE=cargo-web
# Only for the bench kernel (env.sh: KERNEL_CLANG), which clang-$BENCH_LLVM builds.
SETUP_BENCH_PACKAGES=(clang-$BENCH_LLVM libclang-$BENCH_LLVM-dev lld-$BENCH_LLVM llvm-$BENCH_LLVM)

# host_os: "ID VERSION_ID PRETTY_NAME" from os-release (EVNOTIFY_OS_RELEASE, for the
# self-tests; else /etc/os-release), read by the shell alone (it is made to be sourced).
host_os() (
	ID='' VERSION_ID='' PRETTY_NAME=''
	# shellcheck disable=SC1090
	. "${EVNOTIFY_OS_RELEASE:-/etc/os-release}" 2>/dev/null
	echo "${ID:-unknown} ${VERSION_ID:-unknown} ${PRETTY_NAME:-an unknown system (no os-release)}"
)

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
set -euo pipefail

# --- The host ----------------------------------------------------------------
# The package names, the Rust toolchain (rustc-web) and the apt sources are Debian 12's: on
# another system apt would fail deep inside, or install something else. Say so first.
read -r os_id os_version os_name <<<"$(host_os)"
if [ "$os_id $os_version" != "debian 12" ] && [ "${EVNOTIFY_ANY_OS:-0}" != 1 ]; then
	log "this host is $os_name (ID=$os_id, VERSION_ID=$os_version): set-up supports Debian 12"
	log "(bookworm) only. It installs Debian 12's packages with apt (rustc-web, clang-19 and -22,"
	log "qemu-system-x86, ...) and builds a test kernel with that toolchain."
	log "Run it on Debian 12: a VM or a container (docker run -it -v \"\$PWD\":/src debian:12)."
	log "If this host has the same tools under the same paths (/usr/bin/rustc of the version"
	log "the kernel wants, clang-19, ...), EVNOTIFY_ANY_OS=1 skips this check, at your own risk."
	exit 1
fi

# --- Host packages -----------------------------------------------------------
# check_bench_llvm: for the bench kernel, stops unless /usr/bin/rustc's LLVM major is
# BENCH_LLVM: CONFIG_RUST_INLINE_HELPERS needs clang of rustc's own LLVM major (init/Kconfig:
# RUSTC_CLANG_LLVM_COMPATIBLE), else the build would stop at "config did not stick". Before the
# packages are installed when rustc is there already (not to install the wrong clang), and after.
check_bench_llvm() {
	[ -n "$KERNEL_CLANG" ] || return 0
	local m
	m=$(/usr/bin/rustc --version --verbose | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
	[ "$m" != "$BENCH_LLVM" ] || return 0
	log "the bench kernel inlines Rust's C helpers, which needs clang of rustc's own LLVM:"
	log "/usr/bin/rustc has LLVM ${m:-?}, scripts/env.sh names clang-$BENCH_LLVM."
	log "Set BENCH_LLVM in scripts/env.sh to rustc's LLVM major (clang-N must exist)."
	exit 1
}
[ ! -x /usr/bin/rustc ] || check_bench_llvm
pkgs=("${SETUP_PACKAGES[@]}")
command -v cargo >/dev/null || pkgs+=("$SETUP_CARGO_PACKAGE")
[ -z "$KERNEL_CLANG" ] || pkgs+=("${SETUP_BENCH_PACKAGES[@]}")
# find_missing: the packages of pkgs not installed, into missing.
find_missing() {
	missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'ok installed' >/dev/null || missing+=("$p")
	done
}
find_missing
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		log "missing packages: ${missing[*]}"
		log "install them as root, then run this again:"
		log "  apt-get update && apt-get install ${missing[*]}"
		exit 1
	fi
	# One set-up at a time installs (two first runs would race on apt and on cargo install);
	# the second waits, then finds the packages there. apt itself waits for dpkg's lock
	# (another apt, or a set-up with another cache).
	exec 7>>"$EVNOTIFY_CACHE/setup.lock"
	wait_lock 7 "another set-up is installing packages or bindgen (lock $EVNOTIFY_CACHE/setup.lock)"
	find_missing
fi
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	aptlog=$EVNOTIFY_CACHE/apt-install.log
	apt=(apt-get -o DPkg::Lock::Timeout=600)
	{ DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq &&
		DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${missing[@]}"; } >"$aptlog" 2>&1 ||
		{ tail -n 30 "$aptlog" >&2; exit 1; }
fi

check_bench_llvm

# --- bindgen (bookworm's is too old), pinned ---------------------------------
# 0.73.2 is the version the kernel was tried with (7.3 wants >= 0.71.1).  A BINDGEN given
# from outside is used as it is.
BINDGEN_VERSION=0.73.2
bindgen_ok() { [ "$("$BINDGEN" --version 2>/dev/null)" = "bindgen $BINDGEN_VERSION" ]; }
if [ "$BINDGEN" = "$EVNOTIFY_CACHE/tools/bin/bindgen" ]; then
	if ! bindgen_ok; then
		exec 7>>"$EVNOTIFY_CACHE/setup.lock"
		wait_lock 7 "another set-up is installing packages or bindgen (lock $EVNOTIFY_CACHE/setup.lock)"
	fi
	if ! bindgen_ok; then
		log "cargo install bindgen-cli $BINDGEN_VERSION"
		cargo install --locked --force --version "$BINDGEN_VERSION" --root "$EVNOTIFY_CACHE/tools" bindgen-cli >&2
	fi
	flock -u 7 2>/dev/null || true
elif ! "$BINDGEN" --version >/dev/null 2>&1; then
	log "BINDGEN=$BINDGEN does not run"; exit 1
fi

# --- Kernel source: Debian linux-source-$KVER_SERIES -------------------------
aptdir=$EVNOTIFY_CACHE/apt
# The private apt state and src/partial are shared by every kernel: one setup at a time here.
exec 8>"$EVNOTIFY_CACHE/src.lock"
wait_lock 8 "another set-up is fetching or unpacking a kernel source (lock $EVNOTIFY_CACHE/src.lock)"
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$EVNOTIFY_CACHE/src"
src_list=$aptdir/backports.sources
apt_source "$EVNOTIFY_KSUITE" >"$src_list"
aptopts=(-o Dir::Etc::sourcelist="$src_list" -o Dir::Etc::sourceparts=- \
	-o Dir::State::Lists="$aptdir/lists" -o Dir::Cache="$aptdir/cache")
deb=$(ls "$EVNOTIFY_CACHE"/src/linux-source-"$KVER_SERIES"_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$deb" ]; then
	log "downloading linux-source-$KVER_SERIES"
	apt-get update -qq "${aptopts[@]}" >&2
	# Into a directory of its own first, so that an interrupted download is never taken for a .deb.
	dl=$EVNOTIFY_CACHE/src/partial
	rm -rf "$dl" && mkdir -p "$dl"
	(cd "$dl" && apt-get download -qq "${aptopts[@]}" "linux-source-$KVER_SERIES" >&2)
	mv "$dl"/linux-source-"$KVER_SERIES"_*.deb "$EVNOTIFY_CACHE/src/"
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
flock -u 8

# --- Kernel build, keyed by source version, config fragments and toolchain ---
if [ -n "${EVNOTIFY_KCONFIG:-}" ]; then KCONFIGS=("$EVNOTIFY_KCONFIG"); fi
tools=$(toolchain)
key=$debver-$({ cat "${KCONFIGS[@]}"; echo "$tools"; } | sha256sum | cut -c1-12)
objdir=$EVNOTIFY_CACHE/build/$key
mkdir -p "$EVNOTIFY_CACHE/build"
# One build per directory at a time: a second caller waits, then finds it built.
exec 9>"$objdir.lock"
wait_lock 9 "another set-up is building kernel $key (several minutes; lock $objdir.lock)"
# .built is written only after the whole build succeeded: an interrupted or failed build
# leaves none, and the next run resumes it.
if [ ! -f "$objdir/.built" ]; then
	log "building kernel $key (several minutes)"
	mkdir -p "$objdir"
	kmake() { make -C "$srcdir" O="$objdir" "${KMAKE_VARS[@]}" "$@" >&2; }
	kmake tinyconfig
	(cd "$objdir" && "$srcdir/scripts/kconfig/merge_config.sh" -m .config "${KCONFIGS[@]}" >&2)
	kmake olddefconfig
	# Every requested option must have stuck, or the kernel is not what it claims. The last
	# fragment to name an option decides it, as in merge_config.sh.
	declare -A want=()
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*) want[${line%%=*}]=$line ;;
		"# CONFIG_"*" is not set") opt=${line#\# } && want[${opt%% *}]=$line ;;
		esac
	done < <(cat "${KCONFIGS[@]}")
	for opt in "${!want[@]}"; do
		case "${want[$opt]}" in
		CONFIG_*) grep -qx "${want[$opt]}" "$objdir/.config" ;;
		*) ! grep -q "^$opt=" "$objdir/.config" ;;
		esac || { log "config did not stick: ${want[$opt]}"; exit 1; }
	done
	kmake -j"$(($(nproc) + 1))" bzImage modules
	echo "$tools" >"$objdir/.built"
fi
flock -u 9
echo "$objdir"
