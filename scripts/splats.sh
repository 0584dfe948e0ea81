#!/usr/bin/env bash
# Print the kernel splats found in a serial log (exit 0 if any, 1 if none).
# One list of patterns, used by vm.sh and tested by check.sh on fixtures.
#   scripts/splats.sh KERNEL_LOG
grep -av 'traps: ' "$1" | grep -anE 'WARNING:|BUG:|Oops|Kernel panic|kernel BUG|general protection fault|possible (recursive|circular) locking|INFO: (possible|trying to register|task .* blocked|lockdep)|sleeping function called from invalid context|rust_panic|panicked at|Call Trace:|UBSAN:|KASAN:|kmemleak: [0-9]+ new suspected'
