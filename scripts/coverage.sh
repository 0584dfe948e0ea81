#!/usr/bin/env bash
# make coverage: KCOV coverage of the module, on the coverage kernel (the 7.3 test kernel with
# KCOV; scripts/kernel-coverage.config, cached as the others are). In one boot: the VM suite
# under a collector (user/evnotify-kcov) whose handle every task of the suite inherits (the
# module's threads record their work under it), each test recording its own calls
# (EVNOTIFY_KCOV_DIR), then the guided fuzzer, which records itself. Then
# scripts/coverage.py maps the points to lines: build/coverage/summary.json and report.txt.
# Ends with "N passed, M failed". 7.3 only (the report is of one build of the module).
#   FUZZ_OPS (200000)  FUZZ_SEED (1)  TIMEOUT_SECS (3600)
#   TESTS: only the VM tests whose names contain it (for a quick look at what a test reaches)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
unset EVNOTIFY_BENCH EVNOTIFY_DEBUG
unset EVNOTIFY_MODULE_PARAMS
export EVNOTIFY_COVERAGE=1 KVER=7.3
. "$here/env.sh"
. "$here/lib.sh"
lock_checkout
out=$repo/build/coverage
rm -rf "$out" && mkdir -p "$out"
log=$out/vm.log
ops=${FUZZ_OPS:-200000} seed=${FUZZ_SEED:-1}

# Each points file is printed between markers, for the host to cut out of the log.
EVNOTIFY_OUT=$out/vm "$here/vm.sh" --timeout "${TIMEOUT_SECS:-3600}" -- sh -c "
	rc=0
	mkdir -p /tmp/kcov
	EVNOTIFY_KCOV_DIR=/tmp/kcov evnotify-kcov run --out /tmp/suite.points -- evnotify-vmtests '${TESTS:-}' || rc=1
	cat /tmp/kcov/*.points >>/tmp/suite.points
	evnotify-fuzz --guided --ops $ops --seed $seed --kcov-out /tmp/fuzz.points || rc=1
	for f in suite fuzz; do
		echo \"=== kcov \$f ===\"; cat /tmp/\$f.points; echo '=== end ==='
	done
	exit \$rc" </dev/null >"$log" 2>&1
vm_rc=$?
grep -av '^[.]text' "$log" | tail -n 40

ktap "$log"
kunit "$out/vm/kernel.log" "$repo"/*.rs
vm_run "VM run" "$vm_rc"
exit_status "the VM command" "$vm_rc"
for f in suite fuzz; do
	tr -d '\r' <"$log" | sed -n "/^=== kcov $f ===\$/,/^=== end ===\$/p" | sed '1d;$d' >"$out/$f.points"
	[ -s "$out/$f.points" ]
	result "the VM wrote the $f's points" $?
done
# A test whose KCOV buffer filled up (a stress test: the buffer holds every block run, not
# each once) lost what it reached after that: the figures can only be short, never long.
full=$(grep '^# .*buffer full: true' "$out/suite.points" | sed 's/^# \([^:]*\):.*/\1/' | tr '\n' ' ')
[ -z "$full" ] || echo "# KCOV buffer filled up in: $full(what they reached later is not counted)"
# The alarm records only in the coverage build (Kbuild: --cfg=evnotify_coverage, from make's
# command line): a build without it would report less, and silently.
grep -q -- '--cfg=evnotify_coverage' "$repo/.rust_evnotify.o.cmd"
result "the module was built as the coverage build (--cfg=evnotify_coverage: the alarm records)" $?
cp "$repo/rust_evnotify.ko" "$out/"
python3 "$here/coverage.py" --ko "$out/rust_evnotify.ko" --src "$repo" --explained "$here/coverage-explained.txt" \
	--suite "$out/suite.points" --fuzz "$out/fuzz.points" --out "$out"
result "coverage report: $out/report.txt, $out/summary.json" $?
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
