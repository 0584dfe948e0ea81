#!/usr/bin/env bash
# Print the kernel splats found in a serial log (exit 0 if any, 1 if none).
# One list of patterns, used by vm.sh and tested by check.sh on fixtures.
#   scripts/splats.sh KERNEL_LOG
# A memory cgroup's OOM report for a task the OOM killer may not kill (oom_score_adj -1000, as
# the cgroup tests set before they fill a memory.max) is a report, not a splat: from its first
# line to "Out of memory and no killable processes" (200 lines at most) it is blanked, line
# numbers kept. Anything after it, or a report that kills or ends otherwise, is scanned.
awk '/invoked oom-killer: .*oom_score_adj=-1000([^0-9]|$)/ { skip = 200 }
	skip > 0 { skip--; if (/Out of memory and no killable processes/) skip = 0; print ""; next }
	{ print }' "$1" | grep -av 'traps: ' |
	grep -anE 'WARNING:|BUG:|Oops|Kernel panic|kernel BUG|general protection fault|possible (recursive|circular) locking|INFO: (possible|trying to register|task .* blocked|lockdep)|sleeping function called from invalid context|rust_panic|panicked at|Call Trace:|UBSAN:|KASAN:|kmemleak: [0-9]+ new suspected'
