#!/usr/bin/env bash
# make bench: one VM boot runs every measurement side by side (the module, user-space peers,
# io_uring, timerfd) and 100,000 channels on shared workers; the results go to
# bench/results.json, the chart to bench/chart.png, a table to stdout, and the results rendered
# into docs/performance.md (scripts/perf-doc.py). It runs on the bench kernel: the test kernel
# without its debugging checks.
# It reports and never fails on a slow run (only on a broken one), with vm.sh's exit status.
#   TIMEOUT_SECS (600)
#   EVNOTIFY_MODULE_PARAMS (max_channels=200000 max_user_channels=200000)
#   EVNOTIFY_VM_MEM (3072)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# The bench kernel: the test kernel without lockdep and the other checks (kernel-bench.config),
# built once beside it; not the debug kernel, whatever the environment says.
export EVNOTIFY_BENCH=1
unset EVNOTIFY_DEBUG
. "$here/env.sh"
. "$here/lib.sh"
lock_checkout
mkdir -p "$repo/bench" "$repo/build"
log=$repo/build/bench.log
# TIMEOUT_SECS: the VM's part took about 90 s here; options given to bench.sh (passed on to
# vm.sh) come after this one and win.
# The shared-workers part opens 100,000 channels: the module's limits (4096 and 1024 by
# default) are set only at load time, and the channels need memory (docs/performance.md).
export EVNOTIFY_MODULE_PARAMS=${EVNOTIFY_MODULE_PARAMS-max_channels=200000 max_user_channels=200000}
export EVNOTIFY_VM_MEM=${EVNOTIFY_VM_MEM:-3072}
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
ms = lambda ns: f"{ns/1e6:.2f}"
pct = lambda x: f"{x:.0%}"
# Like for like: the polling paths, the sleeping ones, then io_uring's inline NOP (no second task).
order = ["evnotify_ioctl", "evnotify_kickfd", "spin_responder", "io_uring_sqpoll",
         "evnotify_ioctl_nopoll", "evnotify_kickfd_nopoll", "eventfd_threads", "pipe_threads",
         "io_uring_iowq", "io_uring"]
print(f"\nRound trip, µs ({r['vm']['accel'].upper()} VM, kernel {r['vm']['kernel']}{' with lockdep' if r['vm']['lockdep'] else ''}, {r['vm']['cpus']} CPUs, clocksource {r['vm'].get('clocksource', '?')}, {r['vm']['iters']} round trips each; "
      f"busy-poll limit {r['limits']['busypoll_ns']/1e3:.0f} µs, SQ thread idle {r['limits']['sq_thread_idle_ms']} ms)\n")
print("| path | pinning | p50 | p90 | p99 | p99.9 | max | responder CPU |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for pin in ("same_cpu", "cross_cpu"):
    rows = r["rtt_ns_by_pinning"][pin]
    for path in order + sorted(set(rows) - set(order)):
        h = rows[path]
        cpu = pct(h["thread_cpu_share"]) if "thread_cpu_share" in h else "-"
        print(f"| {path} | {pin.replace('_', ' ')} | {us(h['p50'])} | {us(h['p90'])} | {us(h['p99'])} | {us(h['p999'])} | {us(h['max'])} | {cpu} |")
print("\n| p50 ratio | same CPU | different CPUs |\n| --- | ---: | ---: |")
for k in r["ratio"]["cross_cpu"]:
    print(f"| {k} | {r['ratio']['same_cpu'][k]:.2f} | {r['ratio']['cross_cpu'][k]:.2f} |")
print("\nBusy-poll limit sweep (ioctl round trip, different CPUs)\n")
print("| limit µs | p50 µs | p99 µs | thread CPU | kicks caught by a spin |\n| ---: | ---: | ---: | ---: | ---: |")
for row in r["busypoll_sweep"]:
    print(f"| {row['limit_ns']/1e3:.0f} | {us(row['p50_ns'])} | {us(row['p99_ns'])} | {pct(row['thread_cpu_share'])} | {pct(row['polled_share'])} |")
print("\nTimer lateness per tick, ms (against start + k·period)\n")
for reader, key in (("pinned", "timer_lateness_ns"), ("plain", "timer_lateness_plain_ns")):
    print(f"| timer ({reader} reader) | period | p50 | p90 | p99 | p99.9 | max | ticks |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for period in ("1ms", "10ms"):
        # The rows of 64 timers (one period each) after the others.
        for src, l in sorted(r[key].items(), key=lambda s: s[0] in ("evnotify_64slots", "timerfd_64")):
            if period in l:
                l = l[period]
                print(f"| {src} | {period} | {ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} | {ms(l['p999'])} | {ms(l['max'])} | {l['ticks']} |")
    print()
for src in ("evnotify_64slots", "timerfd_64"):
    print(f"{src}: {r['timer_lateness_ns'][src]['10ms']['ticks_per_wakeup']:.1f} ticks read per wake-up")
for key in ("timer", "timer_plain"):
    print(f"ratio.{key} (module / timerfd): " + ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in r["ratio"][key].items()))
t = r["throughput"]
print(f"\nThroughput: {t['kicks_per_s']:.0f} kicks/s absorbed ({t['kicks_per_wakeup']:.1f} kicks per thread wake-up); "
      f"io_uring {t['io_uring_nops_per_s']:.0f} NOPs/s (one io_uring_enter each), {t['io_uring_sqpoll_nops_per_s']:.0f} NOPs/s with SQPOLL; "
      f"{t['notifications_read_per_s']:.0f} notifications/s read ({t['notifications_per_read']:.1f} per read); "
      f"{t['timer_ticks_per_s']:.0f} timer ticks/s at the {t['timer_min_period_ns']/1e6:g} ms minimum period")
print("\n| channels | p50 µs | p99 µs |\n| ---: | ---: | ---: |")
for row in r["scaling"]:
    print(f"| {row['channels']} | {us(row['rtt_p50_ns'])} | {us(row['rtt_p99_ns'])} |")
print(f"\nMemory: {r['bytes_per_channel']} bytes per open channel (MemFree delta over 1024 channels, each with its thread started)")
s = r["shared_workers"]
n = s["channels"]
print(f"\nShared workers: {n:,} channels on {s['workers']} kernel threads, each with an eventfd and one "
      f"kick delivered; round trip on one of them (its worker on the other CPU), the rest idle\n")
print("| channels | p50 µs | p99 µs |\n| ---: | ---: | ---: |")
for row in r["scaling_shared"]:
    print(f"| {row['channels']:,} | {us(row['rtt_p50_ns'])} | {us(row['rtt_p99_ns'])} |")
print(f"\nAt {n:,} against 1: p50 {s['rtt_p50_ratio']:.2f}x, p99 {s['rtt_p99_ratio']:.2f}x (goal: at most 1.5x)")
print(f"Open all {n:,}: {s['open_all_ns']/1e9:.1f} s; first kick and its read, all: {s['kick_all_ns']/1e9:.1f} s; "
      f"close all: {s['close_all_ns']/1e9:.1f} s")
what = {"shared": "per channel on shared workers", "dedicated": "per channel with a worker each",
        "eventfd": "per eventfd alone"}
for kind, m in s["memory"].items():
    goal = "; goal: at most 4,096" if kind == "shared" else ""
    print(f"Memory: {m['bytes_per_channel']:,} bytes {what.get(kind, kind)}, over {m['channels']:,} "
          f"(kernel memory growth, {'lockdep' if r['vm']['lockdep'] else 'no lockdep'}; MemFree's: {m['memfree_bytes_per_channel']:,}{goal})")
PY
# The page of the results: every figure of docs/performance.md comes from results.json, and
# check.sh fails if the committed page is not what these results render into.
"$here/perf-doc.py" "$repo/bench/results.json" "$repo/docs/performance.md"
echo "bench: bench/results.json rendered into docs/performance.md"
