#!/usr/bin/env python3
"""make coverage's report: KCOV points of rust_evnotify.ko reached, by file, line and function.

A point is one call to __sanitizer_cov_trace_pc that KCOV instrumentation put in the .ko (one
per basic block); KCOV records its return address, which is the relocation's offset + 4 in its
section. Each point is mapped to a line with binutils' addr2line (inline frames followed
inwards-out to the first that is in one of the module's own .rs files). Points whose frames are
all outside them (generic code of the kernel crate or core, instantiated in the module), and
points of the KUnit cases themselves (test code, in a `#[kunit_tests]` module, with whatever
module code is inlined into them) are counted apart, not in the totals: the figures are of the
code under test.

Writes OUT/summary.json and OUT/report.txt. Inputs: the points files the VM wrote (lines of
"SECTION 0xOFFSET"; "#" starts a comment), one for the whole suite's run and one for the fuzzer's.
"""
import argparse
import bisect
import collections
import fnmatch
import json
import os
import re
import subprocess
import sys


def points_of(ko):
    """{section: sorted offsets} of every instrumented point of the .ko."""
    out = subprocess.run(["readelf", "-rW", ko], check=True, capture_output=True, text=True).stdout
    pts, sec = collections.defaultdict(set), None
    for line in out.splitlines():
        m = re.match(r"Relocation section '\.rela(\.[^']+)'", line)
        if m:
            sec = m.group(1)
            continue
        f = line.split()
        if sec and sec.startswith(".text") and len(f) >= 5 and f[4].startswith("__sanitizer_cov_trace_pc"):
            pts[sec].add(int(f[0], 16) + 4)
    return {s: sorted(v) for s, v in pts.items()}


PANIC = re.compile(r"panicking|panic_|slice_\w*fail|unwrap_failed|expect_failed|assert_failed|\bpanic\b")


def disassembly(ko):
    """.text's instructions: [(address, text, relocated symbol or None)], by objdump -dr. A call
    or jump with a relocation goes to the relocated symbol, not where objdump shows it."""
    out = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", "-j", ".text", ko], check=True,
                         capture_output=True, text=True).stdout
    ins = []
    for line in out.splitlines():
        m = re.match(r"^\s+([0-9a-f]+):\s+(R_X86_64_\S+)\s+(\S+)", line)
        if m and ins:
            a, t, _ = ins[-1]
            ins[-1] = (a, t, re.sub(r"[-+]0x[0-9a-f]+$", "", m.group(3)))
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2), None))
    return ins


def panic_points(ins, offsets):
    """The points whose basic block leads straight to a panic (an index out of bounds, an
    unwrap of a value already checked, an assertion): from the point to the block's first
    jump or return, a call to a panicking function of core."""
    at = {a: i for i, (a, _, _) in enumerate(ins)}
    out = set()
    for p in offsets:
        i = at.get(p)
        while i is not None and i < len(ins):
            _, text, sym = ins[i]
            if sym and text.startswith("call") and PANIC.search(sym) or text.startswith("ud2"):
                out.add(p)
                break
            if sym == "__sanitizer_cov_trace_pc" or re.match(r"(j[a-z]+|ret)", text):
                break
            i += 1
    return out


def uncalled_functions(ko, ins):
    """[(start, end, name)] of the functions in .text that no path from outside .text reaches.
    The roots are the functions that anything but .text refers to (a function pointer in a
    table, the module's init and exit, the KUnit cases); from them, calls, jumps and .text's
    own relocations. Non-generic functions keep a standalone copy in the object even when every
    caller inlined its own; no test can enter that copy."""
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ndx = next(m.group(1) for m in re.finditer(r"\[\s*(\d+)\]\s+\.text\s", run("readelf", "-SW", ko)))
    funcs = sorted({(int(f[1], 16), int(f[1], 16) + int(f[2], 0), f[7])
                    for f in (l.split() for l in run("readelf", "-sW", ko).splitlines())
                    if len(f) >= 8 and f[3] == "FUNC" and f[6] == ndx})
    starts = [f[0] for f in funcs]

    def func_of(addr):
        i = bisect.bisect_right(starts, addr) - 1
        return i if i >= 0 and addr < funcs[i][1] else None

    edges, roots = collections.defaultdict(set), set()
    for a, text, sym in ins:
        m = re.match(r"(?:call|j[a-z]+)\s+([0-9a-f]+) <", text)
        if m and sym is None:
            edges[func_of(a)].add(func_of(int(m.group(1), 16)))
    sec = None
    for line in run("readelf", "-rW", ko).splitlines():
        m = re.match(r"Relocation section '\.rela(\S*)'", line)
        if m:
            sec = m.group(1)
            continue
        f = line.split()
        if not sec or sec.startswith(".debug") or sec == ".ibt_endbr_seal" or len(f) < 5:
            continue
        if f[4] == ".text" and len(f) >= 7:
            add = int(f[6], 16) * (-1 if f[5] == "-" else 1)
            # A PC-relative reference's addend is its target - 4.
            to = {func_of(add + 4) if add + 4 in starts else func_of(add)}
        elif re.fullmatch(r"[0-9a-f]+", f[3]):
            # Also a symbol of another section with the same value: that only keeps a function.
            to = {func_of(int(f[3], 16))}
        else:
            continue
        if sec == ".text":
            edges[func_of(int(f[0], 16))] |= to
        else:
            roots |= to
    seen, todo = set(), [r for r in roots if r is not None]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo += [j for j in edges[i] if j is not None]
    # Folded functions share an address: all of them are live if one is.
    live = {funcs[i][0] for i in seen}
    return [f for f in funcs if f[0] not in live]


def frames_of(ko, sec, offsets):
    """{offset: [(function, file, line), ...] innermost first}, by addr2line on offset - 1
    (inside the call instruction, as syzkaller looks up a return address)."""
    inp = "".join(f"{o - 1:#x}\n" for o in offsets)
    out = subprocess.run(["addr2line", "-e", ko, "-j", sec, "-a", "-f", "-i", "-C"],
                         input=inp, check=True, capture_output=True, text=True).stdout.splitlines()
    res, cur, i = {}, None, 0
    while i < len(out):
        if re.fullmatch(r"0x[0-9a-f]+", out[i]):
            cur = int(out[i], 16) + 1
            res[cur] = []
            i += 1
            continue
        fn, loc = out[i], out[i + 1] if i + 1 < len(out) else "??:0"
        path, _, ln = loc.rpartition(":")
        ln = re.match(r"\d+", ln)
        res[cur].append((fn, path, int(ln.group(0)) if ln else 0))
        i += 2
    return res


def is_test(function):
    """Whether a frame's function is a KUnit case (a `#[kunit_tests]` module's, or its wrapper)
    or one of their helpers (a `testing` module's)."""
    return any(t in function for t in ("::tests::", "::testing::")) or function.startswith("kunit_rust_wrapper_")


def read_points(path):
    got = set()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if len(line) == 2:
                got.add((line[0], int(line[1], 16)))
    return got


def read_explained(path):
    """[(file, function glob, line regex or None, reason)] from lines
    "FILE FUNCTION-GLOB [@LINE-REGEX]: REASON" (the regex is matched against the source line)."""
    rules = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            head, _, reason = line.partition(": ")
            fname, rest = head.split(None, 1)
            glob, _, regex = rest.partition(" @")
            rules.append((fname, glob, re.compile(regex) if regex else None, reason))
    return rules


def source_line(src, f, ln):
    """Line `ln` of file `f`, or ""."""
    try:
        with open(os.path.join(src, f)) as fh:
            return fh.read().splitlines()[ln - 1] if ln > 0 else ""
    except (OSError, IndexError):
        return ""


# The indexes of the rules that explained something (`explain`), for the report's list of the
# others: a race some test hit this time, or a rule the code has outgrown.
USED = set()


def explain(rules, src, f, ln, fns):
    """The reason of the first rule that matches unreached line `ln` of file `f`, or None."""
    text = source_line(src, f, ln)
    # A regex that spans a line break is matched against the line before and this one.
    two = source_line(src, f, ln - 1) + "\n" + text
    for i, (fname, glob, regex, reason) in enumerate(rules):
        hay = two if regex is not None and "\\n" in regex.pattern else text
        if fname == f and any(fnmatch.fnmatch(x, glob) for x in fns) and (regex is None or regex.search(hay)):
            USED.add(i)
            return reason
    return None


def tally(points, hit):
    """points: {(sec, off): (file, line, function)}; hit: set of (sec, off)."""
    files = collections.defaultdict(lambda: {"points_total": 0, "points_hit": 0, "lines": {}})
    for p, (f, ln, _) in points.items():
        d = files[f]
        d["points_total"] += 1
        d["points_hit"] += p in hit
        d["lines"][ln] = d["lines"].get(ln, False) or p in hit
    out = {"points_total": 0, "points_hit": 0, "lines_total": 0, "lines_hit": 0, "files": {}}
    for f in sorted(files):
        d = files[f]
        e = {"points_total": d["points_total"], "points_hit": d["points_hit"],
             "lines_total": len(d["lines"]), "lines_hit": sum(d["lines"].values())}
        out["files"][f] = e
        for k in e:
            out[k] += e[k]
    out["points_pct"] = round(100.0 * out["points_hit"] / max(out["points_total"], 1), 2)
    out["lines_pct"] = round(100.0 * out["lines_hit"] / max(out["lines_total"], 1), 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ko", required=True)
    ap.add_argument("--src", required=True, help="the module's source directory")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--fuzz", required=True)
    ap.add_argument("--explained", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    src = os.path.realpath(a.src)
    own = {f for f in os.listdir(src) if f.endswith(".rs")}
    points, outside, tests, uncalled, panics, every, dying_all = {}, 0, 0, 0, 0, set(), set()
    # The module's KCOV calls (kcov.rs, inlined where a section opens or ends): they run outside
    # the section they open or end, as kernel/kcov.c itself is built without KCOV.
    machinery = 0
    ins = disassembly(a.ko)
    dead = uncalled_functions(a.ko, ins)
    for sec, offs in points_of(a.ko).items():
        every |= {(sec, o) for o in offs}
        if sec == ".text":
            live = [o for o in offs if not any(lo <= o < hi for lo, hi, _ in dead)]
            uncalled += len(offs) - len(live)
            dying = panic_points(ins, live)
            dying_all |= dying
            offs = [o for o in live if o not in dying]
            panics += len(live) - len(offs)
        for off, frames in frames_of(a.ko, sec, offs).items():
            mine = [(fn, os.path.basename(p), ln) for fn, p, ln in frames
                    if os.path.dirname(os.path.realpath(p)) == src and os.path.basename(p) in own]
            if not mine:
                outside += 1
            elif any(is_test(fn) for fn, _, _ in frames):
                tests += 1
            elif mine[0][1] == "kcov.rs":
                machinery += 1
            else:
                fn, f, ln = mine[0]
                points[(sec, off)] = (f, ln, fn)
    if not points:
        sys.exit("coverage.py: no instrumented points in the .ko (built without KCOV?)")
    suite, fuzz = read_points(a.suite), read_points(a.fuzz)
    # A reached point in a function found uncalled would prove the call analysis wrong.
    wrong = [n for lo, hi, n in dead if any(s == ".text" and lo <= o < hi for s, o in suite | fuzz)]
    wrong += [f"{o:#x} (a panic's block)" for s, o in suite | fuzz if s == ".text" and o in dying_all]
    if wrong:
        sys.exit(f"coverage.py: reached points that the analysis calls unreachable: {wrong[:3]}")
    unknown = (suite | fuzz) - every
    whole = (suite | fuzz) & set(points)
    summary = tally(points, whole)
    summary["fuzz"] = tally(points, fuzz & set(points))
    summary["points_outside_module_files"] = outside
    summary["points_in_kunit_cases"] = tests
    summary["points_in_coverage_calls"] = machinery
    summary["points_in_uncalled_functions"] = uncalled
    summary["points_leading_to_a_panic"] = panics
    summary["reached_points_not_in_ko"] = len(unknown)
    rules = read_explained(a.explained)

    # Unreached lines, with the function each is in and its explanation, if any.
    by_line = collections.defaultdict(lambda: [False, set()])
    for p, (f, ln, fn) in points.items():
        by_line[(f, ln)][0] |= p in whole
        by_line[(f, ln)][1].add(fn)
    funcs = collections.defaultdict(lambda: [0, 0])
    for p, (f, _, fn) in points.items():
        funcs[(f, fn)][0] += 1
        funcs[(f, fn)][1] += p in whole
    explained = 0
    lines = []
    for (f, ln), (hit, fns) in sorted(by_line.items()):
        if hit:
            continue
        why = explain(rules, src, f, ln, fns)
        explained += why is not None
        lines.append(f"  {f}:{ln}  in {sorted(fns)[0]}" + (f"  -- {why}" if why else "  -- NOT EXPLAINED"))
    # Unreached points on explained lines (a line is reached when one of its points is, so
    # these are the points on lines no test reaches).
    why_line = {}
    for (f, ln), (hit, fns) in by_line.items():
        if not hit:
            why_line[(f, ln)] = explain(rules, src, f, ln, fns) is not None
    summary["points_unreached_on_explained_lines"] = sum(
        1 for p, (f, ln, _) in points.items() if p not in whole and why_line.get((f, ln)))
    summary["points_unreached_on_reached_lines"] = sum(
        1 for p, (f, ln, _) in points.items() if p not in whole and (f, ln) not in why_line)
    # Reached lines with a point no test reaches: a branch (an error arm, mostly) untaken,
    # explained when a rule matches the line (its every unreached point is then counted so).
    part = collections.defaultdict(lambda: [0, 0, None])
    for p, (f, ln, _) in points.items():
        if by_line[(f, ln)][0]:
            part[(f, ln)][0] += 1
            part[(f, ln)][1] += p not in whole
    part = {k: v for k, v in part.items() if v[1]}
    for (f, ln), v in part.items():
        v[2] = explain(rules, src, f, ln, by_line[(f, ln)][1])
    summary["points_unreached_explained_on_reached_lines"] = sum(v[1] for v in part.values() if v[2])
    summary["points_reached_or_explained"] = (
        summary["points_hit"] + summary["points_unreached_on_explained_lines"]
        + summary["points_unreached_explained_on_reached_lines"])
    summary["lines_unreached_explained"] = explained
    summary["lines_unreached_unexplained"] = len(lines) - explained
    unused = [f"  {r[0]} {r[1]}" + (f" @{r[2].pattern}" if r[2] else "") for i, r in enumerate(rules) if i not in USED]
    summary["rules_unused"] = len(unused)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")

    r = [f"KCOV coverage of {os.path.basename(a.ko)}: whole suite (the VM tests and the guided fuzzer; KCOV does not record the KUnit cases) and fuzzer alone",
         f"points: {summary['points_hit']}/{summary['points_total']} ({summary['points_pct']}%), fuzzer alone "
         f"{summary['fuzz']['points_hit']} ({summary['fuzz']['points_pct']}%); lines: {summary['lines_hit']}/"
         f"{summary['lines_total']} ({summary['lines_pct']}%), fuzzer alone {summary['fuzz']['lines_hit']}",
         f"Not counted: {tests} points of the KUnit cases themselves (test code), {machinery} of kcov.rs (the",
         f"calls that open and end KCOV sections, which run outside them), {outside} of generic code of",
         f"the kernel crate or core instantiated in the module, {uncalled} in functions nothing calls (every",
         f"caller inlined its own copy), and {panics} whose block goes straight to a panic (a bounds check, an",
         f"unwrap of a checked value: a branch correct code never takes). {len(unknown)} reached offsets",
         "matched no point.", "",
         f"{'file':<18}{'points':>16}{'fuzzer':>10}{'lines':>14}"]
    for fname, e in summary["files"].items():
        z = summary["fuzz"]["files"][fname]
        r.append(f"{fname:<18}{e['points_hit']:>7}/{e['points_total']:<5}{100 * e['points_hit'] / e['points_total']:5.1f}%"
                 f"{100 * z['points_hit'] / e['points_total']:8.1f}%{e['lines_hit']:>7}/{e['lines_total']:<5}")
    r += ["", f"Of the {summary['points_total'] - summary['points_hit']} points not reached, "
          f"{summary['points_unreached_on_explained_lines']} lie on lines explained below and "
          f"{summary['points_unreached_on_reached_lines']} on lines that are reached (another branch of the line, "
          f"{summary['points_unreached_explained_on_reached_lines']} of them explained): reached or explained, "
          f"{summary['points_reached_or_explained']} of {summary['points_total']} "
          f"({100 * summary['points_reached_or_explained'] / summary['points_total']:.2f}%).",
          "", "Functions never entered (file, function, points):"]
    r += [f"  {f}  {fn}  {n}" for (f, fn), (n, h) in sorted(funcs.items()) if h == 0] or ["  none"]
    r += ["", f"Lines no test reaches ({len(lines)}; {explained} explained, see scripts/coverage-explained.txt):"]
    r += lines or ["  none"]
    r += ["", f"Reached lines with points no test reaches ({len(part)} lines, "
          f"{sum(v[1] for v in part.values())} points: branches not taken; "
          f"{summary['points_unreached_explained_on_reached_lines']} of them explained):"]
    r += [f"  {f}:{ln}  {m} of {n}  {source_line(src, f, ln).strip()}" + (f"  -- {why}" if why else "")
          for (f, ln), (n, m, why) in sorted(part.items())] or ["  none"]
    r += ["", f"Rules of scripts/coverage-explained.txt that explained nothing in this run ({len(unused)}: "
          "a race a test hit this time, or a rule the code outgrew, to delete):"]
    r += unused or ["  none"]
    with open(os.path.join(a.out, "report.txt"), "w") as f:
        f.write("\n".join(r) + "\n")
    print("\n".join(r[:2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
