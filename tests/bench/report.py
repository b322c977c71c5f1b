#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tests/bench/report.py RAW_CSV META OUTDIR - summarise a tests/bench/run run.

Reads the per-run lines tests/bench/guest wrote (raw.csv) and writes to
OUTDIR: results.csv (one row per backing/workload/jobs/mode), results.md
(the Markdown table), results.dat + results.gp and, with gnuplot,
results.png (grouped bars, median MB/s with min-max error bars).

Every ratio is computed here from numbers measured in the same VM run.
"""
import csv
import os
import statistics
import subprocess
import sys

MODES = ["native", "copy", "splice", "zerocopy", "zerocopy-default", "zerocopy-sr", "zerocopy-rr",
         "passthrough", "zerocopy-dio"]
READ_WORKLOADS = ["seq-128k", "seq-1m", "dio-1m", "rand-64k", "rand-1m", "qd1-4k",
                  "qd1-64k", "qd16-128k", "qd16-dio-1m", "up-1m", "up-dio-1m"]
LARGE_WRITE_WORKLOADS = ["wseq-1m", "wdio-1m", "wrand-128k"]
# a fixed number of small writes (issue 26 step 5)
SMALL_WRITE_WORKLOADS = ["wapp-4", "wapp-4k", "wrand-4k"]
WRITE_WORKLOADS = LARGE_WRITE_WORKLOADS + SMALL_WRITE_WORKLOADS
WORKLOADS = READ_WORKLOADS + WRITE_WORKLOADS
WL_TEXT = {
    "seq-128k": "seq read 128 KiB",
    "seq-1m": "seq read 1 MiB",
    "dio-1m": "O_DIRECT seq read 1 MiB",
    "rand-64k": "random read 64 KiB",
    "rand-1m": "random read 1 MiB",
    "qd1-4k": "random read 4 KiB, queue depth 1 (latency)",
    "qd1-64k": "random read 64 KiB, queue depth 1 (latency)",
    "qd16-128k": "random read 128 KiB, io_uring queue depth 16",
    "qd16-dio-1m": "O_DIRECT seq read 1 MiB, io_uring queue depth 16",
    "up-1m": "upstream's shape: sync random read 1 MiB, 2 jobs",
    "up-dio-1m": "upstream's shape, O_DIRECT: sync random read 1 MiB, 2 jobs",
    "wseq-1m": "seq write 1 MiB, buffered, fsync at the end",
    "wdio-1m": "O_DIRECT seq write 1 MiB",
    "wrand-128k": "random write 128 KiB, buffered, fsync at the end",
    "wapp-4": "4-byte appends, 2048 of them, buffered, fsync at the end",
    "wapp-4k": "4 KiB appends, 2048 of them, buffered, fsync at the end",
    "wrand-4k": "random write 4 KiB, 2048 of them, buffered, fsync at the end",
}
GIB = float(1 << 30)


def num(s):
    return None if s in ("", "-", None) else float(s)


def order(v, known):
    return known.index(v) if v in known else len(known)


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


# The goals: (label, mode, backings, workloads, metric, base, minimum ratio).
# Metric "mb_s": mode's median MB/s ÷ base's; "cpu": base's server CPU per
# GiB ÷ mode's (≥ 1: the mode uses no more); "p50": base's p50 latency ÷
# mode's; "ctxsw": base's server context switches per FUSE_READ ÷ mode's.
# Base "best" is the better of copy and splice on that row (for "p50" and
# "ctxsw", the lower of the two).
ANY = ["tmpfs", "disk"]
GOALS = [
    ("zerocopy ≥ the better of copy and splice, every read row", "zerocopy", ANY,
     READ_WORKLOADS, "mb_s", "best", 1.0),
    ("disk: zerocopy ≥ 0.95× kernel passthrough, seq-1m and dio-1m", "zerocopy", ["disk"],
     ["seq-1m", "dio-1m"], "mb_s", "passthrough", 0.95),
    ("disk: zerocopy ≥ 0.9× kernel passthrough at queue depth 16", "zerocopy", ["disk"],
     ["qd16-128k", "qd16-dio-1m"], "mb_s", "passthrough", 0.9),
    ("tmpfs: zerocopy server CPU/GiB ≤ splice's (shown: splice ÷ zerocopy)", "zerocopy",
     ["tmpfs"], READ_WORKLOADS, "cpu", "splice", 1.0),
    ("disk: zerocopy server CPU/GiB ≤ 0.5× splice's (shown: splice ÷ zerocopy)", "zerocopy",
     ["disk"], READ_WORKLOADS, "cpu", "splice", 2.0),
    ("4 KiB QD1: zerocopy p50 latency ≤ copy's and splice's (shown: the lower ÷ zerocopy)",
     "zerocopy", ANY, ["qd1-4k"], "p50", "best", 1.0),
    # issue 26
    ("tmpfs: zerocopy server ctxsw per FUSE_READ ≤ splice's (shown: splice ÷ zerocopy)",
     "zerocopy", ["tmpfs"], READ_WORKLOADS, "ctxsw", "splice", 1.0),
    ("upstream's shape: zerocopy ≥ 1.5× copy", "zerocopy", ANY, ["up-1m", "up-dio-1m"],
     "mb_s", "copy", 1.5),
    # -o ring_read (issue 26 step 4), off by default: the same read goals
    ("-o ring_read: zerocopy-rr ≥ the better of copy and splice, every read row",
     "zerocopy-rr", ANY, READ_WORKLOADS, "mb_s", "best", 1.0),
    ("-o ring_read, 4 KiB QD1: zerocopy-rr p50 latency ≤ copy's and splice's "
     "(shown: the lower ÷ zerocopy-rr)", "zerocopy-rr", ANY, ["qd1-4k"], "p50", "best", 1.0),
    ("-o ring_read, tmpfs: zerocopy-rr server ctxsw per FUSE_READ ≤ splice's "
     "(shown: splice ÷ zerocopy-rr)", "zerocopy-rr", ["tmpfs"], READ_WORKLOADS, "ctxsw",
     "splice", 1.0),
    ("tmpfs seq-1m, -o direct_io: zerocopy ≥ 0.9× kernel passthrough", "zerocopy-dio",
     ["tmpfs"], ["seq-1m"], "mb_s", "passthrough", 0.9),
    ("default options: zerocopy-default ≥ 0.95× tuned zerocopy, seq-1m and dio-1m",
     "zerocopy-default", ANY, ["seq-1m", "dio-1m"], "mb_s", "zerocopy", 0.95),
    ("zerocopy ≥ 0.9× kernel passthrough, 1 MiB sequential buffered", "zerocopy", ANY,
     ["seq-1m"], "mb_s", "passthrough", 0.9),
    ("zerocopy ≥ 2.5× copy, 1 MiB sequential buffered and O_DIRECT", "zerocopy", ANY,
     ["seq-1m", "dio-1m"], "mb_s", "copy", 2.5),
    # zero-copy writes (issue 12)
    ("writes: zerocopy ≥ the better of copy and splice, every write row", "zerocopy", ANY,
     LARGE_WRITE_WORKLOADS, "mb_s", "best", 1.0),
    # small writes (issue 26 step 5): sent with their data below fuse.zerocopy_write_min
    ("small writes: zerocopy ≥ the better of copy and splice", "zerocopy", ANY,
     SMALL_WRITE_WORKLOADS, "mb_s", "best", 1.0),
    ("disk: zerocopy ≥ 0.95× kernel passthrough, 1 MiB O_DIRECT writes", "zerocopy",
     ["disk"], ["wdio-1m"], "mb_s", "passthrough", 0.95),
    ("writes: zerocopy server CPU/GiB ≤ 0.5× copy's (shown: copy ÷ zerocopy)", "zerocopy",
     ANY, LARGE_WRITE_WORKLOADS, "cpu", "copy", 2.0),
]


def goal_ratio(summary, key, metric, base):
    """The goal's ratio on one row (None when a side is missing)."""
    col = {"mb_s": "median", "cpu": "server", "p50": "p50", "ctxsw": "srv_ctx_req"}[metric]
    if base == "best":
        sides = [summary.get(key[:3] + (m,)) for m in ("copy", "splice")]
        sides = [b for b in sides if b is not None and b[col] is not None]
        if metric == "mb_s":
            b = max(sides, key=lambda b: b[col]) if sides else None
        else:
            b = min(sides, key=lambda b: b[col]) if sides else None
    else:
        b = summary.get(key[:3] + (base,))
    m = summary[key]
    if b is None:
        return None
    if metric == "mb_s":
        return m["median"] / b["median"] if b["median"] > 0 else None
    if m[col] is None or b[col] is None or m[col] <= 0:
        return None
    return b[col] / m[col]


def goals(summary):
    """Markdown lines: each goal with the ratios it covers, and a verdict."""
    out = ["", "Goals (ratios of medians, this run):", "",
           "| goal | rows (backing workload jobs: ratio) | met |",
           "| --- | --- | --- |"]
    for label, mode, backings, wls, metric, base, need in GOALS:
        cells, ok, seen = [], 0, 0
        for k in sorted(summary, key=lambda k: (order(k[0], ["tmpfs", "disk"]),
                                                order(k[1], WORKLOADS), k[2])):
            if k[3] != mode or k[0] not in backings or k[1] not in wls:
                continue
            r = goal_ratio(summary, k, metric, base)
            if r is None:
                continue
            seen += 1
            ok += r >= need
            shown = f"{r:.2f}" if round(r, 2) != need else f"{r:.3f}"
            cells.append(f"{k[0]} {k[1]} j{k[2]}: {shown}" + ("" if r >= need else " ✗"))
        if not seen:
            continue
        verdict = "yes" if ok == seen else ("no" if ok == 0 else f"{ok} of {seen} rows")
        out.append(f"| {label} | {'; '.join(cells)} | {verdict} |")
    return out


def main():
    raw, meta_path, outdir = sys.argv[1:4]
    meta = {}
    if os.path.exists(meta_path):
        for line in open(meta_path):
            k, _, v = line.rstrip("\n").partition("=")
            meta.setdefault(k, v)
    rows = list(csv.DictReader(open(raw)))
    if not rows:
        sys.exit("report: no runs in " + raw)

    groups = {}
    for r in rows:
        key = (r["backing"], r["workload"], int(r["jobs"]), r["mode"])
        groups.setdefault(key, []).append(r)

    def per_gib(rs, col):
        vals = [num(r[col]) / (int(r["io_bytes"]) / GIB)
                for r in rs if num(r[col]) is not None and int(r["io_bytes"]) > 0]
        return statistics.median(vals) if vals else None

    def med(rs, col):
        vals = [num(r.get(col)) for r in rs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def per_req(rs, col, reqs):
        """Median over runs of COL / the run's request count."""
        vals = []
        for r in rs:
            n = sum(num(r.get(c)) or 0 for c in reqs)
            if num(r.get(col)) is not None and n > 0:
                vals.append(num(r[col]) / n)
        return statistics.median(vals) if vals else None

    summary = {}
    for key, rs in groups.items():
        mbs = [int(r["bw_bytes"]) / 1e6 for r in rs]
        kz = [num(r["kzc_read_bytes"]) for r in rs]
        kc = [num(r["kcopy_read_bytes"]) for r in rs]
        zc_pct = daemon_bytes = None
        if None not in kz and None not in kc:
            daemon_bytes = sum(kz) + sum(kc)
            if daemon_bytes > 0:
                zc_pct = 100.0 * sum(kz) / daemon_bytes
        req_bytes = req_n = 0
        for r in rs:
            for kind in ("zc", "splice", "copy"):
                b, n = num(r[f"lib_{kind}_bytes"]), num(r[f"lib_{kind}_requests"])
                if b is not None and n is not None:
                    req_bytes += b
                    req_n += n
        summary[key] = {
            "n": len(rs),
            "median": statistics.median(mbs),
            "min": min(mbs),
            "max": max(mbs),
            "server": per_gib(rs, "server_cpu_s"),
            "reader": per_gib(rs, "reader_cpu_s"),
            "system": per_gib(rs, "system_cpu_s"),
            "zc_pct": zc_pct,
            "daemon_bytes": daemon_bytes,
            "avg_req_kib": req_bytes / req_n / 1024 if req_n else None,
            "req_per_mib": req_n / (req_bytes / (1 << 20)) if req_bytes else None,
            "fallbacks": sum(num(r["lib_fallbacks"]) or 0 for r in rs),
            "p50": med(rs, "clat_p50_us"),
            "p99": med(rs, "clat_p99_us"),
            # The server's whole life (mount to unmount) over its FUSE_READs.
            "srv_ctx_req": per_req(rs, "server_ctxsw", ["lib_zc_requests",
                                                        "lib_splice_requests",
                                                        "lib_copy_requests"]),
            "rdr_ctx_io": per_req(rs, "reader_ctxsw", ["ios"]),
            "kernel_answered": sum(num(r.get("lib_zc_kernel_answered")) or 0 for r in rs),
        }

    def ratio(key, base_mode):
        b = summary.get(key[:3] + (base_mode,))
        if b is None or b["median"] <= 0:
            return None
        return summary[key]["median"] / b["median"]

    keys = sorted(summary, key=lambda k: (order(k[0], ["tmpfs", "disk"]),
                                          order(k[1], WORKLOADS), k[2],
                                          order(k[3], MODES)))

    # ---------------------------------------------------------- results.csv
    with open(os.path.join(outdir, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "backing", "jobs", "mode", "reps",
                    "mb_s_median", "mb_s_min", "mb_s_max",
                    "ratio_native", "ratio_passthrough",
                    "server_cpu_s_per_gib", "reader_cpu_s_per_gib",
                    "guest_cpu_s_per_gib_incl_fio_startup", "kernel_zc_pct",
                    "daemon_read_bytes", "avg_fuse_read_kib",
                    "fuse_reads_per_mib", "lib_fallbacks", "clat_p50_us",
                    "clat_p99_us", "server_ctxsw_per_fuse_read",
                    "reader_ctxsw_per_io", "kernel_answered_reads"])
        for k in keys:
            s = summary[k]
            w.writerow([k[1], k[0], k[2], k[3], s["n"],
                        f"{s['median']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}",
                        fmt(ratio(k, "native"), 3).replace("—", ""),
                        fmt(ratio(k, "passthrough"), 3).replace("—", ""),
                        fmt(s["server"], 3).replace("—", ""),
                        fmt(s["reader"], 3).replace("—", ""),
                        fmt(s["system"], 3).replace("—", ""),
                        fmt(s["zc_pct"], 1).replace("—", ""),
                        "" if s["daemon_bytes"] is None else int(s["daemon_bytes"]),
                        fmt(s["avg_req_kib"], 0).replace("—", ""),
                        fmt(s["req_per_mib"], 2).replace("—", ""),
                        int(s["fallbacks"]),
                        fmt(s["p50"], 1).replace("—", ""),
                        fmt(s["p99"], 1).replace("—", ""),
                        fmt(s["srv_ctx_req"], 2).replace("—", ""),
                        fmt(s["rdr_ctx_io"], 2).replace("—", ""),
                        int(s["kernel_answered"])])

    # ---------------------------------------------------------- results.md
    md = []
    md.append("| workload | backing | jobs | mode | MB/s median [min–max] | × native"
              " | × passthrough | server CPU s/GiB | reader CPU s/GiB"
              " | zero-copy bytes | FUSE_READ avg KiB | latency p50 / p99 µs"
              " | server ctxsw per FUSE_READ |")
    md.append("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in keys:
        s = summary[k]
        if k[3] == "native":
            zc = "—"
        elif s["zc_pct"] is not None:
            zc = f"{s['zc_pct']:.1f} %"
        elif s["daemon_bytes"] == 0:
            zc = "none via daemon"
        else:
            zc = "—"
        rng = f"{s['median']:.0f} [{s['min']:.0f}–{s['max']:.0f}]"
        if s["n"] == 1:
            rng = f"{s['median']:.0f}"
        md.append(f"| {k[1]} | {k[0]} | {k[2]} | {k[3]} | {rng} | "
                  f"{fmt(ratio(k, 'native'))} | {fmt(ratio(k, 'passthrough'))} | "
                  f"{fmt(s['server'])} | {fmt(s['reader'])} | "
                  f"{zc} | {fmt(s['avg_req_kib'], 0)} | "
                  f"{fmt(s['p50'], 0)} / {fmt(s['p99'], 0)} | {fmt(s['srv_ctx_req'], 2)} |")
    reps = sorted({s["n"] for s in summary.values()})
    head = [
        "<!-- generated by tests/bench/run; do not edit -->",
        f"Run {meta.get('date', '?')}, kernel {meta.get('kernel', '?')}, "
        f"{meta.get('cpus', '?')} vCPUs under QEMU TCG, file {meta.get('size_mib', '?')} MiB, "
        f"{'/'.join(map(str, reps))} repetition(s) per row, {meta.get('fio', 'fio')}; "
        f"disk: {meta.get('disk_fs', '?')} on virtio-blk (read_ahead_kb "
        f"{meta.get('disk_read_ahead_kb', '?')}); FUSE read_ahead_kb "
        f"{meta.get('fuse_read_ahead_kb_seen', meta.get('fuse_read_ahead_kb', '?'))}; "
        f"server reads the source with -o direct_source on: "
        f"{meta.get('direct_source_backings', 'none') or 'none'}; "
        f"passthrough_zc -o max_readahead={meta.get('max_readahead', '?')}; "
        f"fuse.zerocopy_write_min {meta.get('zerocopy_write_min', '?')}.",
        "",
        "Absolute MB/s under TCG mean nothing; only ratios within this run count.",
        "Ratios are of the medians. CPU columns: median over repetitions of CPU seconds per GiB"
        " read (server: passthrough_zc incl. its io-wq threads, /proc/PID/stat; reader: fio's"
        " usr+sys; results.csv adds the whole guest's busy time, fio's start-up included)."
        " Zero-copy bytes: the connection's"
        " zerocopy_stats, zc_read_bytes / (zc_read_bytes + copy_read_bytes). FUSE_READ avg:"
        " bytes / requests the daemon answered (-o stats). Latency: fio's completion latency"
        " percentiles per I/O. Server ctxsw: voluntary + involuntary context switches of all"
        " the server's threads (getrusage at unmount, mount to unmount) per FUSE_READ it"
        " answered. zerocopy-dio: -o direct_io, no page cache on the FUSE file (another"
        " caching policy). zerocopy-sr: -o server_replies, the server writes each reply"
        " (zerocopy lets the kernel answer). zerocopy-rr: -o ring_read, requests read"
        " through the worker's io_uring with its lendings. zerocopy-default: -o zerocopy=required alone"
        " (passthrough_zc's default read-ahead and source I/O, none of the bench's options)."
        " Write rows (wseq-1m, wdio-1m, wrand-128k, and the small writes wapp-4, wapp-4k,"
        " wrand-4k): the same columns count written bytes (zc_write_bytes /"
        " copy_write_bytes, FUSE_WRITEs, the server's zero-copy writes); a write smaller"
        " than fuse.zerocopy_write_min comes with its data, so it counts as copied.",
        "",
    ]
    text = "\n".join(head + md + goals(summary)) + "\n"
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(text)

    # ---------------------------------------------------------- chart
    modes = [m for m in MODES if any(k[3] == m for k in keys)]
    clusters = []
    for k in keys:
        c = k[:3]
        if c not in clusters:
            clusters.append(c)
    dat = os.path.join(outdir, "results.dat")
    with open(dat, "w") as f:
        f.write("# cluster " + " ".join(f"{m}_med {m}_min {m}_max" for m in modes) + "\n")
        for c in clusters:
            label = f"{c[1]} j{c[2]} {c[0]}"
            cols = []
            for m in modes:
                s = summary.get(c + (m,))
                cols += ["-"] * 3 if s is None else [f"{s['median']:.1f}", f"{s['min']:.1f}",
                                                     f"{s['max']:.1f}"]
            f.write(f'"{label}" ' + " ".join(cols) + "\n")
    png = os.path.join(outdir, "results.png")
    width = max(900, 110 * len(clusters) + 200)
    plots = []
    for i, m in enumerate(modes):
        src = f"'{dat}'" if i == 0 else "''"
        c = 2 + 3 * i
        xt = ":xtic(1)" if i == 0 else ""
        plots.append(f"{src} using {c}:{c + 1}:{c + 2}{xt} title '{m}'")
    gp = os.path.join(outdir, "results.gp")
    with open(gp, "w") as f:
        f.write(f"""# generated by tests/bench/report.py
set terminal pngcairo size {width},600 font ',10'
set output '{png}'
set title "fuse-zc read modes: median MB/s, bars min-max ({meta.get('kernel', '?')}, QEMU TCG: compare within the run only)"
set ylabel 'MB/s'
set datafile missing '-'
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key outside top center horizontal
set grid ytics
set yrange [0:*]
set xtics rotate by -35 scale 0 font ',9'
set bmargin 8
plot {', '.join(plots)}
""")
    try:
        subprocess.run(["gnuplot", gp], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report: gnuplot failed ({e}); no chart", file=sys.stderr)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
