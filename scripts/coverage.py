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
    """Whether a frame's function is a KUnit case (a `#[kunit_tests]` module's, or its wrapper)."""
    return "::tests::" in function or function.startswith("kunit_rust_wrapper_")


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


def explain(rules, src, f, ln, fns):
    """The reason of the first rule that matches unreached line `ln` of file `f`, or None."""
    try:
        with open(os.path.join(src, f)) as fh:
            text = fh.read().splitlines()[ln - 1] if ln > 0 else ""
    except (OSError, IndexError):
        text = ""
    for fname, glob, regex, reason in rules:
        if fname == f and any(fnmatch.fnmatch(x, glob) for x in fns) and (regex is None or regex.search(text)):
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
    points, outside, tests, every = {}, 0, 0, set()
    for sec, offs in points_of(a.ko).items():
        every |= {(sec, o) for o in offs}
        for off, frames in frames_of(a.ko, sec, offs).items():
            mine = [(fn, os.path.basename(p), ln) for fn, p, ln in frames
                    if os.path.dirname(os.path.realpath(p)) == src and os.path.basename(p) in own]
            if not mine:
                outside += 1
            elif any(is_test(fn) for fn, _, _ in frames):
                tests += 1
            else:
                fn, f, ln = mine[0]
                points[(sec, off)] = (f, ln, fn)
    if not points:
        sys.exit("coverage.py: no instrumented points in the .ko (built without KCOV?)")
    suite, fuzz = read_points(a.suite), read_points(a.fuzz)
    unknown = (suite | fuzz) - every
    whole = (suite | fuzz) & set(points)
    summary = tally(points, whole)
    summary["fuzz"] = tally(points, fuzz & set(points))
    summary["points_outside_module_files"] = outside
    summary["points_in_kunit_cases"] = tests
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
    summary["lines_unreached_explained"] = explained
    summary["lines_unreached_unexplained"] = len(lines) - explained
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")

    r = [f"KCOV coverage of {os.path.basename(a.ko)}: whole suite (VM tests, KUnit, fuzzer) and fuzzer alone",
         f"points: {summary['points_hit']}/{summary['points_total']} ({summary['points_pct']}%), fuzzer alone "
         f"{summary['fuzz']['points_hit']} ({summary['fuzz']['points_pct']}%); lines: {summary['lines_hit']}/"
         f"{summary['lines_total']} ({summary['lines_pct']}%), fuzzer alone {summary['fuzz']['lines_hit']}",
         f"Not counted: {tests} points of the KUnit cases themselves (test code), and {outside} of generic",
         f"code of the kernel crate or core instantiated in the module. {len(unknown)} reached offsets matched no point.", "",
         f"{'file':<18}{'points':>16}{'fuzzer':>10}{'lines':>14}"]
    for fname, e in summary["files"].items():
        z = summary["fuzz"]["files"][fname]
        r.append(f"{fname:<18}{e['points_hit']:>7}/{e['points_total']:<5}{100 * e['points_hit'] / e['points_total']:5.1f}%"
                 f"{100 * z['points_hit'] / e['points_total']:8.1f}%{e['lines_hit']:>7}/{e['lines_total']:<5}")
    r += ["", "Functions never entered (file, function, points):"]
    r += [f"  {f}  {fn}  {n}" for (f, fn), (n, h) in sorted(funcs.items()) if h == 0] or ["  none"]
    r += ["", f"Lines no test reaches ({len(lines)}; {explained} explained, see scripts/coverage-explained.txt):"]
    r += lines or ["  none"]
    with open(os.path.join(a.out, "report.txt"), "w") as f:
        f.write("\n".join(r) + "\n")
    print("\n".join(r[:2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
