#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tests/bench/compare.py OLD NEW - did anything get worse between two bench runs?

OLD and NEW are Markdown files holding report.py's table (a results.md, or
docs/performance.md, whose history keeps every earlier full run).  A table
belongs to the "Run <time>, ..." line above it; --old-run / --new-run pick
runs by a prefix of that time (repeatable; default: every run in the file,
a later table's row replacing an earlier one's).

For every row (workload, backing, jobs, mode) in both runs it prints the
ratio NEW/OLD of the MB/s medians and of the server CPU per GiB, and a
verdict.  The rows whose code did not change between the runs, native (no
FUSE) and kernel passthrough (no server), measure how far the machine
itself moved: a row is "noise" when the two runs' repetitions overlap,
"drift" when they do not but the row fell no further than the same
workload's native or passthrough row did, "worse" when it fell further
than both, and "better" when NEW's worst repetition beats OLD's best.
"""
import argparse
import re
import statistics
import sys

UNCHANGED_MODES = ("native", "passthrough")
VERDICTS = ("worse", "drift", "noise", "better")
RUN_LINE = re.compile(r"^Run (\S+?),")
RANGE = re.compile(r"^\s*([\d.]+)\s*\[([\d.]+)[–-]([\d.]+)\]\s*$")


def num(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def parse(path, runs):
    """{(workload, backing, jobs, mode): row} of the selected runs' tables."""
    rows, run, header = {}, None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = RUN_LINE.match(line)
            if m:
                run, header = m.group(1), None
                continue
            if not line.startswith("|"):
                header = None if line.strip() else header
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[:4] == ["workload", "backing", "jobs", "mode"]:
                header = cells
                continue
            if header is None or run is None or set(cells[0]) <= set("-: "):
                continue
            if runs and not any(run.startswith(r) for r in runs):
                continue
            cell = dict(zip(header, cells))
            mb = RANGE.match(cell.get("MB/s median [min–max]", ""))
            if not mb:
                continue
            key = (cell["workload"], cell["backing"], int(cell["jobs"]), cell["mode"])
            rows[key] = {
                "median": float(mb.group(1)),
                "min": float(mb.group(2)),
                "max": float(mb.group(3)),
                "server_cpu": num(cell.get("server CPU s/GiB", "")),
            }
    return rows


def verdict(old, new, drift):
    if new["min"] > old["max"]:
        return "better"
    if new["max"] >= old["min"]:
        return "noise"
    if drift and new["median"] / old["median"] >= min(drift):
        return "drift"
    return "worse"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def compare(old, new):
    out = []
    for key in sorted(set(old) & set(new)):
        o, n = old[key], new[key]
        drift = [ratio(new[k]["median"], old[k]["median"])
                 for k in (key[:3] + (m,) for m in UNCHANGED_MODES)
                 if k in old and k in new and k != key]
        out.append({
            "workload": key[0], "backing": key[1], "jobs": key[2], "mode": key[3],
            "old": o, "new": n, "drift": drift,
            "mb_s": ratio(n["median"], o["median"]),
            "server_cpu": ratio(n["server_cpu"], o["server_cpu"]),
            "verdict": verdict(o, n, drift),
        })
    return out


def fmt(v):
    return "—" if v is None else f"{v:.2f}"


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{min(values):.2f}-{max(values):.2f} (median {statistics.median(values):.2f}, {len(values)} rows)"


def report(rows, out=sys.stdout):
    modes = list(UNCHANGED_MODES)
    for r in rows:
        if r["mode"] not in modes:
            modes.append(r["mode"])
    print("| mode | rows in both runs | MB/s new ÷ old: range (median) | worse | drift | noise | better |", file=out)
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |", file=out)
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        counts = {v: sum(r["verdict"] == v for r in mine) for v in VERDICTS}
        note = " (unchanged: the machine's drift)" if mode in UNCHANGED_MODES else ""
        verdicts = " | ".join("—" if mode in UNCHANGED_MODES else str(counts[v]) for v in VERDICTS)
        print(f"| {mode}{note} | {len(mine)} | {spread(r['mb_s'] for r in mine)} | {verdicts} |", file=out)
    worse = [r for r in rows if r["verdict"] == "worse" and r["mode"] not in UNCHANGED_MODES]
    print(file=out)
    print("Rows that fell further than the same workload's native and passthrough rows:", file=out)
    print(file=out)
    if not worse:
        print("none", file=out)
        return
    print("| workload | backing | jobs | mode | old MB/s | new MB/s | new ÷ old | native, passthrough new ÷ old "
          "| server CPU new ÷ old |", file=out)
    print("| --- | --- | ---: | --- | --- | --- | ---: | --- | ---: |", file=out)
    for r in worse:
        o, n = r["old"], r["new"]
        print(f"| {r['workload']} | {r['backing']} | {r['jobs']} | {r['mode']} | "
              f"{o['median']:g} [{o['min']:g}–{o['max']:g}] | {n['median']:g} [{n['min']:g}–{n['max']:g}] | "
              f"{fmt(r['mb_s'])} | {', '.join(fmt(d) for d in r['drift']) or '—'} | {fmt(r['server_cpu'])} |", file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--old-run", action="append", default=[])
    ap.add_argument("--new-run", action="append", default=[])
    args = ap.parse_args(argv)
    old, new = parse(args.old, args.old_run), parse(args.new, args.new_run)
    for name, rows in (("OLD", old), ("NEW", new)):
        if not rows:
            print(f"compare.py: no bench table in {name} {getattr(args, name.lower())}"
                  " (report.py's table below a 'Run <time>,' line)", file=sys.stderr)
            return 2
    rows = compare(old, new)
    if not rows:
        print("compare.py: the two runs have no row in common", file=sys.stderr)
        return 2
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
