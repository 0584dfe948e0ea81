#!/usr/bin/env bash
# make mutants: seed each bug of a list into the module, one at a time, and run the device
# tests in the VM against it. A mutant is caught when a test fails, the kernel splats or dies,
# or the module will not unload; the run stops at its first failure, so the time shown is how
# long the suite took to notice. A catch by a test counts only if that test then passes
# against the unmutated module (no flaky test takes credit), and the unmutated module must
# pass the whole suite first.
#
#   scripts/mutants.sh [LIST] [N...]     (LIST: scripts/mutants.txt; N: only those lines)
#
# Each line of LIST, tab-separated: FILE, PATTERN, REPLACEMENT and, optionally, a note
# "equivalent: WHY" for a mutant that no promise of the README or header tells apart, with
# the reason. PATTERN must occur exactly once in FILE; "\n" in PATTERN and REPLACEMENT stands
# for a newline. Lines starting with "#" are comments. Ends with "N passed, M failed": a
# mutant passes when it is caught within MUTANT_SECS (120), or is marked equivalent and
# survives.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Module parameters and the bench kernel are bench.sh's business: the tests expect the
# defaults, and the kernel with its checks.
unset EVNOTIFY_MODULE_PARAMS EVNOTIFY_BENCH
repo=$(dirname "$here")
. "$here/env.sh"
. "$here/lib.sh"
lock_checkout
list=$here/mutants.txt
if [ $# -gt 0 ] && [ -f "$1" ]; then list=$1; shift; fi
only=" $* "
limit=${MUTANT_SECS:-120}
out=$repo/build/mutants
mkdir -p "$out"

kdir=$("$here/setup.sh") || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
"$here/build.sh" "$kdir" >"$out/build.log" 2>&1 || { cat "$out/build.log"; echo "0 passed, 1 failed"; exit 1; }
# Every boot uses this copy of the sources and tools, whatever happens to the tree meanwhile.
clean=$out/clean
rm -rf "$clean" && mkdir -p "$clean"
cp "$repo"/*.rs "$repo/Kbuild" "$repo/rust_evnotify.ko" "$clean/"

vm_pid=
trap '[ -z "$vm_pid" ] || kill -- -"$vm_pid" 2>/dev/null' EXIT INT TERM

# boot KO LOG [FILTER]: runs the device tests (those matching FILTER) on module KO until the
# first failure. Prints "caught SECS WHAT", "passed SECS" or "error SECS WHY".
boot() {
	local ko=$1 log=$2 filter=${3:-} start first reason
	start=$(date +%s)
	: >"$log"
	EVNOTIFY_KO=$ko EVNOTIFY_OUT=$(dirname "$log")/vm \
		setsid "$here/vm.sh" --timeout $((limit + 120)) -- evnotify-vmtests ${filter:+"$filter"} </dev/null >"$log" 2>&1 &
	vm_pid=$!
	while kill -0 "$vm_pid" 2>/dev/null && ! grep -qE '^not ok ' "$log"; do sleep 1; done
	kill -- -"$vm_pid" 2>/dev/null
	wait "$vm_pid"
	local rc=$?
	vm_pid=
	local secs=$(($(date +%s) - start))
	first=$(tr -d '\r' <"$log" | grep -m1 -E '^not ok ' | awk '{ print $4 }')
	# The module's KUnit suites run at insmod, before the device tests: a failed case, or a
	# panic inside a suite, is a catch too (the baseline boot shows they pass unmutated).
	[ -n "$first" ] || first=$(tr -d '\r' <"$(dirname "$log")/vm/kernel.log" 2>/dev/null | awk '
		/# Subtest: rust_evnotify_/ { suite = $NF }
		suite && /^\[[ 0-9.]*\]     not ok [0-9]+ / { print "kunit:" suite "." $NF; exit }
		suite && /Kernel panic/ { print "kunit:" suite "(panic)"; exit }')
	# A VM that ran to its end says with its exit code what of its own failed, if anything.
	reason=$(vm_fault "$rc" | cut -c1-60)
	if [ -n "$first" ]; then echo "caught $secs $first"
	elif [ -n "$reason" ] && has "$log" '^1\.\.[1-9]'; then echo "caught $secs ($reason)"
	elif [ "$rc" = 0 ] && has "$log" '^1\.\.[1-9]'; then echo "passed $secs"
	else echo "error $secs the VM did not run the tests (exit $rc, see $log)"
	fi
}

# boot runs in this shell (no subshell), so that the trap knows the VM to kill.
res=$out/result
boot "$clean/rust_evnotify.ko" "$clean/vm.log" >"$res"
read -r verdict secs what <"$res"
if [ "$verdict" != passed ]; then
	echo "not ok - the unmutated module fails the suite ($verdict: $what)"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "# baseline: the unmutated module passes the suite (${secs}s)"

passed=0 failed=0 n=0
# Fields are split by Python, so an empty REPLACEMENT survives.
while IFS=$'\x1f' read -r file pattern replacement note; do
	n=$((n + 1))
	[ "$only" = "  " ] || [[ "$only" == *" $n "* ]] || continue
	dir=$out/m$n
	rm -rf "$dir" && mkdir -p "$dir"
	cp "$clean"/*.rs "$clean/Kbuild" "$dir/"
	what="$n $file: ${pattern:0:60} -> ${replacement:0:60}"
	if ! python3 - "$dir/$file" "$pattern" "$replacement" <<-'EOF'; then
		import sys
		path, pat, rep = sys.argv[1], *(a.replace("\\n", "\n") for a in sys.argv[2:4])
		src = open(path).read()
		if src.count(pat) != 1:
		    sys.exit(f"pattern occurs {src.count(pat)} times")
		open(path, "w").write(src.replace(pat, rep))
		EOF
		echo "not ok - $what: the pattern must occur exactly once"
		failed=$((failed + 1)); continue
	fi
	if ! make -s -C "$kdir" M="$dir" "${KMAKE_VARS[@]}" </dev/null >"$dir/build.log" 2>&1; then
		echo "not ok - $what: does not build (see $dir/build.log)"
		failed=$((failed + 1)); continue
	fi
	boot "$dir/rust_evnotify.ko" "$dir/vm.log" >"$res"
	read -r verdict secs test <"$res"
	if [ "$verdict" = caught ] && [[ "$test" != \(* ]] && [[ "$test" != kunit:* ]]; then
		# The catching test must pass on the unmutated module, or it proves nothing.
		boot "$clean/rust_evnotify.ko" "$dir/confirm.log" "$test" >"$res"
		read -r confirm _ <"$res"
		[ "$confirm" = passed ] || verdict=flaky
	fi
	case "$verdict:$note" in
	caught:*) if [ "$secs" -le "$limit" ]; then
			echo "ok - $what: caught by $test in ${secs}s"; passed=$((passed + 1))
		else
			echo "not ok - $what: caught by $test, but only after ${secs}s"; failed=$((failed + 1))
		fi ;;
	flaky:*) echo "not ok - $what: $test failed, but it fails unmutated too"; failed=$((failed + 1)) ;;
	passed:equivalent*) echo "ok - $what: survives, ${note}"; passed=$((passed + 1)) ;;
	passed:*) echo "not ok - $what: survived every test (${secs}s)"; failed=$((failed + 1)) ;;
	*) echo "not ok - $what: $secs $test"; failed=$((failed + 1)) ;;
	esac
done < <(python3 -c '
import sys
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line and not line.startswith("#"):
        f = line.split("\t") + [""] * 4
        print("\x1f".join(f[:4]))' "$list")

echo "$passed passed, $failed failed"
[ "$((passed + failed))" -gt 0 ] && [ "$failed" = 0 ]
