#!/usr/bin/env bash
# make stress: the reliability run, in the debug kernel (KASAN, kmemleak, debug
# objects, lockdep, failslab): every device test, a long stress ledger, a 1M-op
# fuzz run, then a kmemleak scan after the module unloads. Ends with
# "N passed, M failed" and a summary line of the figures.
#   STRESS_SECS (60)  FUZZ_OPS (1000000)  FUZZ_SEED (1)  TIMEOUT_SECS (2400 + STRESS_SECS)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Module parameters and the bench kernel are bench.sh's business: the tests expect the
# defaults, and the kernel with its checks.
unset EVNOTIFY_MODULE_PARAMS EVNOTIFY_BENCH
repo=$(dirname "$here")
export EVNOTIFY_DEBUG=1 EVNOTIFY_VM_MEM=${EVNOTIFY_VM_MEM:-2048}
. "$here/env.sh"
. "$here/lib.sh"
lock_checkout
out=$repo/build/stress-$KVER
mkdir -p "$out"
echo "# kernel $KVER (debug build)"
log=$out/vm.log

secs=${STRESS_SECS:-60}
# TIMEOUT_SECS: a full run took 7 to 13 minutes here; options given to stress.sh (passed on
# to vm.sh) come after this one and win.
EVNOTIFY_OUT=$out/vm "$here/vm.sh" --timeout "${TIMEOUT_SECS:-$((2400 + secs))}" "$@" -- sh -c "
	export EVNOTIFY_HANG_SECS=60; rc=0
	evnotify-vmtests || rc=1
	EVNOTIFY_STRESS_SECS=$secs EVNOTIFY_TEST_SECS=$((secs + 240)) evnotify-vmtests stress_ledger || rc=1
	evnotify-fuzz --ops ${FUZZ_OPS:-1000000} --seed ${FUZZ_SEED:-1} || rc=1
	exit \$rc" </dev/null 2>&1 | tee "$log"
vm_rc=${PIPESTATUS[0]}

ktap "$log"
kunit "$out/vm/kernel.log" "$repo"/*.rs
fuzz=$(fuzz_ops "$log")
result "fuzzer: ${fuzz:-0} operations (seed ${FUZZ_SEED:-1}), no worker died" \
	$([ -n "$fuzz" ] && ! grep -q 'worker processes died\|^Error:' "$log"; echo $?)
grep -q '^vm: kmemleak: no leaks' "$log"
result "kmemleak: no leak after the module unloaded" $?
vm_run "VM run" "$vm_rc"
exit_status "the VM command" "$vm_rc"

splats=$("$here/splats.sh" "$out/vm/kernel.log" | wc -l)
faults=$(tr -d '\r' <"$log" | sed -n 's/^# fault_inject_[a-z_]*: \([0-9]*\) faults injected$/\1/p' | awk '{ s += $1 } END { print s + 0 }')
ledger=$(tr -d '\r' <"$log" | grep '^# stress:' | tail -n1 | sed -n 's/.*sent \([0-9]*\).*received \([0-9]*\).*/sent \1, received \2/p')
echo "$passed passed, $failed failed"
echo "summary: fuzz operations ${fuzz:-0}; stress kicks ${ledger:-none}; faults injected $faults; splats seen $splats"
[ "$failed" = 0 ]
