# Tallying helpers shared by check.sh and stress.sh, and the VM runner's exit codes; sourced,
# not run.
# shellcheck shell=bash
passed=0 failed=0

# vm.sh's own exit codes. A guest command's status is always below 200 (one above 199 is
# reported as 199), so none of these can be mistaken for it. When several apply, the lowest wins.
VM_USAGE=200 VM_SETUP=201 VM_NOREPORT=202 VM_TIMEOUT=203 VM_INSMOD=204 VM_SPLAT=205 VM_RMMOD=206 VM_LEAK=207
VM_NOSCAN=208
# The last of them, for listings.
VM_LAST=$VM_NOSCAN

# vm_fault RC: what vm.sh's exit code RC says went wrong in the runner, or nothing for a
# guest status.
vm_fault() {
	case "$1" in
	"$VM_USAGE") echo "usage error: unknown option, missing argument or no command (nothing booted)" ;;
	"$VM_SETUP") echo "setup.sh or build.sh failed (nothing booted)" ;;
	"$VM_NOREPORT") echo "the guest never reported a status (QEMU failed, kernel panic, crash or reboot)" ;;
	"$VM_TIMEOUT") echo "timed out: the VM ran longer than --timeout and was killed" ;;
	"$VM_INSMOD") echo "insmod rust_evnotify.ko failed in the guest (the command did not run)" ;;
	"$VM_SPLAT") echo "kernel splat in the kernel log (WARNING, BUG, Oops, lockdep, panic...)" ;;
	"$VM_RMMOD") echo "rmmod rust_evnotify failed after the command" ;;
	"$VM_LEAK") echo "kmemleak reported leaks after the module unloaded" ;;
	"$VM_NOSCAN") echo "kmemleak did not scan (disabled at boot or by an error of its own): leaks unchecked" ;;
	*) [ "$1" -lt 200 ] || echo "vm.sh exited with a status it does not define (a bug in it)" ;;
	esac
}

# vm_run NAME RC: one check for the VM run itself, failed by any of the runner's own codes.
vm_run() {
	local fault
	fault=$(vm_fault "$2")
	if [ -n "$fault" ]; then result "$1: $fault (vm.sh exit $2)" 1
	else result "$1: guest reported, module loaded and unloaded, no kernel splat" 0; fi
}

# has LOG ERE: does a line of LOG, carriage returns dropped, match ERE?  Not a pipeline: there,
# `grep -q` exits at the first match, and under pipefail tr's SIGPIPE reads as "no match" (CI
# once lost a KTAP plan so, with a log just over one pipe write).
has() { grep -aqE -e "$2" < <(tr -d '\r' <"$1"); }

# result NAME STATUS: count one check, printing it TAP-style.
result() {
	if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok - $1"
	else failed=$((failed + 1)); echo "not ok - $1"; fi
}

# ktap LOG: count the KTAP tests of LOG by number, as the kernel's `kunit.py parse` does. Each
# plan `1..N` (after a `KTAP version` line, or on its own) starts a document, and each of its
# tests 1..N must be reported exactly once: `ok` passes, `not ok` fails, and so does a
# `# SKIP` (in the VM nothing may skip). A test reported twice, a number beyond the plan or
# before any plan, and each number the plan announced but no line reported, is one failure
# more. A log with no plan at all fails, as does an empty plan.
ktap() {
	local tally p f
	if ! has "$1" '^1\.\.[0-9]+$'; then
		result "the VM tests printed a KTAP plan (they died before it?)" 1
		echo "  | what the guest printed first:"
		{ grep -a -m 3 -E 'KTAP|^1\.\.|^ok ' "$1" || head -n 5 "$1"; } | cat -A | sed 's/^/  | /'
	elif has "$1" '^1\.\.0$'; then
		result "every KTAP plan announces tests (an empty plan ran nothing)" 1
	fi
	# Not `grep | awk` alone: awk reads to the end, so no SIGPIPE can cut the log short.
	tally=$(tr -d '\r' <"$1" | awk '
		function close_plan(   i, missing) {
			if (plan == "") return
			for (i = 1; i <= plan; i++) if (!(i in seen)) missing++
			if (missing) {
				print "not ok - " missing " of the " plan " VM tests of plan 1.." plan " never reported"
				f += missing
			}
			split("", seen); plan = ""
		}
		/^KTAP version / { close_plan(); next }
		/^1\.\.[0-9]+$/ { close_plan(); plan = substr($0, 4) + 0; next }
		/^(not )?ok [0-9]+( |$)/ {
			bad = ($1 == "not"); num = (bad ? $3 : $2) + 0
			if (plan == "") { print "not ok - test " num " reported outside a KTAP plan"; f++; next }
			if (num < 1 || num > plan) { print "not ok - test " num " is beyond the plan 1.." plan; f++; next }
			if (num in seen) { print "not ok - test " num " reported twice (plan 1.." plan ")"; f++; next }
			seen[num] = 1
			if (bad || / # SKIP/) f++; else p++
		}
		END { close_plan(); print "tally " p + 0, f + 0 }')
	grep -v '^tally ' <<<"$tally" || true
	read -r _ p f < <(grep '^tally ' <<<"$tally")
	passed=$((passed + p)) failed=$((failed + f))
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
