#!/usr/bin/env python3
"""Render bench/results.json into docs/performance.md.

    scripts/perf-doc.py [RESULTS [OUTPUT]]    (defaults: bench/results.json, docs/performance.md;
                                               OUTPUT "-": standard output)

`make bench` (scripts/bench.sh) runs it once it has written the results; `make check`
(scripts/check.sh) renders the committed results into a temporary file and fails if
docs/performance.md differs, so the page can never go stale against bench/results.json.
Every figure of the page comes from the results; the prose below (how each figure is
measured, how to read it) holds for any run. The output depends on the results alone.
Results from before the timer figures of issue 24 (p99.9, the plain reader, the 64 slots and
the 64 timerfds, the timer ratios) render with those marked as not measured; the 64 slots'
row renders at whatever period the results have it (1ms before the 64 timerfds came, 10ms
since). Standard library only.
"""
import json
import os
import re
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The round-trip paths, like for like: the polling ones, the sleeping ones, then io_uring's
# inline NOP (no second task). Paths the results have beyond these follow, sorted.
ORDER = ["evnotify_ring_spin", "io_uring_sqpoll_spin", "evnotify_ring_eventfd",
         "evnotify_ioctl", "evnotify_kickfd", "spin_responder", "io_uring_sqpoll",
         "evnotify_ioctl_nopoll", "evnotify_kickfd_nopoll", "eventfd_threads", "pipe_threads",
         "io_uring_iowq", "io_uring"]
SLEEPING = ["evnotify_ioctl_nopoll", "evnotify_kickfd_nopoll", "eventfd_threads",
            "pipe_threads", "io_uring_iowq"]
# The p50 ratios, grouped like for like: (the group's heading on its first row, key).
RATIO_ROWS = [
    ("**ring vs ring** (both callers spin on a completion queue): ", "ring_vs_io_uring_sqpoll_cq"),
    ("**ring vs a user-space spinner** (not like for like: its caller waits on an eventfd): ",
     "ring_vs_spin_responder"),
    ("**ring, caller sleeps on an eventfd:** ", "ring_eventfd_vs_io_uring_sqpoll"),
    ("**polling vs polling:** ", "ioctl_vs_spin_responder"),
    (None, "kickfd_vs_spin_responder"),
    (None, "ioctl_vs_io_uring_sqpoll"),
    (None, "kickfd_vs_io_uring_sqpoll"),
    ("**sleeping vs sleeping:** ", "ioctl_nopoll_vs_eventfd"),
    (None, "kickfd_nopoll_vs_eventfd"),
    (None, "ioctl_nopoll_vs_io_uring_iowq"),
    (None, "kickfd_nopoll_vs_io_uring_iowq"),
    ("**hand-over vs inline:** ", "ioctl_nopoll_vs_io_uring"),
    (None, "kickfd_nopoll_vs_io_uring"),
    ("**polling vs sleeping** (not like for like): ", "ioctl_vs_eventfd"),
    (None, "kickfd_vs_eventfd"),
]


# The rows of 64 timers read together by the pinned reader: a timer on each of a channel's 64
# slots, and its peer, 64 timerfds; the quantiles of their ratio, as
# `ratio.timer.<quantile>_64slots_<period>` names it. The timer ratios' columns: (quantile,
# period), as `ratio.timer.<quantile>_<period>` names them.
SLOTS = "evnotify_64slots"
SLOTS_PEER = "timerfd_64"
MANY = [SLOTS, SLOTS_PEER]
MANY_RATIOS = ["p50", "p99"]
TIMER_RATIOS = [("p50", "1ms"), ("p99", "1ms"), ("p50", "10ms"), ("p99", "10ms")]


def us(ns):
    return f"{ns / 1e3:.1f}"


def ms(ns):
    return f"{ns / 1e6:.2f}"


def pct(x):
    return f"{x:.0%}"


def num(n):
    return f"{n:,.0f}"


def ratio_name(key):
    a, b = key.split("_vs_")
    return f"{a} / {'eventfd_threads' if b == 'eventfd' else b}"


def period_ns(p):
    """ "10ms" -> 10_000_000, for sorting the timer periods."""
    m = re.fullmatch(r"([0-9.]+)(ns|us|ms|s)", p)
    if not m:
        return float("inf")
    return float(m.group(1)) * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[m.group(2)]


def ratio_or_dash(x):
    return "-" if x is None else f"{x:.2f}"


def timer_ratio(ratios, table, q, p):
    """The module's lateness over timerfd's at quantile q and period p: from the results'
    ratios, or from the rows of `table` in results from before them, "-" if neither has it."""
    if ratios is not None:
        return ratio_or_dash(ratios[f"{q}_{p}"])
    try:
        return ratio_or_dash(table["evnotify"][p][q] / table["timerfd"][p][q])
    except (TypeError, KeyError, ZeroDivisionError):
        return "-"


def many_ratio(ratios, lat, q, p):
    """The 64 slots' lateness over the 64 timerfds' at quantile q and period p: from the
    results' ratios, or from the rows, "-" if neither has it."""
    key = f"{q}_64slots_{p}"
    if ratios is not None and key in ratios:
        return ratio_or_dash(ratios[key])
    try:
        return ratio_or_dash(lat[SLOTS][p][q] / lat[SLOTS_PEER][p][q])
    except (TypeError, KeyError, ZeroDivisionError):
        return "-"


def thread_start(w, rows):
    """The thread-start table: each row's p50 and p99, and evnotify's over io_uring's in the
    same cgroup; a line saying so for results from before it (issue 23)."""
    if not rows:
        w("Thread start: not measured (results from before issue 23).")
        return
    w("""Thread start, from nothing to the first answer (a channel opened, an eventfd attached, one
kick answered: its worker's thread created and moved into the caller's cgroups; against an
SQPOLL io_uring set up, its CQ eventfd registered, one NOP answered), in the root cgroup and
in a child cgroup, each start after 50 ms of quiet with the previous one's thread gone (so
the cgroup move pays the RCU grace period that a move right after another skips); and back
to back, each start as soon as the previous thread is gone:

| | p50 µs | p99 µs | p50 ÷ io_uring's |
| --- | ---: | ---: | ---: |""")
    for where in ["root", "cgroup", "cgroup_back_to_back"]:
        ours, peer = rows.get(f"evnotify_{where}"), rows.get(f"io_uring_sqpoll_{where}")
        label = where.replace("_back_to_back", ", back to back")
        for name, row in [(f"evnotify, {label}", ours), (f"io_uring SQPOLL, {label}", peer)]:
            if row is None:
                w(f"| {name} | - | - | - |")
                continue
            ratio = "-"
            if name.startswith("evnotify") and peer and peer["p50"]:
                ratio = f"{row['p50'] / peer['p50']:.2f}"
            w(f"| {name} | {us(row['p50'])} | {us(row['p99'])} | {ratio} |")


def timer_table(w, rows):
    """A table of timer rows: (source, period, its figures), p99.9 "-" where not measured."""
    w("""| timer | period | p50 | p90 | p99 | p99.9 | max | ticks |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |""")
    for src, p, l in rows:
        p999 = ms(l["p999"]) if "p999" in l else "-"
        w(f"| {src} | {p} | {ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} | {p999} | {ms(l['max'])} | "
          f"{l['ticks']} |")


def and_join(items):
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def met(ok):
    return "met" if ok else "**not met**"


INTRO = """\
<!-- Generated by scripts/perf-doc.py from bench/results.json: edit the script, not this page.
     make bench rewrites both; make check fails if this page differs from what the script renders. -->
# Performance

`make bench` boots the VM once and measures everything side by side in that one run (about
90 s here, with the kernel and tools built), so the ratios are fair. **The VM is
TCG-emulated** (no KVM here): absolute times are 10-50× those of real hardware and vary by
up to 40% from boot to boot, so only the ratios within a run carry over, and even those only
in direction. No factor below is promised for another host.

Every figure on this page comes from `bench/results.json`, the results of the last
`make bench` run, rendered by `scripts/perf-doc.py` (which `make bench` runs after it has
written them); figures of earlier runs, kept as the record of what was tried, are in
[design.md](design.md#what-was-tried-on-the-hot-path).

**It runs on the bench kernel**, not the test kernel: `scripts/kernel-bench.config` turns off
what the tests need and production kernels lack (lockdep, `DEBUG_ATOMIC_SLEEP`, list
debugging, hung-task detection, Rust debug assertions and overflow checks, fault
injection); it is built once, in its own cache directory, the first time (about 11 minutes
here). It is closer to a production kernel, not one: it keeps tinyconfig's choices
(`SLUB_TINY`, a periodic tick), which may move the open, close and memory figures. It has
cgroups and memory cgroups since issue 23 (results from before had neither), and since
issue 24 it is compiled with `-O2`, as distributions compile theirs, not tinyconfig's `-Os`
(at `-Os` the module's Rust code called the kernel crate's one-line wrappers instead of
inlining them), and boots with `tsc=reliable`: under TCG the clocksource watchdog sometimes
found the TSC skewed against the emulated HPET minutes into a boot and moved every clock read
to the HPET, a device access of several µs, part-way through a run (`results.json` records
the clocksource at the end, `vm.clocksource`). Under TCG, lockdep made every round trip several times slower, and the paths that
take more locks more so, enough to turn rankings around ([design.md](design.md#lockdep-and-the-bench-kernel)
has the two runs that showed it). `results.json` records which (`vm.lockdep`).

The bench kernel is **built by clang with `CONFIG_RUST_INLINE_HELPERS`** (`scripts/env.sh`:
clang of rustc's own LLVM, 22 here; the test kernel is gcc's, the debug kernel clang 19's):
clang inlines the kernel's C helpers into Rust code, as upstream offers for performance.
Built by gcc, every atomic, lock and reference count of the kernel crate is a call to a C
helper (`rust_helper_atomic_read`...), which C code such as io_uring's never pays. The C peers
are built by the same clang. `results.json` records the compiler and whether the helpers were
inlined (`vm.compiler`, `vm.rust_inline_helpers`; results from before they were recorded had a
gcc kernel), and "The last run" below says which; [design.md](design.md#the-bench-kernel-built-by-clang-with-rusts-c-helpers-inlined)
compares the last run on gcc's kernel with the first ones on clang's.
"""

MEASURES = """\
## What is measured

Each measure sets the module against what a user would pick instead:

- **Round trip** (hdrhistogram, {iters} each): send one event, block until the answer comes.
  The waiting end waits the same way (a non-blocking eventfd read, then `ppoll`, then the
  read) in every row but the two whose caller spins on a completion queue, so the rows differ
  only in who answers:
  - *rings*: *evnotify_ring_spin* publishes a kick on the channel's event ring with a store
    (entering the kernel only if the thread asked for a wake-up) and spins on the ring's
    completion queue; *io_uring_sqpoll_spin* does the same with an `IORING_SETUP_SQPOLL`
    ring (no eventfd registered), a NOP its SQ thread answers. Both responders are kernel
    threads pinned to the other CPU with the same spin limit as the rows below; on one CPU
    both callers yield (`sched_yield`) between looks, or each would hold the CPU until the
    scheduler's tick. *evnotify_ring_eventfd* publishes the same way and waits like the
    other rows, on the slot's eventfd, then reaps;
  - *polling* responders: the module's channel thread spinning up to its busy-poll limit
    (the `busypoll_ns` default, {busypoll} µs in this run, read from a new channel's stats),
    kicked by ioctl (*evnotify_ioctl*) or through a kick eventfd (*evnotify_kickfd*);
    *spin_responder*, a user thread that spins on a non-blocking eventfd read for the same
    limit before it blocks, and answers on a second eventfd; *io_uring_sqpoll*, a NOP through
    an `IORING_SETUP_SQPOLL` ring whose CQ eventfd (`IORING_REGISTER_EVENTFD`) the user blocks
    on, the SQ thread pinned like the channel thread (`IORING_SETUP_SQ_AFF`). Its
    `sq_thread_idle` is the same limit, rounded up to the whole millisecond the kernel takes
    (which it then rounds up to a scheduler tick, 4 ms at HZ=250): the SQ thread spins
    longer than the channel thread, never shorter;
  - *sleeping* responders: the module with busy polling off (*evnotify_ioctl_nopoll*,
    *evnotify_kickfd_nopoll*); two user threads ping-ponging over eventfds
    (*eventfd_threads*) or pipes (*pipe_threads*); *io_uring_iowq*, a NOP with
    `IOSQE_ASYNC`, answered by an io-wq worker thread (pinned with
    `IORING_REGISTER_IOWQ_AFF`) that sleeps between requests;
  - *io_uring*: a NOP submitted by `io_uring_enter` without SQPOLL. It completes inline in
    that syscall, with no second task and no wake-up: the floor of one syscall and one
    eventfd read, not a peer of a hand-over to another thread.

  Each path runs with both ends pinned to one CPU, and to different CPUs; the {npaths} paths take
  turns in 20 rounds, so slow phases of the emulator hit them alike. For each path with a
  responder task, *responder CPU* is that task's CPU time (`/proc/.../stat`, read before
  each batch and again once the task sleeps, so a spin after the last round trip counts)
  over the batch's wall time: the price of the row.
- **Busy-poll sweep:** the different-CPU ioctl round trip at limits {sweep} µs, with the
  thread's CPU share and the share of rounds a spin caught (`polled` against `wakeups` in
  the stats; one round per batch taken).
- **Timer lateness:** each tick's delivery against its ideal time, start + k·period, for a
  slot timer of the module and for a timerfd, at {periods} periods ({ticks} ticks each, in 4
  rounds that take turns), read two ways. The *pinned* reader is `SCHED_FIFO` (priority 50)
  and pinned to CPU 1 together with the channel's thread (and the timerfd's hrtimer, armed
  there), so the figure is the producer's lateness, not the reader's. The *plain* reader is
  what an ordinary program has: a thread of default policy and affinity (`SCHED_OTHER`, every
  CPU), reading a channel of its own whose thread is not pinned either, and a timerfd of its
  own armed wherever that thread runs; its figures add the reader's own wake-up. Each round
  of each row runs in a new reader thread, and all rows take turns in the same rounds. A read
  that returns n ticks counts n ticks, each against its own ideal time. Both kinds start at
  an absolute time, one period after a time taken just before the arming call
  (`EVNOTIFY_TIMER_ABSTIME`, `TFD_TIMER_ABSTIME`), so no figure depends on how long the call
  took. Two more rows tick 64 timers at once, at {many_period} ({many_ticks}), each read by the
  pinned reader with one `ppoll` on all 64 descriptors: *{slots}*, a timer on each of the 64
  slots of one channel (its thread pinned to CPU 1 too), each slot with its own eventfd; and
  its peer, *{peer}*, 64 timerfds. The timers of a row are started on one grid, in the same
  loop for both: each first tick one period after a time taken before the first arming call,
  so the 64 ticks of a period fall due together (results before issue 24's third stop started
  each timer one period after its own call, so that their ticks were spread over the few
  milliseconds the calls took, more of them for the module's slower call). The descriptors found readable are read one after the other (from a different
  one each time), each tick timed just after its own read; *ticks per wake-up* is the ticks
  read over the polls that found any.
- **Throughput:** kicks per second one channel absorbs (one ioctl per kick; coalesced: one
  wake-up handles many), next to io_uring NOPs per second (one `io_uring_enter` per NOP;
  and through SQPOLL, published one at a time with no syscall), each completion signalling
  an eventfd as each kick does; notifications per second user space reads; timer ticks per
  second at the 1 ms minimum.
- **Scaling:** the round trip (different CPUs, default settings) with {scaling} channels
  open and active (each has an eventfd and a 1 s timer, so its thread wakes every second),
  and the memory cost per channel (MemFree delta over {scaling_last} open channels, each
  thread started by a kick: mostly the thread's 16 KiB stack and task struct).
- **Shared workers** (issue 11: 100,000 channels on one machine): {workers} *leader* channels
  each start a worker (kernel thread) with their first kick, and every other channel shares
  one of them round robin (`Channel::share_worker`, channel *i* on worker *i* mod {workers}).
  Every channel gets an eventfd on slot 0 and one kick whose delivery is read back (1, no
  more), so all of them have been active; the bench then checks that the {workers} workers
  serve all the channels (`EVNOTIFY_IOC_WORKER`'s `channels`). The round trip (ioctl kick on
  slot 0, wait until its eventfd is readable, read; hdrhistogram) is measured on channel 0,
  whose worker is pinned to the other CPU as in the latency paths, with {shared_rows}
  channels open (the others open but idle): half of each row's round trips on the way up,
  half on the way down as the channels close, so each row samples two moments of the run.
  Memory: the growth of the kernel's own memory in `/proc/meminfo`, Slab + PageTables +
  Percpu + KernelStack, plus whatever VmallocUsed grew beyond KernelStack, from before the
  first channel to all {channels} open, attached and kicked, over {channels}; the same for
  {dedicated_n} channels with a worker each, and for {eventfd_n} eventfds alone (both
  measured first, and closed before the rest begins). Thread stacks are counted once: with
  `CONFIG_VMAP_STACK` they are vmalloc pages, in both KernelStack and VmallocUsed (unless
  reused from the kernel's stack cache, which VmallocUsed then does not see grow). The
  process's descriptor table, which two descriptors per channel grow, is part of a
  channel's cost (kmalloc'd, or vmalloc'd when too large). MemFree, the figure
  `bytes_per_channel` uses, also moves with user memory and the page cache, so it is
  recorded next to it but not used. The bench kernel has no lockdep, whose
  `DEBUG_SPINLOCK` and `DEBUG_MUTEXES` make every spinlock and mutex several times larger
  (in the channel's state, its file and its eventfd alike). Also timed: opening them all
  (open(2), eventfd(2), `EVNOTIFY_IOC_ATTACH` and, but for the leaders,
  `EVNOTIFY_IOC_SHARE_WORKER`, for each), the first kick to each and its read, and closing
  them all (the channels' descriptors; their eventfds are closed after, untimed). The VM
  gets 3 GiB and the module `max_channels=200000 max_user_channels=200000` for this
  (`bench.sh` sets `EVNOTIFY_VM_MEM` and `EVNOTIFY_MODULE_PARAMS`, which `vm.sh` passes to
  insmod); the bench, root in the guest, raises its `RLIMIT_NOFILE` to 2 per channel and
  some. `evnotify-bench shared [--channels N]` runs this part alone.

## The results file

Results go to `bench/results.json`: `rtt_ns.<path>.{{p50,p99,p999,...}}` (different CPUs),
`rtt_ns_by_pinning.{{same_cpu,cross_cpu}}.<path>` (with `thread_cpu_share`, the responder's),
`ratio.ioctl_vs_eventfd`, `ratio.kickfd_vs_eventfd` (different CPUs, default settings),
`ratio.{{same_cpu,cross_cpu}}.*` (p50 ratios: `{{ioctl,kickfd}}{{,_nopoll}}_vs_eventfd`,
`{{ioctl,kickfd}}_vs_io_uring_sqpoll`, `{{ioctl,kickfd}}_vs_spin_responder`,
`{{ioctl,kickfd}}_nopoll_vs_io_uring`, `{{ioctl,kickfd}}_nopoll_vs_io_uring_iowq`),
`busypoll_sweep[] {{limit_ns, p50_ns, p99_ns, thread_cpu_share, polled_share}}`,
`timer_lateness_ns.{{evnotify,timerfd}}.{{1ms,10ms}}.{{p50,p90,p99,p999,max,mean,ticks,early}}`
(pinned reader), `timer_lateness_ns.{{evnotify_64slots,timerfd_64}}.10ms` (the same, with `wakeups` and
`ticks_per_wakeup`), `timer_lateness_plain_ns.{{evnotify,timerfd}}.{{1ms,10ms}}` (plain reader, the
same fields), `ratio.{{timer,timer_plain}}.{{p50,p99}}_{{1ms,10ms}}` (the module's lateness over
timerfd's, pinned and plain reader), `ratio.timer.{{p50,p99}}_64slots_10ms` (the 64 slots' over the
64 timerfds'),
`throughput` (with `io_uring_nops_per_s`, `io_uring_sqpoll_nops_per_s`), `limits`,
`scaling[]`, `bytes_per_channel`, `thread_start_ns.{{evnotify,io_uring_sqpoll}}_{{root,cgroup}}`
(and `evnotify_cgroup_back_to_back`, `io_uring_sqpoll_cgroup_back_to_back`; each with the round trips' fields), `scaling_shared[] {{channels, rtt_p50_ns, rtt_p99_ns}}`,
`bytes_per_channel_shared`, `bytes_per_channel_dedicated`, `shared_workers {{workers,
channels, open_all_ns, kick_all_ns, close_all_ns, rtt_p50_ratio, rtt_p99_ratio,
memory.{{shared,dedicated,eventfd}}.{{channels, bytes_per_channel, memfree_bytes_per_channel,
delta_kib}}}}`. A host test checks that the JSON has the keys that `bench.sh` and the chart
read (`required()` in `user/evnotify-bench/src/report.rs`); `scripts/perf-doc.py` stops,
naming the key, at any key it reads that the results lack, but for the timer figures added
with the plain reader (p99.9, the plain reader's rows, the 64 slots and the 64 timerfds, the
timer ratios), which it shows as not measured in results from before them. The chart, `bench/chart.png`:

![latency distributions, busy-poll sweep, timer lateness and scaling](../bench/chart.png)
"""


def render(r):
    vm, lim, t = r["vm"], r["limits"], r["throughput"]
    pin = r["rtt_ns_by_pinning"]
    sc, cc = pin["same_cpu"], pin["cross_cpu"]
    rs, rc = r["ratio"]["same_cpu"], r["ratio"]["cross_cpu"]
    sweep = r["busypoll_sweep"]
    lat = r["timer_lateness_ns"]
    slots = lat.get(SLOTS)
    # The rows of 64 timers the results have, and their periods.
    many = {src: lat[src] for src in MANY if src in lat}
    many_periods = sorted({p for t in many.values() for p in t}, key=period_ns)
    sources = [src for src in lat if src not in MANY]
    periods = sorted(lat[sources[0]], key=period_ns)
    plain = r.get("timer_lateness_plain_ns")
    scaling, shared_rows = r["scaling"], r["scaling_shared"]
    s = r["shared_workers"]
    mem = s["memory"]
    n = s["channels"]
    out = []
    w = out.append

    w(INTRO)
    w(MEASURES.format(
        iters=num(vm["iters"]),
        npaths=len(cc),
        busypoll=f"{lim['busypoll_ns'] / 1e3:g}",
        sweep=and_join(f"{row['limit_ns'] / 1e3:g}" for row in sweep),
        periods=and_join(periods),
        slots=SLOTS,
        peer=SLOTS_PEER,
        many_period=and_join(many_periods) if many else "10ms",
        many_ticks=(and_join(sorted({num(l["ticks"] / 64) for t in many.values() for l in t.values()}))
                    + " ticks per timer in this run" if many else "not measured in this run"),
        ticks=and_join(num(lat[sources[0]][p]["ticks"]) for p in periods),
        scaling=and_join(num(row["channels"]) for row in scaling),
        scaling_last=num(scaling[-1]["channels"]),
        workers=s["workers"],
        shared_rows=and_join(num(row["channels"]) for row in shared_rows),
        channels=num(n),
        dedicated_n=num(mem["dedicated"]["channels"]),
        eventfd_n=num(mem["eventfd"]["channels"]),
    ))

    kernel = f"the bench kernel: {vm['kernel']} {'with' if vm['lockdep'] else 'without'} lockdep"
    if "clocksource" in vm:
        kernel += f", clocksource {vm['clocksource']} at the end of the run"
    # Results from before these were recorded: a gcc kernel, said as not recorded.
    kernel += f", built by {vm.get('compiler') or 'a compiler not recorded'}"
    inlined = vm.get("rust_inline_helpers")
    kernel += {True: " with Rust's C helpers inlined", False: " without Rust's C helpers inlined",
               None: " (whether Rust's C helpers were inlined: not recorded)"}[inlined]
    w(f"""## The last run

{vm['accel'].upper()} VM, {vm['cpus']} CPUs, {kernel}; {num(vm['iters'])} round trips per
path, interleaved in 20 rounds. Every table below comes from this one `make bench` run. Like
for like first: p50 of the module's round trip over the peer's (below 1: the module is
faster).

| p50 ratio, module / peer | same CPU | different CPUs |
| --- | ---: | ---: |""")
    # A results file from before a path existed has no row of it.
    keys = [k for _, k in RATIO_ROWS if k in rc] + sorted(set(rc) - {k for _, k in RATIO_ROWS})
    heads = {k: g for g, k in RATIO_ROWS}
    for k in keys:
        w(f"| {heads.get(k) or ''}{ratio_name(k)} | {rs[k]:.2f} | {rc[k]:.2f} |")

    w("""
All rows (round trip in µs; *responder CPU*: share of one CPU used by the task that answers):

| path | pinning | p50 | p90 | p99 | p99.9 | max | responder CPU |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |""")
    for name, rows in (("same cpu", sc), ("cross cpu", cc)):
        for path in [p for p in ORDER if p in rows] + sorted(set(rows) - set(ORDER)):
            h = rows[path]
            cpu = pct(h["thread_cpu_share"]) if "thread_cpu_share" in h else "-"
            w(f"| {path} | {name} | {us(h['p50'])} | {us(h['p90'])} | {us(h['p99'])} | "
              f"{us(h['p999'])} | {us(h['max'])} | {cpu} |")

    w("""
Busy-poll limit sweep (ioctl round trip, different CPUs):

| limit µs | p50 µs | p99 µs | thread CPU | kicks caught by a spin |
| ---: | ---: | ---: | ---: | ---: |""")
    for row in sweep:
        w(f"| {row['limit_ns'] / 1e3:g} | {us(row['p50_ns'])} | {us(row['p99_ns'])} | "
          f"{pct(row['thread_cpu_share'])} | {pct(row['polled_share'])} |")

    w("""
Timer lateness per tick, ms, pinned reader (against start + k·period):
""")
    rows = [(src, p, lat[src][p]) for p in periods for src in sources]
    rows += [(src, p, many[src][p]) for p in many_periods for src in many if p in many[src]]
    timer_table(w, rows)
    notes = []
    if any("p999" not in l for _, _, l in rows):
        notes.append("p99.9: not measured in this run.")
    for src, what in ((SLOTS, "64 slots of one channel"), (SLOTS_PEER, f"64 timerfds, the peer of {SLOTS}")):
        if src not in many:
            notes.append(f"{src} ({what}): not measured in this run.")
            continue
        for p in sorted(many[src], key=period_ns):
            l = many[src][p]
            notes.append(f"{src} at {p}: {num(l['ticks'])} ticks in all, {num(l['ticks'] / 64)} per timer; "
                         f"{l['ticks_per_wakeup']:.1f} ticks read per wake-up of the reader ({num(l['wakeups'])} wake-ups).")
    w("\n" + " ".join(notes))
    if plain:
        w("""
Timer lateness per tick, ms, plain reader (a normal thread, not pinned; its channel's thread
not pinned either):
""")
        timer_table(w, [(src, p, plain[src][p]) for p in sorted(plain[next(iter(plain))], key=period_ns)
                        for src in plain])
    else:
        w("\nTimer lateness with the plain reader: not measured in this run.")
    w("""
Lateness, the module's over timerfd's, read the same way (below 1: the module is more
punctual):

| reader | """ + " | ".join(f"{q} {p}" for q, p in TIMER_RATIOS) + """ |
| --- |""" + " ---: |" * len(TIMER_RATIOS))
    for name, key, table in (("pinned", "timer", lat), ("plain", "timer_plain", plain)):
        if key not in r["ratio"] and table:
            name += " (from the rows above)"
        w(f"| {name} | " + " | ".join(timer_ratio(r["ratio"].get(key), table, q, p) for q, p in TIMER_RATIOS) + " |")
    both = [p for p in many_periods if all(p in many.get(src, {}) for src in MANY)]
    if both:
        w(f"\nThe 64 slots' lateness over the 64 timerfds' ({SLOTS} / {SLOTS_PEER}, pinned reader): "
          + "; ".join(", ".join(f"{q} {many_ratio(r['ratio'].get('timer'), lat, q, p)}" for q in MANY_RATIOS)
                      + f" at {p}" for p in both) + ".")
    else:
        lacking = and_join(src for src in MANY if src not in many) or f"{SLOTS} and {SLOTS_PEER} at one period"
        w(f"\nThe 64 slots against the 64 timerfds: not measured in this run (no {lacking} row to compare).")

    w(f"""
Throughput: {num(t['kicks_per_s'])} kicks/s absorbed (one ioctl each; {t['kicks_per_wakeup']:.1f} kicks per thread
wake-up); io_uring {num(t['io_uring_nops_per_s'])} NOPs/s (one `io_uring_enter` each), {num(t['io_uring_sqpoll_nops_per_s'])} NOPs/s
through SQPOLL; {num(t['notifications_read_per_s'])} notifications/s read ({t['notifications_per_read']:.1f} per read); {num(t['timer_ticks_per_s'])} timer
ticks/s at the 1 ms minimum period.

Scaling, a worker per channel (round trip, different CPUs, with N channels open and active):

| channels | p50 µs | p99 µs |
| ---: | ---: | ---: |""")
    for row in scaling:
        w(f"| {num(row['channels'])} | {us(row['rtt_p50_ns'])} | {us(row['rtt_p99_ns'])} |")
    w(f"""
Memory: {num(r['bytes_per_channel'])} bytes per open channel with a worker each (MemFree delta over
{num(scaling[-1]['channels'])} channels, each with its thread started).
""")
    thread_start(w, r.get("thread_start_ns"))
    w(f"""
**Shared workers** (issue 11; {num(n)} channels on {s['workers']} kernel threads, each channel with an
eventfd and one kick delivered; the round trip on channel 0, whose worker is pinned to the
other CPU, the rest open and idle):

| channels | p50 µs | p99 µs |
| ---: | ---: | ---: |""")
    for row in shared_rows:
        w(f"| {num(row['channels'])} | {us(row['rtt_p50_ns'])} | {us(row['rtt_p99_ns'])} |")
    shared_b = mem["shared"]["bytes_per_channel"]
    eventfd_b = mem["eventfd"]["bytes_per_channel"]
    dedicated_b = mem["dedicated"]["bytes_per_channel"]
    w(f"""
| per channel (kernel memory growth: Slab, PageTables, Percpu, stacks) | bytes | over |
| --- | ---: | ---: |
| on {s['workers']} shared workers (`bytes_per_channel_shared`), its eventfd included | {num(r['bytes_per_channel_shared'])} | {num(mem['shared']['channels'])} channels |
| with a worker each (`bytes_per_channel_dedicated`) | {num(r['bytes_per_channel_dedicated'])} | {num(mem['dedicated']['channels'])} channels |
| an eventfd alone (part of the above) | {num(eventfd_b)} | {num(mem['eventfd']['channels'])} eventfds |

Opening all {num(n)} (open, eventfd, attach, share): {s['open_all_ns'] / 1e9:.1f} s; the first kick to each and its
read: {s['kick_all_ns'] / 1e9:.1f} s; closing all {num(n)} channels: {s['close_all_ns'] / 1e9:.1f} s.
""")

    # --- How to read it: the figures of this run, and what they say. -------------------
    p50r, p99r = s["rtt_p50_ratio"], s["rtt_p99_ratio"]
    w(f"""## How to read it

Against issue 11's goals: at {num(n)} channels the round trip's p50 is {p50r:.2f}× the
one-channel figure and its p99 {p99r:.2f}× (goal: at most 1.5×: {met(max(p50r, p99r) <= 1.5)}); a
channel on a shared worker costs **{num(shared_b)} bytes** with its eventfd, {num(shared_b - eventfd_b)} without
(goal: at most 4 KiB: {met(shared_b <= 4096)}; the moonshot, 1 KiB: {met(shared_b <= 1024)}), against {num(dedicated_b)}
with a thread of its own.
""")
    first, last = shared_rows[:-1], shared_rows[-1]
    lo = min(x["rtt_p50_ns"] for x in first)
    hi = max(x["rtt_p50_ns"] for x in first)
    top99 = max(shared_rows, key=lambda x: x["rtt_p99_ns"])
    slab = mem["shared"]["delta_kib"]["Slab"]
    w(f"""- **Shared workers:** up to {num(first[-1]['channels'])} channels the p50 is {us(lo)}-{us(hi)} µs; at
  {num(last['channels'])} it is {us(last['rtt_p50_ns'])} µs, {p50r:.2f}× the one-channel figure. A worker finds work on its
  run queue, so idle channels are never looked at on the round trip; what grows with the
  count is the working set around it ({slab / 1024:.0f} MiB of slab for {num(n)} channels and their
  eventfds), which this run does not take apart. The p99s
  ({us(min(x['rtt_p99_ns'] for x in shared_rows))}-{us(top99['rtt_p99_ns'])} µs, the highest at {num(top99['channels'])} channel{'' if top99['channels'] == 1 else 's'}) are tails, which under TCG
  are the emulator's (below).
- **Memory.** Most of a shared channel is its state: 64 slots of 16 bytes (notify eventfd,
  pending count), the counters, the locks, its alarm, and its file. Signals, timers and echo
  deadlines (64 bytes a slot) and kick eventfds (8) are allocated only by a channel's first
  `SIGNAL`, `TIMER` or `KICKFD`, so a channel that uses them costs about 4.6 KB more. With a
  thread each, a channel costs {num(dedicated_b)} bytes here, nearly all of it the thread's 16 KiB
  stack and task struct.""")

    io, spin, sq = cc["evnotify_ioctl"], cc["spin_responder"], cc["io_uring_sqpoll"]
    w(f"""- **The polled round trip** across CPUs takes {us(io['p50'])} µs at p50 here,
  {rc['ioctl_vs_spin_responder']:.2f}× the user spinner and {rc['ioctl_vs_io_uring_sqpoll']:.2f}× SQPOLL, and the channel thread spends
  {pct(io['thread_cpu_share'])} of a CPU on it (the spinner {pct(spin['thread_cpu_share'])}). A channel out of work spins for its own next
  kick, which the kick's ioctl pokes, so the answer is usually there at the caller's first
  look at its eventfd; [design.md](design.md#the-polled-round-trip-since-shared-workers) has
  the profile and each step's measure.""")

    handovers = {p: cc[p]["p50"] for p in cc if p != "io_uring"}
    fastest = min(handovers, key=handovers.get)
    if fastest == "io_uring_sqpoll":
        fast = "the fastest hand-over here"
    else:
        fast = f"{fastest} is faster still, {us(handovers[fastest])} µs"
    same = (f"On the application's own CPU the woken user waits for the spinning SQ thread\n"
            f"  ({us(sc['io_uring_sqpoll']['p50'])} µs, {rs['ioctl_vs_io_uring_sqpoll']:.2f}× for the module): a configuration to avoid. The\n"
            f"  channel thread gives way to the woken reader (`single_task_running()`) instead."
            if rs["ioctl_vs_io_uring_sqpoll"] < 0.5 else
            f"On the application's own CPU it takes {us(sc['io_uring_sqpoll']['p50'])} µs\n"
            f"  ({rs['ioctl_vs_io_uring_sqpoll']:.2f}× for the module).")
    w(f"""- **SQPOLL.** On different CPUs io_uring's SQPOLL round trip takes {us(sq['p50'])} µs ({fast};
  the module's polled one is {rc['ioctl_vs_io_uring_sqpoll']:.2f}× it, the user spinner {spin['p50'] / sq['p50']:.2f}×). {same}""")

    cheapest = min(SLEEPING, key=lambda p: sc[p]["p50"])
    if cheapest.startswith("evnotify_"):
        cheap = "the cheapest of the sleeping paths"
    else:
        cheap = f"not the cheapest of the sleeping paths ({cheapest}: {us(sc[cheapest]['p50'])} µs)"
    g1, g2 = rs["ioctl_nopoll_vs_eventfd"], rc["ioctl_nopoll_vs_eventfd"]
    goal = {(True, True): "holds on one CPU and across", (True, False): "holds on one CPU, not across",
            (False, True): "holds across CPUs, not on one", (False, False): "holds on neither"}[(g1 <= 0.9, g2 <= 0.9)]
    iq_s, iq_c = sc["io_uring_iowq"], cc["io_uring_iowq"]
    shares = (f"its CPU share ({pct(iq_s['thread_cpu_share'])} on one CPU, {pct(iq_c['thread_cpu_share'])} across) suggests it runs on the\n"
              f"  submitter's CPU despite `IORING_REGISTER_IOWQ_AFF`, which would spare it the cross-CPU\n"
              f"  wake-up. Not analysed further."
              if abs(iq_s["thread_cpu_share"] - iq_c["thread_cpu_share"]) < 0.1 else
              f"its CPU share is {pct(iq_s['thread_cpu_share'])} on one CPU, {pct(iq_c['thread_cpu_share'])} across.")
    w(f"""- **Without polling**, a hand-over costs a wake-up: on one CPU the module's is {cheap}
  ({g1:.2f}× the eventfd ping-pong, which needs two), across CPUs {g2:.2f}× it (issue 10's goal
  of 0.9× {goal}). io_uring's io-wq worker answers in {us(iq_s['p50'])} µs on one CPU and
  {us(iq_c['p50'])} µs across; the module takes {rc['ioctl_nopoll_vs_io_uring_iowq']:.2f}× as long across CPUs; {shares}""")

    inline = [sc["io_uring"]["p50"], cc["io_uring"]["p50"]]
    near = min(min(sc[p]["p50"] for p in SLEEPING) / sc["io_uring"]["p50"],
               min(cc[p]["p50"] for p in SLEEPING) / cc["io_uring"]["p50"])
    factors = f"{rs['ioctl_nopoll_vs_io_uring']:.1f}× on one CPU, {rc['ioctl_nopoll_vs_io_uring']:.1f}× on two"
    nothing = (f"Nothing that hands work to another thread comes near it without polling (the module: {factors})."
               if near > 2 else f"The module without polling takes {factors} as long.")
    w(f"""- **io_uring without SQPOLL** completes a NOP inside `io_uring_enter` ({us(min(inline))}-{us(max(inline))} µs): no
  hand-over to another task, no wake-up. {nothing}""")

    off = [row for row in sweep if row["limit_ns"] == 0]
    on = [row for row in sweep if row["limit_ns"] != 0]
    caught = "; ".join(f"{row['limit_ns'] / 1e3:g} µs caught {pct(row['polled_share'])} ({us(row['p50_ns'])} µs p50, "
                       f"{pct(row['thread_cpu_share'])} of a CPU)" for row in on)
    offtext = f" With polling off the same round trip takes {us(off[0]['p50_ns'])} µs." if off else ""
    w(f"""- **When polling engages.** A spin catches the next kick only if it comes within the
  window: the gap the thread sees is user space waking up, reading and kicking again. Share of
  kicks a spin caught, by limit: {caught}.{offtext}""")

    def lat_pair(src, p):
        l = lat[src][p]
        return f"{ms(l['p50'])} / {ms(l['p99'])} ms"
    others = [x for x in sources if x != "evnotify"]
    parts = "; ".join(f"{lat_pair('evnotify', p)} at {p}" + "".join(f" against {o}'s {lat_pair(o, p)}" for o in others)
                      for p in periods)
    early = sum(lat[src][p]["early"] for src in sources for p in periods)
    early += sum(l["early"] for t in (plain or {}).values() for l in t.values())
    early += sum(l["early"] for t in many.values() for l in t.values())
    if plain:
        tp = r["ratio"].get("timer_plain")
        plain_text = ("With the plain reader the module's p99 is "
                      + "; ".join(f"{timer_ratio(tp, plain, 'p99', p)}× timerfd's at {p}" for p in periods) + ".")
    else:
        plain_text = "The plain reader was not measured in this run."
    if slots:
        peer = many.get(SLOTS_PEER, {})

        def slots_at(p):
            l = slots[p]
            text = f"{ms(l['p50'])} / {ms(l['p99'])} ms at {p} ({l['ticks_per_wakeup']:.1f} ticks per wake-up)"
            if p in peer:
                o = peer[p]
                x = [many_ratio(r['ratio'].get('timer'), lat, q, p) for q in MANY_RATIOS]
                text += (f" against the 64 timerfds' {ms(o['p50'])} / {ms(o['p99'])} ms ({o['ticks_per_wakeup']:.1f}), "
                         + " / ".join(f"{v}×" if v != "-" else "-" for v in x) + " theirs")
            return text
        slots_text = ("With a timer on all 64 slots of one channel, p50 / p99 "
                      + "; ".join(slots_at(p) for p in sorted(slots, key=period_ns)) + ".")
        if not all(p in peer for p in slots):
            slots_text += (f" This run has no {SLOTS_PEER} row at that period to compare with, so the figure"
                           " does not tell the module's lateness from the reader's own.")
    else:
        slots_text = "The 64 slots were not measured in this run."
    w(f"""- **Timers run on an hrtimer**; lateness p50 / p99, pinned reader: {parts}. A lone tick is signalled
  from the alarm's own interrupt, as timerfd wakes its reader, and each read of the slot's
  eventfd restarts the alarm on the reader's CPU and grants it its re-arms, as a timerfd is
  re-armed by its reader: so the reader is woken where it sleeps, and the channel's thread is
  needed only for catch-ups and when nothing reads. In this VM a wake-up sent to another CPU
  from the callback can stall it for a host timeslice, about 2 ms, which is what the plain
  reader's tail was before (traced: [design.md](design.md#the-timers-tail-for-a-plain-reader)).
  {plain_text} {slots_text} {'No tick came early.' if early == 0 else f'{num(early)} ticks came early.'}
- **Tails** (p99 and beyond) are the emulator's: host-thread scheduling of the vCPUs.
""")
    return "\n".join(out)


WIDTH = 92


def reflow(text):
    """Fills each paragraph and list item to WIDTH columns (the figures make lines uneven);
    tables, headings, images, comments and code are left as they are."""
    out, item = [], None

    def flush():
        nonlocal item
        if item:
            indent, first, words = item
            out.append(textwrap.fill(" ".join(words), WIDTH, initial_indent=indent + first,
                                     subsequent_indent=indent + " " * len(first),
                                     break_long_words=False, break_on_hyphens=False))
        item = None

    verbatim = False
    for line in text.split("\n"):
        stripped = line.strip()
        if line.startswith("<!--"):
            verbatim = True
        if verbatim or not stripped or stripped[0] in "|#!" or stripped.startswith("```"):
            flush()
            out.append(line)
            if "-->" in line:
                verbatim = False
            continue
        bullet = re.match(r"( *)(- )(.*)", line)
        if bullet:
            flush()
            item = (bullet.group(1), "- ", [bullet.group(3)])
        elif item and re.match(re.escape(item[0] + " " * len(item[1])) + r"\S", line):
            item[2].append(stripped)
        else:
            flush()
            lead = line[:len(line) - len(line.lstrip())]
            item = (lead, "", [stripped])
    flush()
    return "\n".join(out)


def main(argv):
    if len(argv) > 3 or any(a in ("-h", "--help") for a in argv[1:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src = argv[1] if len(argv) > 1 else os.path.join(REPO, "bench", "results.json")
    dst = argv[2] if len(argv) > 2 else os.path.join(REPO, "docs", "performance.md")
    with open(src, encoding="utf-8") as f:
        results = json.load(f)
    try:
        text = reflow(render(results))
    except (KeyError, IndexError, TypeError) as e:
        print(f"perf-doc.py: {src} lacks what the page shows ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    if dst == "-":
        sys.stdout.write(text)
    else:
        tmp = dst + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
