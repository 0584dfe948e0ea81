#!/usr/bin/env bash
# Print the kernel splats found in a serial log (exit 0 if any, 1 if none).
# One list of patterns, used by vm.sh and tested by check.sh on fixtures.
#   scripts/splats.sh KERNEL_LOG
# A memory cgroup's OOM report for a task the OOM killer may not kill (oom_score_adj -1000, as
# the cgroup tests set before they fill a memory.max) dumps the stack without a fault: the
# lines of that dump alone (its CPU, Tainted and Hardware lines, Call Trace, <TASK>, frames,
# </TASK>; 60 lines at most) are blanked, line numbers kept. Every other line, within the
# report or after it, is scanned.
awk '/invoked oom-killer: .*oom_score_adj=-1000([^0-9]|$)/ { dump = 60; print ""; next }
	dump > 0 && /<\/TASK>/ { dump = 0; print ""; next }
	dump > 0 && (/\] CPU: [0-9]+ UID: / || /\] Tainted: / || /\] Hardware name: / || /\] Call Trace:/ ||
		/\]  <TASK>/ || /\]  (\? )?[^ ]+\+0x[0-9a-f]+\/0x[0-9a-f]+( \[[^]]+\])?\r?$/) { dump--; print ""; next }
	{ print }' "$1" | grep -av 'traps: ' |
	grep -anE 'WARNING:|BUG:|Oops|Kernel panic|kernel BUG|general protection fault|possible (recursive|circular) locking|INFO: (possible|trying to register|task .* blocked|lockdep)|sleeping function called from invalid context|rust_panic|panicked at|Call Trace:|UBSAN:|KASAN:|kmemleak: [0-9]+ new suspected'
