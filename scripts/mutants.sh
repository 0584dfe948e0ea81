#!/usr/bin/env bash
# make mutants: seed each bug of a list into the module, one at a time, and run the device
# tests in the VM against it. A mutant is caught when a test fails, the kernel splats, or the
# module will not unload; the run stops at its first failure, so the time shown is how long
# the suite took to notice.
#
#   scripts/mutants.sh [LIST] [N...]     (LIST: scripts/mutants.txt; N: only those lines)
#
# Each line of LIST, tab-separated: FILE, PATTERN, REPLACEMENT and, optionally, a note
# "equivalent: WHY" for a mutant no test can tell apart, with the reason. PATTERN must occur
# exactly once in FILE; "\n" in PATTERN and REPLACEMENT stands for a newline. Lines starting
# with "#" are comments. Ends with "N passed, M failed": a mutant passes when it is caught
# within MUTANT_SECS (120) or is marked equivalent and survives.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"
list=$here/mutants.txt
if [ $# -gt 0 ] && [ -f "$1" ]; then list=$1; shift; fi
only=" $* "
limit=${MUTANT_SECS:-120}
out=$repo/build/mutants
mkdir -p "$out"

kdir=$("$here/setup.sh") || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
"$here/build.sh" "$kdir" >"$out/build.log" 2>&1 || { cat "$out/build.log"; echo "0 passed, 1 failed"; exit 1; }

# run_vm KO LOG: boots KO with the device tests; prints "caught SECS TEST", "caught SECS
# (vm: ...)" or "missed SECS".
run_vm() {
	local ko=$1 log=$2 start pid
	start=$(date +%s)
	: >"$log"
	EVNOTIFY_KO=$ko EVNOTIFY_OUT=$(dirname "$log")/vm EVNOTIFY_VM_TIMEOUT=$((limit + 120)) \
		setsid "$here/vm.sh" -- evnotify-vmtests </dev/null >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if grep -qE '^not ok ' "$log"; then
			kill -- -"$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			echo "caught $(($(date +%s) - start)) $(grep -m1 -E '^not ok ' "$log" | awk '{ print $4 }')"
			return
		fi
		sleep 1
	done
	if wait "$pid"; then echo "missed $(($(date +%s) - start))"; return; fi
	echo "caught $(($(date +%s) - start)) ($(grep -m1 '^vm: ' "$log" | tr -d '\r' | cut -c1-60))"
}

passed=0 failed=0 n=0
while IFS= read -r line || [ -n "$line" ]; do
	case "$line" in '' | '#'*) continue ;; esac
	n=$((n + 1))
	[ "$only" = "  " ] || [[ "$only" == *" $n "* ]] || continue
	IFS=$'\t' read -r file pattern replacement note <<<"$line"
	dir=$out/m$n
	rm -rf "$dir" && mkdir -p "$dir"
	cp "$repo"/*.rs "$repo/Kbuild" "$dir/"
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
	read -r verdict secs test < <(run_vm "$dir/rust_evnotify.ko" "$dir/vm.log")
	case "$verdict:$note" in
	caught:*) if [ "$secs" -le "$limit" ]; then
			echo "ok - $what: caught by $test in ${secs}s"; passed=$((passed + 1))
		else
			echo "not ok - $what: caught by $test, but only after ${secs}s"; failed=$((failed + 1))
		fi ;;
	missed:equivalent*) echo "ok - $what: survives, ${note}"; passed=$((passed + 1)) ;;
	*) echo "not ok - $what: survived every test (${secs}s)"; failed=$((failed + 1)) ;;
	esac
done <"$list"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
