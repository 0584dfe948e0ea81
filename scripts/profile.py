#!/usr/bin/env python3
"""The report of scripts/profile.sh: guest instructions per round trip, per function and vCPU.

    profile.py RUN_LOG COUNTS SYSTEM_MAP MODULE_KO BENCH_BINARY [TOP]

RUN_LOG is `evnotify-bench profile`'s output (the marks of each path, the kernel's and the
module's text addresses), COUNTS the TCG plugin's (bench/probes/tcg-insns.c), SYSTEM_MAP and
MODULE_KO the kernel's and module's symbols, BENCH_BINARY the caller's. Each block's
instructions, its entries (under TCG each block entered costs a dispatch, dearer than an
instruction) and its instructions of the kinds TCG makes dearer (returns, atomic
read-modify-writes and full fences, interrupt-flag changes, clock reads) go to the function it
starts in.
"""
import bisect
import re
import subprocess
import sys
from collections import defaultdict


def kernel_symbols(system_map, stext):
    syms = []
    for line in open(system_map):
        addr, kind, name = line.split()[:3]
        if kind in "tTwW":
            syms.append((int(addr, 16), name))
    base = dict((n, a) for a, n in syms)["_stext"]
    return [(a - base + stext, n) for a, n in syms]


def module_symbols(ko, text):
    # objdump -t: "offset flags section size name", .text offsets relative to the section.
    out = subprocess.run(["objdump", "-tC", ko], check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) .{6}F \.text\t[0-9a-f]+ (.*)$", line)
        if m:
            name = re.sub(r"::h[0-9a-f]{16}$", "", m.group(2))
            syms.append((int(m.group(1), 16) + text, "[evnotify] " + name))
    return syms


def user_symbols(binary, mark):
    out = subprocess.run(["nm", "-C", binary], check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        f = line.split(" ", 2)
        if len(f) == 3 and f[0] and f[1] in "tTwW":
            syms.append((int(f[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", f[2])))
    base = mark - next(a for a, n in syms if n.endswith("rtt::mark_phase"))
    return [(a + base, "[user] " + n) for a, n in syms]


def main():
    run_log, counts, system_map, ko, binary = sys.argv[1:6]
    top = int(sys.argv[6]) if len(sys.argv) > 6 else 25
    log = open(run_log, errors="replace").read().replace("\r", "")
    stext = int(re.search(r"profile: kernel ([0-9a-f]+) \S _stext", log).group(1), 16)
    text = int(re.search(r"profile: module \.text (0x[0-9a-f]+)", log).group(1), 16)
    mark = int(re.search(r"profile: user mark_phase (0x[0-9a-f]+)", log).group(1), 16)
    paths = re.findall(r"profile: path (\S+) marks (\d+) (\d+) round trips (\d+)", log)
    if not paths:
        sys.exit("profile.py: the run printed no path (did it finish?)")
    syms = sorted(
        kernel_symbols(system_map, stext) + module_symbols(ko, text) + user_symbols(binary, mark)
    )
    addrs = [a for a, _ in syms]

    def name(vaddr):
        i = bisect.bisect_right(addrs, vaddr) - 1
        return syms[i][1] if i >= 0 else "?"

    # Per mark, per block: its counts per vCPU and its instructions of each dear kind.
    marks = defaultdict(dict)
    for line in open(counts):
        f = line.split()
        marks[int(f[0])][(int(f[1], 16), int(f[2]))] = ((int(f[3]), int(f[4])), tuple(map(int, f[5:9])))
    cols = ["insns", "blocks", "rets", "locked", "irq", "tsc"]
    for path, a, b, n in paths:
        a, b, n = int(a), int(b), int(n)
        if b not in marks:
            sys.exit(f"profile.py: mark {b} of {path} is missing from {counts}")
        # Per CPU and function: the sums of `cols`.
        per = [defaultdict(lambda: [0] * len(cols)) for _ in (0, 1)]
        for (vaddr, insns), (cb, kinds) in marks[b].items():
            ca = marks[a].get((vaddr, insns), ((0, 0), kinds))[0]
            for cpu in (0, 1):
                runs = cb[cpu] - ca[cpu]
                k = per[cpu][name(vaddr)]
                for i, v in enumerate((insns, 1) + kinds):
                    k[i] += runs * v
        print(f"## {path}: per round trip ({n} round trips)\n")
        for cpu, role in ((0, "caller"), (1, "responder")):
            total = [sum(k[i] for k in per[cpu].values()) / n for i in range(len(cols))]
            print(f"CPU {cpu} ({role}): " + ", ".join(f"{t:,.0f} {c}" for t, c in zip(total, cols)))
            print("  " + "".join(f"{c:>8}" for c in cols) + "  function")
            for sym, k in sorted(per[cpu].items(), key=lambda kv: -kv[1][0])[:top]:
                if k[0] / n >= 1:
                    print("  " + "".join(f"{v / n:8,.1f}" for v in k) + f"  {sym}")
            print()

if __name__ == "__main__":
    main()
