#!/usr/bin/env bash
# make bench: one VM boot runs every measurement side by side; the results go to
# bench/results.json, the chart to bench/chart.png, and a table to stdout.
# It reports and never fails on a slow run (only on a broken one), with vm.sh's exit status.
#   TIMEOUT_SECS (600)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"
. "$here/lib.sh"
mkdir -p "$repo/bench"
log=$repo/build/bench.log
# TIMEOUT_SECS: the VM's part took about 30 s here; options given to bench.sh (passed on to
# vm.sh) come after this one and win.
set +e
EVNOTIFY_OUT=$repo/build/vm-bench "$here/vm.sh" --timeout "${TIMEOUT_SECS:-600}" "$@" -- evnotify-bench run | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
	fault=$(vm_fault "$rc")
	echo "bench: the VM run failed (vm.sh exit $rc${fault:+: $fault})" >&2
	exit "$rc"
fi
tr -d '\r' <"$log" | sed -n '/^--- evnotify-bench results ---$/,/^--- end ---$/p' | sed '1d;$d' >"$repo/bench/results.json"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$repo/bench/results.json"
# The binary build.sh just made for the VM (static, so it runs here too).
"$repo/user/target/$RUST_TARGET/release/evnotify-bench" chart "$repo/bench/results.json" "$repo/bench/chart.png"
python3 - "$repo/bench/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
us = lambda ns: f"{ns/1e3:.1f}"
print(f"\nRound trip, µs ({r['vm']['accel'].upper()} VM, {r['vm']['cpus']} CPUs, {r['vm']['iters']} round trips each)\n")
print("| path | pinning | p50 | p90 | p99 | p99.9 | max | thread CPU |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for pin in ("same_cpu", "cross_cpu"):
    for path, h in r["rtt_ns_by_pinning"][pin].items():
        cpu = f"{h['thread_cpu_share']:.0%}" if "thread_cpu_share" in h else "-"
        print(f"| {path} | {pin.replace('_', ' ')} | {us(h['p50'])} | {us(h['p90'])} | {us(h['p99'])} | {us(h['p999'])} | {us(h['max'])} | {cpu} |")
print("\n| p50 ratio | same CPU | different CPUs |\n| --- | ---: | ---: |")
for k in ("ioctl_vs_eventfd", "kickfd_vs_eventfd", "ioctl_nopoll_vs_eventfd", "kickfd_nopoll_vs_eventfd"):
    print(f"| {k} | {r['ratio']['same_cpu'][k]:.2f} | {r['ratio']['cross_cpu'][k]:.2f} |")
t = r["throughput"]
print(f"\nThroughput: {t['kicks_per_s']:.0f} kicks/s absorbed ({t['kicks_per_wakeup']:.1f} kicks per thread wake-up); "
      f"{t['notifications_read_per_s']:.0f} notifications/s read ({t['notifications_per_read']:.1f} per read); "
      f"{t['timer_ticks_per_s']:.0f} timer ticks/s at the 1 ms minimum period")
print("\n| channels | p50 µs | p99 µs |\n| ---: | ---: | ---: |")
for row in r["scaling"]:
    print(f"| {row['channels']} | {us(row['rtt_p50_ns'])} | {us(row['rtt_p99_ns'])} |")
print(f"\nMemory: {r['bytes_per_channel']} bytes per open channel (MemFree delta over 1024 channels)")
PY
