#!/usr/bin/env bash
# make profile: where the polling round trips spend their instructions, on the bench kernel.
# Under TCG the guest has no PMU to sample; a TCG plugin (bench/probes/tcg-insns.c) counts every
# guest instruction each vCPU executes instead, exactly. `evnotify-bench profile` runs each
# polling path's round trips between two marks (the ring's spinning caller, io_uring SQPOLL's,
# the polled ioctl; caller on CPU 0, responder on CPU 1), and scripts/profile.py writes the
# instructions per round trip of each function, per CPU, to build/profile/report.txt.
# A spinning side's count includes its spin, which lasts as long as the other side makes it
# wait: compare the functions that do the work, not the totals. The plugin slows the guest
# several times; the figures are counts, not times (the p50 each path prints is the plugin's:
# without it, `evnotify-bench profile` compares module builds loaded in turn in one boot).
#   PROFILE_ITERS (20000): round trips per path
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=$repo/build/profile
# The bench kernel (as bench.sh's), whatever the environment says; vm.sh takes the checkout's
# lock for its run.
export EVNOTIFY_BENCH=1
unset EVNOTIFY_DEBUG
. "$here/env.sh"
mkdir -p "$out"
rm -f "$out/counts" "$out/report.txt"
gcc -O2 -Wall -Wextra -shared -fPIC -o "$out/tcg-insns.so" "$repo/bench/probes/tcg-insns.c"
EVNOTIFY_QEMU_PLUGIN="$out/tcg-insns.so,out=$out/counts" EVNOTIFY_OUT=$repo/build/vm-profile \
	"$here/vm.sh" --timeout 1200 -- evnotify-bench profile --iters "${PROFILE_ITERS:-20000}" |
	tee "$out/run.log"
kdir=$("$here/setup.sh")
python3 "$here/profile.py" "$out/run.log" "$out/counts" "$kdir/System.map" "$repo/rust_evnotify.ko" \
	"$repo/user/target/$RUST_TARGET/release/evnotify-bench" |
	tee "$out/report.txt"
