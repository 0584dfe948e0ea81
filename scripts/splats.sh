#!/usr/bin/env bash
# Print the kernel splats found in a serial log (exit 0 if any, 1 if none).
# One list of patterns, used by vm.sh and tested by check.sh on fixtures.
#   scripts/splats.sh KERNEL_LOG
# A memory cgroup's OOM report for a task the OOM killer may not kill (oom_score_adj -1000, as
# the cgroup tests set before they fill a memory.max) dumps the stack without a fault
# (mm/oom_kill.c, dump_header): that dump alone is blanked, line numbers kept, and only if it
# is whole and unbroken (the trigger line, CPU/Tainted/Hardware, Call Trace, <TASK>, frames,
# the user-mode registers of the system call it came from, </TASK>; 120 lines at most) and
# followed at once by the memory cgroup's summary ("memory: usage"). Anything else, within the report or after it, is scanned.
awk 'function flush() { for (i = 1; i <= n; i++) print held[i]; n = 0; state = 0 }
	state == 2 { if (/\] memory: usage [0-9]+kB, limit/) { for (i = 1; i <= n; i++) print ""; n = 0; state = 0 } else flush(); print; next }
	state == 1 {
		if (n < 120 && (/\] COMPACTION is disabled/ || /\] CPU: [0-9]+ UID: / || /\] Tainted: / || /\] Hardware name: / ||
		    /\] Call Trace:/ || /\]  <TASK>/ || /\]  (\? )?[^ ]+\+0x[0-9a-f]+\/0x[0-9a-f]+( \[[^]]+\])?\r?$/ ||
		    /\] RIP: 0033:/ || /\] Code: / || /\] RSP: 002b:/ || /\] (RAX|RDX|RBP|R10|R13): [0-9a-f]+ /)) { held[++n] = $0; next }
		if (n < 120 && /\]  <\/TASK>/) { held[++n] = $0; state = 2; next }
		flush()
	}
	/invoked oom-killer: .*oom_score_adj=-1000([^0-9]|$)/ { state = 1; n = 0; held[++n] = $0; next }
	{ print }
	END { flush() }' "$1" | grep -av 'traps: ' |
	grep -anE 'WARNING:|BUG:|Oops|Kernel panic|kernel BUG|general protection fault|possible (recursive|circular) locking|INFO: (possible|trying to register|task .* blocked|lockdep)|sleeping function called from invalid context|rust_panic|panicked at|Call Trace:|UBSAN:|KASAN:|kmemleak: [0-9]+ new suspected'
