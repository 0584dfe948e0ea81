# Tallying helpers shared by check.sh and stress.sh; sourced, not run.
# shellcheck shell=bash
passed=0 failed=0

# result NAME STATUS: count one check, printing it TAP-style.
result() {
	if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok - $1"
	else failed=$((failed + 1)); echo "not ok - $1"; fi
}

# ktap LOG: count every KTAP test line of LOG. In the VM nothing may skip, so a skipped
# test counts as failed, as does one that a plan announced but never reported, and a log
# with no plan at all.
ktap() {
	local plan ok nok
	if ! tr -d '\r' <"$1" | grep -qE '^1\.\.[0-9]+$'; then
		result "the VM tests printed a KTAP plan (they died before it?)" 1
	elif tr -d '\r' <"$1" | grep -qE '^1\.\.0$'; then
		result "every KTAP plan announces tests (an empty plan ran nothing)" 1
	fi
	plan=$(tr -d '\r' <"$1" | sed -n 's/^1\.\.\([0-9]*\)$/\1/p' | awk '{ s += $1 } END { print s + 0 }')
	ok=$(grep -E '^ok [0-9]+ ' "$1" | grep -cv '# SKIP')
	nok=$(grep -cE '^not ok [0-9]+ |^ok [0-9]+ .*# SKIP' "$1")
	passed=$((passed + ok)) failed=$((failed + nok))
	if [ "$((${plan:-1} - ok - nok))" -gt 0 ]; then
		echo "not ok - $((plan - ok - nok)) VM tests never reported"
		failed=$((failed + plan - ok - nok))
	fi
}

# vm_clean LOG: the guest reported, the module loaded and unloaded, no splat, no leak.
vm_clean() {
	! grep -qE '^vm: (kernel splat|the guest did not report|insmod|rmmod|kmemleak reports)' "$1"
}

# fuzz_ops LOG: operations the fuzzer reports (empty if it never finished).
fuzz_ops() {
	tr -d '\r' <"$1" | sed -n 's/^fuzz: seed [0-9]* ops \([0-9]*\).*/\1/p' | tail -n1
}

# exit_status NAME RC: a command's non-zero status fails the run even when no test line
# said so (a crash after the last test, a runner fault).
exit_status() {
	[ "$2" = 0 ] || [ "$failed" -gt 0 ] || result "$1 exited $2 with no failed test" 1
}

# kunit LOG SOURCE...: count the cases of each KUnit suite the module's SOURCEs declare
# (`#[kunit_tests(NAME)]`) from the kernel log LOG. A suite that never reported, or reported
# no case, fails; so does each failed or skipped case.
kunit() {
	local log=$1 suites s line p f sk t
	shift
	suites=$(sed -n 's/^#\[kunit_tests(\([a-z0-9_]*\))\]$/\1/p' "$@")
	[ -n "$suites" ] || { result "the module declares KUnit suites" 1; return; }
	for s in $suites; do
		line=$(tr -d '\r' <"$log" | sed -n "s/^\[[ 0-9.]*\] *# $s: pass:\([0-9]*\) fail:\([0-9]*\) skip:\([0-9]*\) total:\([0-9]*\)$/\1 \2 \3 \4/p" | tail -n1)
		if [ -z "$line" ]; then
			result "KUnit suite $s reported in the kernel log" 1
			continue
		fi
		read -r p f sk t <<<"$line"
		passed=$((passed + p)) failed=$((failed + f + sk))
		if [ "$t" = 0 ] || [ "$((f + sk))" != 0 ]; then
			echo "not ok - KUnit $s: $p of $t cases passed"
			tr -d '\r' <"$log" | grep -E "^\[[ 0-9.]*\] +(not ok [0-9]+ |ok [0-9]+ .*# SKIP)" | sed 's/^/  | /'
			[ "$t" != 0 ] || result "KUnit suite $s has cases" 1
		else
			echo "ok - KUnit $s: $p cases passed"
		fi
	done
}
