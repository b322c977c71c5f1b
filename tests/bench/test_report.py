# SPDX-License-Identifier: GPL-2.0-or-later
"""report.py on a raw.csv with known numbers: every ratio and verdict of the
goals table is computed from the rows it names (host test, no VM)."""
import csv
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COLS = ("backing,workload,jobs,rep,mode,io_bytes,bw_bytes,runtime_ms,reader_cpu_s,ios,"
        "reader_ctxsw,clat_p50_us,clat_p99_us,server_cpu_s,system_cpu_s,kzc_read_bytes,"
        "kcopy_read_bytes,kzc_refused,lib_zc_bytes,lib_zc_requests,lib_splice_bytes,"
        "lib_splice_requests,lib_copy_bytes,lib_copy_requests,lib_fallbacks,"
        "lib_zc_kernel_answered,server_ctxsw").split(",")
GIB = 1 << 30


def row(backing, wl, mode, mb_s, rep=1, cpu=None, p50=None, reqs=1024, ctx=None):
    r = dict.fromkeys(COLS, "-")
    r.update(backing=backing, workload=wl, jobs=1, rep=rep, mode=mode, io_bytes=GIB,
             bw_bytes=int(mb_s * 1e6), runtime_ms=1000, reader_cpu_s=1.0, ios=4096,
             reader_ctxsw=8192, system_cpu_s=2.0, lib_fallbacks=0)
    if p50 is not None:
        r.update(clat_p50_us=p50, clat_p99_us=p50 * 3)
    if mode not in ("native", "passthrough"):
        kind = {"copy": "copy", "splice": "splice"}.get(mode, "zc")
        r.update(server_cpu_s=cpu, kzc_read_bytes=GIB if kind == "zc" else 0,
                 kcopy_read_bytes=0 if kind == "zc" else GIB, kzc_refused=0,
                 lib_zc_bytes=0, lib_zc_requests=0, lib_splice_bytes=0,
                 lib_splice_requests=0, lib_copy_bytes=0, lib_copy_requests=0,
                 lib_zc_kernel_answered=0, server_ctxsw=ctx if ctx is not None else 2 * reqs)
        r[f"lib_{kind}_bytes"] = GIB
        r[f"lib_{kind}_requests"] = reqs
    return r


def run_report(tmp_path, rows):
    raw = tmp_path / "raw.csv"
    with open(raw, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "meta.txt").write_text("kernel=test\n")
    out = subprocess.run([sys.executable, os.path.join(HERE, "report.py"), str(raw),
                          str(tmp_path / "meta.txt"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    with open(tmp_path / "results.csv") as f:
        table = {(r["backing"], r["workload"], r["mode"]): r for r in csv.DictReader(f)}
    return out, table


def goal_line(out, start):
    lines = [l for l in out.splitlines() if l.startswith("| " + start)]
    assert len(lines) == 1, out
    return lines[0]


def test_goals_use_the_rows_they_name(tmp_path):
    rows = []
    for rep, scale in ((1, 1.0), (2, 1.1), (3, 0.5)):   # the medians are rep 1's
        rows += [row("tmpfs", "seq-1m", "copy", 100 * scale, rep, cpu=4.0),
                 row("tmpfs", "seq-1m", "splice", 200 * scale, rep, cpu=3.0),
                 row("tmpfs", "seq-1m", "zerocopy", 190 * scale, rep, cpu=2.0, ctx=512),
                 row("tmpfs", "seq-1m", "passthrough", 300 * scale, rep),
                 row("tmpfs", "seq-1m", "zerocopy-dio", 280 * scale, rep, cpu=1.0),
                 row("tmpfs", "seq-1m", "zerocopy-default", 185 * scale, rep, cpu=2.0),
                 row("disk", "qd1-4k", "copy", 14 * scale, rep, cpu=8.0, p50=100 / scale),
                 row("disk", "qd1-4k", "splice", 12 * scale, rep, cpu=8.0, p50=80 / scale),
                 row("disk", "qd1-4k", "zerocopy", 13 * scale, rep, cpu=2.0, p50=40 / scale)]
    out, table = run_report(tmp_path, rows)
    # 190 / max(copy 100, splice 200) on tmpfs, 13 / max(copy 14, splice 12) on disk
    assert "tmpfs seq-1m j1: 0.95 ✗" in goal_line(out, "zerocopy ≥ the better")
    assert "disk qd1-4k j1: 0.93 ✗" in goal_line(out, "zerocopy ≥ the better")
    assert goal_line(out, "zerocopy ≥ the better").endswith("| no |")

    # server CPU: splice 3.0 / zerocopy 2.0 s per GiB; disk 8.0 / 2.0 ≥ 2
    assert "tmpfs seq-1m j1: 1.50" in goal_line(out, "tmpfs: zerocopy server CPU")
    assert goal_line(out, "disk: zerocopy server CPU").endswith("| yes |")
    # p50: splice 80 µs / zerocopy 40 µs
    assert "disk qd1-4k j1: 2.00" in goal_line(out, "4 KiB QD1")
    # direct_io row: 280 / 300
    assert "tmpfs seq-1m j1: 0.93" in goal_line(out, "tmpfs seq-1m, -o direct_io")
    # default options against the tuned zerocopy row: 185 / 190
    assert "tmpfs seq-1m j1: 0.97" in goal_line(out, "default options")
    assert goal_line(out, "default options").endswith("| yes |")
    z = table[("tmpfs", "seq-1m", "zerocopy")]
    assert z["mb_s_median"] == "190.0" and z["server_cpu_s_per_gib"] == "2.000"
    assert z["server_ctxsw_per_fuse_read"] == "0.50"        # 512 / 1024 requests
    assert z["reader_ctxsw_per_io"] == "2.00"                # 8192 / 4096
    assert table[("disk", "qd1-4k", "zerocopy")]["clat_p50_us"] == "40.0"


def test_a_goal_without_its_rows_is_left_out(tmp_path):
    out, _ = run_report(tmp_path, [row("tmpfs", "seq-1m", "native", 500),
                                   row("tmpfs", "seq-1m", "zerocopy", 400, cpu=1.0)])
    assert "direct_io" not in out.split("Goals")[1]
    assert "QD1" not in out.split("Goals")[1]
    assert "default options" not in out.split("Goals")[1]


def test_small_write_rows_have_their_own_goal(tmp_path):
    """Issue 26 step 5: the small-write rows are judged against the better
    of copy and splice, and only by that goal (a write below
    fuse.zerocopy_write_min is copied, so the CPU goal of the large writes
    does not apply)."""
    rows = [row("tmpfs", "wapp-4", "copy", 1.0, cpu=4.0),
            row("tmpfs", "wapp-4", "splice", 1.2, cpu=4.0),
            row("tmpfs", "wapp-4", "zerocopy", 1.1, cpu=4.0),
            row("disk", "wrand-4k", "copy", 10.0, cpu=4.0),
            row("disk", "wrand-4k", "splice", 9.0, cpu=4.0),
            row("disk", "wrand-4k", "zerocopy", 10.5, cpu=4.0)]
    out, table = run_report(tmp_path, rows)
    line = goal_line(out, "small writes")
    assert "tmpfs wapp-4 j1: 0.92 ✗" in line            # 1.1 / max(1.0, 1.2)
    assert "disk wrand-4k j1: 1.05" in line             # 10.5 / max(10.0, 9.0)
    assert line.endswith("| 1 of 2 rows |")
    goals_part = out.split("Goals")[1]
    assert "every write row" not in goals_part and "copy's (shown" not in goals_part
    assert table[("disk", "wrand-4k", "zerocopy")]["mb_s_median"] == "10.5"


def test_every_workload_is_known_everywhere():
    """run's workload list, report.py's and the guest's fio arguments agree;
    the small-write rows run one job."""
    sys.path.insert(0, HERE)
    import report
    run = open(os.path.join(HERE, "run")).read()
    listed = run.split('ALL_WORKLOADS="')[1].split('"')[0].split()
    assert listed == report.WORKLOADS
    guest = open(os.path.join(HERE, "guest")).read()
    for wl in listed:
        assert f"\t{wl})" in guest or f" {wl})" in guest or f"{wl} |" in guest, wl
    for wl in report.SMALL_WRITE_WORKLOADS:
        jobs = subprocess.run(["bash", "-c", f'. "{HERE}/rows.sh"; bench_wl_jobs {wl} 1 4'],
                              capture_output=True, text=True, check=True).stdout.split()
        assert jobs == ["1"], (wl, jobs)


def test_issue_26_goals(tmp_path):
    """Issue 26's goals: context switches per FUSE_READ against splice's on
    tmpfs, 4 KiB QD1 latency against the lower of copy's and splice's,
    upstream's shape at 1.5x copy, 1 MiB O_DIRECT disk writes at 0.95x
    passthrough, and the read goals again for -o ring_read."""
    rows = [row("tmpfs", "qd1-4k", "copy", 10.0, cpu=4.0, p50=60, ctx=1024),
            row("tmpfs", "qd1-4k", "splice", 12.0, cpu=4.0, p50=80, ctx=1200),
            row("tmpfs", "qd1-4k", "zerocopy", 11.0, cpu=4.0, p50=75, ctx=2048),
            row("tmpfs", "qd1-4k", "zerocopy-rr", 13.0, cpu=4.0, p50=50, ctx=1024),
            row("disk", "up-1m", "copy", 100.0, cpu=4.0),
            row("disk", "up-1m", "zerocopy", 160.0, cpu=4.0),
            row("disk", "wdio-1m", "passthrough", 100.0),
            row("disk", "wdio-1m", "zerocopy", 93.0, cpu=1.0)]
    out, _ = run_report(tmp_path, rows)
    # p50: the lower of copy's 60 and splice's 80 µs, over zerocopy's 75
    assert "tmpfs qd1-4k j1: 0.80 ✗" in goal_line(out, "4 KiB QD1: zerocopy p50")
    # 1200 / 2048 switches per 1024 FUSE_READs
    assert "tmpfs qd1-4k j1: 0.59 ✗" in goal_line(out, "tmpfs: zerocopy server ctxsw")
    assert goal_line(out, "upstream's shape").endswith("disk up-1m j1: 1.60 | yes |")
    assert "disk wdio-1m j1: 0.93 ✗" in goal_line(out, "disk: zerocopy ≥ 0.95× kernel passthrough, 1 MiB O_DIRECT")
    assert goal_line(out, "-o ring_read: zerocopy-rr").endswith("tmpfs qd1-4k j1: 1.08 | yes |")
    assert "tmpfs qd1-4k j1: 1.20" in goal_line(out, "-o ring_read, 4 KiB QD1")
    assert "tmpfs qd1-4k j1: 1.17" in goal_line(out, "-o ring_read, tmpfs")
