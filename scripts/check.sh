#!/usr/bin/env bash
# The whole test suite: lints, host tests, then every device test inside the
# VM.  Ends with "N passed, M failed", counting only checks that really ran,
# and exits non-zero if any failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Module parameters and the bench kernel are bench.sh's business: the tests expect the
# defaults, and the kernel with its checks.
unset EVNOTIFY_MODULE_PARAMS EVNOTIFY_BENCH
repo=$(dirname "$here")
# The device suite runs on every tested kernel, or only on KVER if it is given.
only_kver=${KVER:-}
(. "$here/env.sh") || { echo "0 passed, 1 failed"; exit 1; }
. "$here/env.sh"
lock_checkout
out=$repo/build/check
mkdir -p "$out"
. "$here/lib.sh"

# tools_lint: prints each command of the scripts that scripts/tools.txt lacks, and each
# package there that no one installs; fails if it printed anything.
tools_lint() (
	. "$here/setup.sh" # SETUP_PACKAGES, SETUP_CARGO_PACKAGE, SETUP_BENCH_PACKAGES
	allowed=" ${SETUP_PACKAGES[*]} $SETUP_CARGO_PACKAGE ${SETUP_BENCH_PACKAGES[*]} "
	"$here/commands.py" "$here"/*.sh "$repo/Makefile" >"$out/commands.txt" || exit 1
	while IFS=$'\t' read -r cmd where; do
		case $(type -t "$cmd") in builtin | keyword) continue ;; esac
		awk -v c="$cmd" '$1 == c { found = 1 } END { exit !found }' "$here/tools.txt" ||
			echo "$where: $cmd is not in scripts/tools.txt (add it with its Debian package)"
	done <"$out/commands.txt" | sort -u >"$out/tools-problems.txt"
	while read -r cmd pkg by; do
		case $cmd in '' | '#'*) continue ;; esac
		if [ -n "$by" ]; then
			[ "$by" = system ] || grep -qE "apt-get install .*[ ]$pkg( |;|$)" "$here/$by" ||
				echo "tools.txt: $cmd: $by does not install $pkg"
		elif [[ $allowed != *" $pkg "* ]] && [ "$(dpkg-query -W -f='${Essential}' "$pkg" 2>/dev/null)" != yes ]; then
			echo "tools.txt: $cmd: its package $pkg is neither Essential nor installed by setup.sh (SETUP_PACKAGES)"
		fi
	done <"$here/tools.txt" >>"$out/tools-problems.txt"
	cat "$out/tools-problems.txt"
	[ ! -s "$out/tools-problems.txt" ]
)

kdir=$("$here/setup.sh") || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
src=$(readlink -f "$kdir/source")

# --- Lints (each one can fail the run) ----------------------------------------
/usr/bin/rustfmt --edition 2021 --config-path "$src/.rustfmt.toml" --check "$repo/rust_evnotify.rs" >"$out/rustfmt.log" 2>&1
result "module rustfmt clean" $?
(cd "$repo/user" && cargo fmt --all --check) >"$out/cargo-fmt.log" 2>&1
result "user cargo fmt --check" $?
(cd "$repo/user" && cargo clippy -q --locked --all-targets -- -D warnings) >"$out/clippy.log" 2>&1
result "user cargo clippy -D warnings" $?
# The library is publishable: it packages and builds from its tarball (offline: clippy fetched).
(cd "$repo/user" && cargo package -p evnotify --allow-dirty --offline --locked) >"$out/package.log" 2>&1 ||
	{ sed 's/^/  | /' "$out/package.log" | tail -n 20; false; }
result "cargo package -p evnotify (licence, metadata, builds from the tarball)" $?
"$here/build.sh" "$kdir" >"$out/build.log" 2>&1
result "module builds warning-free with CLIPPY=1; static tools build" $?
rm -f "$repo/rust-project.json"
KDIR=$kdir "$here/rust-analyzer.sh" >"$out/rust-analyzer.log" 2>&1 &&
	grep -q '"root_module": *"[^"]*rust_evnotify.rs"' "$repo/rust-project.json"
result "make rust-analyzer writes rust-project.json with the module" $?
# Every command a script runs comes from a package that set-up installs (or an Essential
# one): scripts/tools.txt maps each to its package, commands.py finds them in the scripts.
(cd "$here" && ./commands.py testdata/commands-sample.sh) | diff -u "$here/testdata/commands-sample.expected" - >"$out/tools.log" 2>&1
result "commands.py finds the commands of a sample script, and nothing else" $?
tools_lint >>"$out/tools.log" 2>&1
result "every command the scripts run is in scripts/tools.txt, from a package set-up installs" $?
[ ! -s "$out/tools.log" ] || sed 's/^/  | /' "$out/tools.log" | head -n 30
# docs/performance.md is bench/results.json rendered (bench.sh writes both): the committed page
# must be what the committed results render into, so that no figure of it goes stale.
"$here/perf-doc.py" "$repo/bench/results.json" "$out/performance.md" >"$out/perf-doc.log" 2>&1 &&
	diff -u "$repo/docs/performance.md" "$out/performance.md" >>"$out/perf-doc.log" 2>&1
result "docs/performance.md is bench/results.json as scripts/perf-doc.py renders it" $?
# make mutants would report a seeded bug whose code moved as a failure after a long run: say
# so here, at once.
python3 - "$here/mutants.txt" "$repo" >"$out/mutants-patterns.txt" 2>&1 <<'EOF'
import sys
bad = 0
for n, line in enumerate((l for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")), 1):
    f = line.rstrip("\n").split("\t")
    pat = f[1].replace("\\n", "\n")
    c = open(f"{sys.argv[2]}/{f[0]}").read().count(pat)
    if c != 1:
        print(f"mutant {n}: its pattern occurs {c} times in {f[0]}")
        bad = 1
sys.exit(bad)
EOF
result "every seeded bug of scripts/mutants.txt has its pattern once in its file" $?
[ ! -s "$out/perf-doc.log" ] || sed 's/^/  | /' "$out/perf-doc.log" | head -n 30
# DKMS needs root (as dkms itself says); CI runs as root. Not counted when skipped.
if [ "$(id -u)" = 0 ]; then
	"$here/dkms-check.sh" "$kdir" >"$out/dkms.log" 2>&1
	rc=$?
	result "DKMS adds, builds and installs the module against the test kernel" $rc
	[ "$rc" = 0 ] || tail -n 30 "$out/dkms.log" | sed 's/^/  | /'
else
	echo "# skip - DKMS check: needs root (not counted)"
fi
for l in rustfmt cargo-fmt clippy build; do [ -s "$out/$l.log" ] && sed 's/^/  | /' "$out/$l.log" | head -n 30; done

# --- Host tests -----------------------------------------------------------------
(cd "$repo/user" && cargo test --locked 2>&1) | tee "$out/host.log" | grep -E '^test |panicked|FAILED'
host_rc=${PIPESTATUS[0]}
read -r hp hf < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
	END { print p + 0, f + 0 }' "$out/host.log")
passed=$((passed + hp)) failed=$((failed + hf))
if [ "$host_rc" != 0 ] && [ "$hf" = 0 ]; then result "host cargo test (did not complete)" 1; fi

# --- The VM runner itself: it must be able to fail -------------------------------
# The status is taken before the name is: a command substitution in the same line resets $?.
for f in "$here"/testdata/splat-*.log; do
	"$here/splats.sh" "$f" >/dev/null
	rc=$?
	result "splat scanner catches $(basename "$f" .log)" $rc
done
"$here/splats.sh" "$here/testdata/clean-user-segfault.log" >/dev/null
result "splat scanner passes a log with only user-space segfaults" $([ $? = 1 ]; echo $?)
for f in "$here"/testdata/clean-memcg-oom*.log; do
	"$here/splats.sh" "$f" >/dev/null
	rc=$?
	result "splat scanner passes an unkillable task's memory cgroup OOM report ($(basename "$f" .log))" $([ $rc = 1 ]; echo $?)
done
# Each fixture's first line says the tally it must give: "# expect: P passed, F failed (why)".
for f in "$here"/testdata/ktap-*.log; do
	want=$(sed -n '1s/^# expect: \([0-9]* passed, [0-9]* failed\).*/\1/p' "$f")
	got=$(passed=0 failed=0; ktap "$f" >/dev/null; echo "$passed passed, $failed failed")
	result "KTAP counter on $(basename "$f" .log): ${want:-no expectation in the fixture} (got $got)" \
		$([ -n "$want" ] && [ "$got" = "$want" ]; echo $?)
done
# A good log much bigger than a pipe buffer: tr's SIGPIPE must not read as "no plan".
{ printf 'KTAP version 1\n1..1\n'; seq 200000 | sed 's/^/# padding /'; echo 'ok 1 big'; } >"$out/ktap-big.log"
( passed=0 failed=0; ktap "$out/ktap-big.log" >/dev/null; [ "$failed" = 0 ] && [ "$passed" = 1 ] )
result "KTAP counter passes a good 3 MB log" $?
( passed=0 failed=0; kunit "$here/testdata/kunit-fail.log" <(echo '#[kunit_tests(rust_evnotify_demo)]') >/dev/null
	[ "$failed" -gt 0 ] )
result "KUnit counter fails a failed case" $?
( passed=0 failed=0; sed 's/pass:1 fail:1/pass:2 fail:0/' "$here/testdata/kunit-fail.log" >"$out/kunit-ok.log"
	kunit "$out/kunit-ok.log" <(printf '#[kunit_tests(rust_evnotify_demo)]\n#[kunit_tests(rust_evnotify_gone)]\n') >/dev/null
	[ "$failed" = 1 ] && [ "$passed" = 2 ] )
result "KUnit counter fails a suite that never reported, counts the rest" $?
( passed=3 failed=0; exit_status "a runner" 1 >/dev/null; [ "$failed" -gt 0 ] )
result "a non-zero exit with no failed test line fails the run" $?

# setup.sh, on hosts unlike this one (its functions, sourced; fake commands first in PATH).
for d in classic deb822 empty thirdparty; do
	(EVNOTIFY_APT_ROOT=$here/testdata/apt-$d; . "$here/setup.sh" && apt_source sid) >"$out/apt-$d.txt" 2>&1
	diff -u "$here/testdata/apt-$d.expected" "$out/apt-$d.txt" >>"$out/setup-self.log"
	result "setup.sh finds the Debian mirror and keyring in an apt dir: $d" $?
done
fake=$repo/build/fakebin
rm -rf "$fake" && mkdir -p "$fake"
printf '#!/bin/sh\nexit 1\n' >"$fake/dpkg-query"
printf '#!/bin/sh\necho 1000\n' >"$fake/id"
printf '#!/bin/sh\ntouch "%s/apt-get-ran"\n' "$fake" >"$fake/apt-get"
chmod +x "$fake"/*
# A PATH of its own, so that the host has no cargo either.
for t in bash dirname mkdir grep; do ln -s "$(command -v $t)" "$fake/"; done
EVNOTIFY_CACHE=$fake/cache PATH=$fake "$here/setup.sh" >"$out/setup-nonroot.log" 2>&1
result "setup.sh, not root, packages and cargo missing: exits, naming them (and cargo-web) and the apt-get line" \
	$([ $? != 0 ] && [ ! -e "$fake/apt-get-ran" ] && grep -q 'apt-get install .*busybox-static.*cargo-web' "$out/setup-nonroot.log"; echo $?)
# (Another run's set-up may hold a lock a moment: saying that it waits is not doing anything.)
rm -f "$fake/apt-get-ran"
EVNOTIFY_OS_RELEASE=$here/testdata/os-release-ubuntu EVNOTIFY_CACHE=$fake/cache PATH=$fake \
	"$here/setup.sh" >"$out/setup-os.log" 2>&1
result "setup.sh on a host that is not Debian 12: stops first, saying what it supports and what to do" \
	$([ $? != 0 ] && [ ! -e "$fake/apt-get-ran" ] && grep -q 'this host is Ubuntu 24.04.1 LTS .*supports Debian 12' "$out/setup-os.log" &&
		grep -q 'EVNOTIFY_ANY_OS=1' "$out/setup-os.log" && ! grep -q 'missing packages' "$out/setup-os.log"; echo $?)
[ "$("$here/setup.sh" 2>"$out/setup-again.log")" = "$kdir" ] && ! grep -qv ': waiting: ' "$out/setup-again.log"
result "setup.sh run again: the same KDIR, nothing installed or built" $?
# A set-up waits for another one working on the same cache, and says so (here: this shell
# holds the kernel sources' lock of a cache of its own; the waiting set-up is then stopped).
lockcache=$repo/build/setup-lock-cache
rm -rf "$lockcache" && mkdir -p "$lockcache"
exec {lockfd}>"$lockcache/src.lock"
flock "$lockfd"
# The waiter gets neither lock's descriptor (else, orphaned by an interrupted run, it would
# hold this checkout's lock and wait for ever on its own), and goes with this run if it dies.
BINDGEN=$BINDGEN EVNOTIFY_CACHE=$lockcache setsid "$here/setup.sh" >/dev/null 2>"$out/setup-lock.log" 6>&- {lockfd}>&- &
waiter=$!
trap 'kill -- -"$waiter" 2>/dev/null' EXIT INT TERM
sleep 3
grep -q '^setup.sh: waiting: another set-up is fetching or unpacking a kernel source' "$out/setup-lock.log" &&
	[ ! -e "$lockcache/src/partial" ]
rc=$?
kill -- -"$waiter" 2>/dev/null; wait "$waiter" 2>/dev/null
trap - EXIT INT TERM
exec {lockfd}>&-
result "setup.sh waits for another set-up of the same cache, saying so" $rc
result "the cached kernel records the toolchain that built it" \
	$(. "$here/setup.sh" && toolchain | cmp -s - "$kdir/.built"; echo $?)

# The Makefile, with no kernel anywhere (in a scratch copy: clean removes build/).
mk=$repo/build/make-self
rm -rf "$mk" && mkdir -p "$mk/build" "$mk/user/target"
cp "$repo/Makefile" "$mk/"
touch "$mk/rust_evnotify.ko" "$mk/rust_evnotify.o" "$mk/.rust_evnotify.o.cmd" "$mk/README.md"
make -s -C "$mk" help >"$out/make-help.log" 2>&1
targets=$(sed -n 's/^\([a-z_-]*\):.*/\1/p' "$repo/Makefile")
result "make help lists every target with its line ($(echo $targets))" \
	$(for t in $targets; do grep -qE "^  $t +[^ ]" "$out/make-help.log" || { echo 1; exit; }; done; echo 0)
make -C "$mk" clean KDIR=/nonexistent >"$out/make-clean.log" 2>&1 &&
	[ ! -e "$mk/rust_evnotify.ko" ] && [ ! -e "$mk/.rust_evnotify.o.cmd" ] && [ ! -e "$mk/build" ] &&
	[ -e "$mk/user/target" ] && [ -e "$mk/README.md" ]
result "make clean works with KDIR pointing nowhere and removes only build products" $?
make -C "$mk" distclean KDIR=/nonexistent >>"$out/make-clean.log" 2>&1 && [ ! -e "$mk/user/target" ]
result "make distclean also removes user/target" $?

# A second run in this checkout waits for this one (which holds the checkout's lock), and
# says so; it is stopped before it can start.
EVNOTIFY_CHECKOUT_LOCKED= setsid "$here/vm.sh" -- true >"$out/lock.log" 2>&1 6>&- &
waiter=$!
trap 'kill -- -"$waiter" 2>/dev/null' EXIT INT TERM
sleep 3
grep -q '^vm.sh: waiting: another run is using this checkout (pid [0-9]*, check.sh' "$out/lock.log" &&
	! grep -q '^vm: exit' "$out/lock.log"
rc=$?
kill -- -"$waiter" 2>/dev/null; wait "$waiter" 2>/dev/null
trap - EXIT INT TERM
result "a second run in this checkout waits for the first, saying so" $rc

# A checkout whose path has a space is refused before anything runs (a copy of scripts/ in
# such a path stands for it).
spaced="$repo/build/with space"
rm -rf "$spaced" && mkdir -p "$spaced" && cp -r "$here" "$spaced/"
EVNOTIFY_OUT=$repo/build/vm-spaced "$spaced/scripts/vm.sh" -- true >"$out/spaced.log" 2>&1
result "a checkout path with a space is refused at once, saying why and what to do" \
	$([ $? = "$VM_USAGE" ] && grep -q "^vm.sh: this checkout's path has a blank in it: '$spaced'.* move the checkout" "$out/spaced.log" &&
		[ ! -e "$repo/build/vm-spaced" ]; echo $?)
"$spaced/scripts/kbuild.sh" "$kdir" >"$out/spaced-kbuild.log" 2>&1
result "make (kbuild.sh) refuses a module path with a space" \
	$([ $? = 1 ] && grep -q "^kbuild.sh: the module's path has a blank in it" "$out/spaced-kbuild.log"; echo $?)
rm -rf "$spaced"

# vm.sh: its usage, and its own exit codes, which no guest status can take.
rm -rf "$repo/build/vm-none"
EVNOTIFY_OUT=$repo/build/vm-none "$here/vm.sh" --no-such-option -- true >"$out/vm-usage.log" 2>&1
result "vm.sh rejects an unknown option with its usage code ($VM_USAGE) and boots nothing" \
	$([ $? = "$VM_USAGE" ] && grep -q 'unknown option --no-such-option' "$out/vm-usage.log" && [ ! -e "$repo/build/vm-none" ]; echo $?)
vm_self() { EVNOTIFY_OUT=$repo/build/vm-self "$here/vm.sh" "$@" >>"$out/vm-self.log" 2>&1; }
: >"$out/vm-self.log"
vm_self -- sh -c 'exit 124' </dev/null
result "vm.sh returns the guest command's status, even 124 (which timeout(1) uses)" $([ $? = 124 ]; echo $?)
vm_self --timeout 5 -- sleep 600 </dev/null
result "vm.sh --timeout 5 stops a guest that sleeps longer, with its own code ($VM_TIMEOUT)" $([ $? = "$VM_TIMEOUT" ]; echo $?)
vm_self -- sh -c 'echo c; reboot -f' </dev/null
result "vm.sh fails when the guest never reports ($VM_NOREPORT)" $([ $? = "$VM_NOREPORT" ]; echo $?)
EVNOTIFY_KO=$here/kernel.config vm_self -- true </dev/null
result "vm.sh fails when insmod fails ($VM_INSMOD)" $([ $? = "$VM_INSMOD" ]; echo $?)
# A process left holding a channel: the module cannot unload. It also holds the console,
# which the guest must get back to report.
vm_self -- sh -c 'exec 3</dev/evnotify; sleep 600 &' </dev/null
result "vm.sh fails when the module cannot unload after the command ($VM_RMMOD)" $([ $? = "$VM_RMMOD" ]; echo $?)
# kmemleak that does not scan (here a directory stands in for its file, which refuses the
# write as a disabled kmemleak does) must fail the run, not read as "no leaks".
EVNOTIFY_KMEMLEAK=/tmp/kmemleak-stand-in vm_self -- mkdir /tmp/kmemleak-stand-in </dev/null
result "vm.sh fails when kmemleak does not scan ($VM_NOSCAN)" \
	$([ $? = "$VM_NOSCAN" ] && has "$out/vm-self.log" '^vm: kmemleak: the scan did not run'; echo $?)
# The serial port drops what arrives before the guest opens it: newlines first, as padding.
{ printf '\n%.0s' $(seq 64); echo 'echo hi from the shell; exit 130'; } | vm_self --shell --timeout 120
result "vm.sh --shell runs what it reads and returns the shell's status (130)" \
	$([ $? = 130 ] && has "$out/vm-self.log" '^hi from the shell$'; echo $?)

# --- Device tests in the VM, on each kernel ---------------------------------------
# One boot per kernel: every device test, then a short fuzz run (the module must still
# unload). The guest command fails if either program does, so that a crash after the last
# test line still fails the run.
# About a minute each here; the default limit (600 s) leaves room for slower hosts and deadlines.
summary=()
[ -z "$only_kver" ] || echo "# KVER=$only_kver: the device suite runs on that kernel only"
for k in ${only_kver:-${KVERS_TESTED[*]}}; do
	p0=$passed f0=$failed
	echo "# kernel $k"
	# An EVNOTIFY_KSUITE given from outside is for KVER alone.
	[ -z "$only_kver" ] && unset EVNOTIFY_KSUITE
	if ! kk=$(KVER=$k "$here/setup.sh"); then
		result "kernel $k: setup" 1
	else
		# The version's own build of the module (KVER's is built above, with the user tools).
		[ "$kk" = "$kdir" ] || { KVER=$k "$here/build.sh" "$kk" >"$out/build-$k.log" 2>&1
			result "kernel $k: module builds warning-free with CLIPPY=1" $?; }
		vmout=$repo/build/vm-$k
		KVER=$k EVNOTIFY_OUT=$vmout "$here/vm.sh" --timeout 600 -- sh -c \
			"rc=0; evnotify-vmtests || rc=1; echo '# fuzz'
			evnotify-fuzz --ops ${EVNOTIFY_FUZZ_OPS:-100000} --seed ${EVNOTIFY_FUZZ_SEED:-1} || rc=1; exit \$rc" \
			</dev/null 2>&1 | tee "$out/vm-$k.log"
		vm_rc=${PIPESTATUS[0]}
		ktap "$out/vm-$k.log"
		# The module's KUnit suites ran when the VM loaded it.
		kunit "$vmout/kernel.log" "$repo"/*.rs
		fuzz=$(fuzz_ops "$out/vm-$k.log")
		result "kernel $k: fuzzer: ${fuzz:-0} operations, no worker died" \
			$([ -n "$fuzz" ] && ! grep -q 'worker processes died\|^Error:' "$out/vm-$k.log"; echo $?)
		# The guest reported, the module loaded and unloaded, and the kernel log is free of
		# splats (vm.sh's own exit codes say which failed).
		vm_run "kernel $k: VM run" "$vm_rc"
		# A non-zero status with no failed line for this kernel (a crash after the last test).
		[ "$vm_rc" = 0 ] || [ "$failed" -gt "$f0" ] ||
			result "kernel $k: the VM command exited $vm_rc with no failed test" 1
	fi
	summary+=("kernel $(cat "${kk:-/nonexistent}/include/config/kernel.release" 2>/dev/null || echo "$k"): $((passed - p0)) passed, $((failed - f0)) failed")
done

printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
