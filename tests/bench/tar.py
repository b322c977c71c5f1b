#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tests/bench/tar.py - archive rows: members read out of a tar archive.

  tar.py run --server BIN --out DIR [--mib N] [--reps R] [--disk DEV]   (in the VM, root)
  tar.py report RAW_CSV OUTDIR                                           (on the host)

Two archives, made in the VM on each backing (tmpfs; ext4 on the virtio
disk when --disk is given):

  1m    members of 1 MiB
  wds   a WebDataset-like shard: member sizes log-uniform from 4 KiB to
        1 MiB (fixed seed), each followed by a 16-byte "label" member

Each row reads every member of the archive once, in archive order, with
1 MiB reads (preadv() into one page-aligned buffer) from a fresh open of
each member, page cache dropped before the run (tmpfs stays in memory:
that is its nature):

  native        the same byte ranges read from the archive file itself
  copy, splice, zerocopy   tarfs_zc -o MODE (zerocopy: -o zerocopy=required)
  zerocopy-direct  the same, the reader opening each member O_DIRECT: the
                lent pages are the reader's own, one copy as native (the
                others: the archive's page cache into the member's, then
                into the reader)
  archivemount  archivemount -o readonly (FUSE, libarchive; copies in the server)

Reported: MB/s (median over reps, min-max), the server's CPU seconds per
GiB read (utime + stime of the daemon, all threads), where a member's time
goes (ms in open(), i.e. the LOOKUP round trip, and ms reading), and the goals:
zerocopy >= 0.9x native on 1m/disk, >= the better of copy and splice on
every row, >= 3x archivemount.
"""
import argparse
import csv
import mmap
import os
import random
import statistics
import subprocess
import sys
import tarfile
import time

CONFIGS = ["native", "copy", "splice", "zerocopy", "zerocopy-direct", "archivemount"]
ARCHIVES = ["1m", "wds"]
COLUMNS = ["backing", "archive", "config", "rep", "bytes", "seconds", "server_cpu_s",
           "members", "open_s"]
ROOT = "/run/fztar"
CHUNK = 1 << 20


def member_sizes(kind, total):
    if kind == "1m":
        return [("m%05d.bin" % i, CHUNK) for i in range(total // CHUNK)]
    rnd = random.Random(27)
    out, n, i = [], 0, 0
    while n < total:
        size = int(4096 * (256 ** rnd.random()))  # 4 KiB .. 1 MiB, log-uniform
        out.append(("s%06d.jpg" % i, size))
        out.append(("s%06d.cls" % i, 16))
        n += size + 16
        i += 1
    return out


def make_archive(path, kind, total):
    """The archive, written by Python's tarfile (GNU format), data pseudo-random."""
    block = os.urandom(CHUNK)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, size in member_sizes(kind, total):
            ti = tarfile.TarInfo(name)
            ti.size = size
            ti.mtime = 1_700_000_000
            t.addfile(ti, _Reader(block, size))
    with tarfile.open(path) as t:
        return [(m.name, m.offset_data, m.size) for m in t.getmembers()]


class _Reader:
    def __init__(self, block, size):
        self.block, self.left = block, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return (self.block * (n // len(self.block) + 1))[:n]


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime, stime


def read_members(mnt, members, direct=False):
    """bytes read, seconds spent in open() (the member's LOOKUP).  Every
    reader reads into one page-aligned buffer, as a C reader would (a
    fresh Python bytes object per read would page-fault a new MiB each
    time); @direct: opened O_DIRECT (FUSE direct I/O: the reader's own
    pages are the request's)."""
    n = 0
    open_s = 0.0
    buf = mmap.mmap(-1, CHUNK)
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    for name, _, size in members:
        t0 = time.monotonic()
        fd = os.open(os.path.join(mnt, name), flags)
        open_s += time.monotonic() - t0
        try:
            off = 0
            while off < size:
                got = os.preadv(fd, [buf], off)
                if not got:
                    raise RuntimeError(f"{name}: short at {off} of {size}")
                off += got
            n += off
        finally:
            os.close(fd)
    return n, open_s


def read_native(archive, members):
    """The same byte ranges from the archive itself, into the same kind of
    buffer as read_members()."""
    fd = os.open(archive, os.O_RDONLY)
    buf = mmap.mmap(-1, CHUNK)
    view = memoryview(buf)
    n = 0
    try:
        for _, start, size in members:
            off = 0
            while off < size:
                got = os.preadv(fd, [view[:min(CHUNK, size - off)]], start + off)
                if not got:
                    raise RuntimeError(f"archive short at {start + off}")
                off += got
            n += off
    finally:
        view.release()
        os.close(fd)
    return n


def wait_mount(mnt, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("no mount")
        time.sleep(0.05)


def one_row(server, archive, members, config):
    """bytes, seconds, server CPU seconds, seconds in open() of one read of
    every member."""
    if config == "native":
        drop_caches()
        t0 = time.monotonic()
        n = read_native(archive, members)
        return n, time.monotonic() - t0, 0.0, 0.0
    mnt = f"{ROOT}/mnt"
    os.makedirs(mnt, exist_ok=True)
    if config == "archivemount":
        args = ["archivemount", "-f", "-o", "readonly", archive, mnt]
    else:
        mode = "zerocopy=required" if config.startswith("zerocopy") else config
        args = [server, "-f", "-o", f"{mode},no_progress", archive, mnt]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        wait_mount(mnt, proc)
        os.listdir(mnt)
        drop_caches()
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        n, open_s = read_members(mnt, members, direct=config.endswith("-direct"))
        secs = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        subprocess.run(["umount", mnt], check=False)
        proc.wait(timeout=300)
    return n, secs, cpu, open_s


def run(a):
    os.makedirs(ROOT, exist_ok=True)
    backings = {"tmpfs": f"{ROOT}/tmpfs"}
    os.makedirs(backings["tmpfs"], exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={2 * a.mib + 64}m", "fztar",
                    backings["tmpfs"]], check=True)
    if a.disk:
        backings["disk"] = f"{ROOT}/disk"
        os.makedirs(backings["disk"], exist_ok=True)
        subprocess.run(["mount", "-o", "noatime", a.disk, backings["disk"]], check=True)
    rows = []
    for backing, d in backings.items():
        for kind in ARCHIVES:
            archive = f"{d}/{kind}.tar"
            members = make_archive(archive, kind, a.mib << 20)
            print(f"tar: {backing}/{kind}: {len(members)} members, "
                  f"{os.path.getsize(archive) >> 20} MiB", flush=True)
            for rep in range(a.reps):
                for config in CONFIGS:
                    n, secs, cpu, open_s = one_row(a.server, archive, members, config)
                    rows.append(dict(backing=backing, archive=kind, config=config,
                                     rep=rep, bytes=n, seconds=f"{secs:.4f}",
                                     server_cpu_s=f"{cpu:.3f}", members=len(members),
                                     open_s=f"{open_s:.4f}"))
                    print(f"  {config:13s} rep {rep}: {n / secs / 1e6:8.1f} MB/s"
                          f"  server cpu {cpu:.2f} s  open {open_s:.2f} s", flush=True)
            os.unlink(archive)
    with open(os.path.join(a.out, "tar-raw.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def summarise(rows):
    """{(backing, archive): {config: (median MB/s, min, max, cpu s/GiB)}}"""
    groups = {}
    for r in rows:
        key = (r["backing"], r["archive"])
        mbs = int(r["bytes"]) / float(r["seconds"]) / 1e6
        cpu = float(r["server_cpu_s"]) / (int(r["bytes"]) / (1 << 30))
        groups.setdefault(key, {}).setdefault(r["config"], []).append((mbs, cpu))
    out = {}
    for key, cfgs in groups.items():
        out[key] = {c: (statistics.median(m for m, _ in v), min(m for m, _ in v),
                        max(m for m, _ in v), statistics.median(c_ for _, c_ in v))
                    for c, v in cfgs.items()}
    return out


def per_member(rows):
    """{(backing, archive): {config: (median ms in open(), median ms reading)}}
    per member: where a member's time goes (open: the LOOKUP round trip;
    reading: the READ round trips and the data)."""
    groups = {}
    for r in rows:
        if "open_s" not in r or r["open_s"] in ("", None):
            continue
        m = int(r["members"])
        opened = float(r["open_s"]) * 1e3 / m
        reading = (float(r["seconds"]) - float(r["open_s"])) * 1e3 / m
        groups.setdefault((r["backing"], r["archive"]), {}).setdefault(
            r["config"], []).append((opened, reading))
    return {key: {c: (statistics.median(o for o, _ in v), statistics.median(d for _, d in v))
                  for c, v in cfgs.items()}
            for key, cfgs in groups.items()}


def goals(summary):
    """[(text, ok)] of the issue's goals."""
    out = []
    for (backing, kind), s in sorted(summary.items()):
        if "zerocopy" not in s:
            continue
        zc = s["zerocopy"][0]
        if kind == "1m" and backing == "disk" and "native" in s:
            r = zc / s["native"][0]
            out.append((f"{backing}/{kind}: zerocopy {r:.2f}x native (goal >= 0.9)", r >= 0.9))
        best = max(s[c][0] for c in ("copy", "splice") if c in s)
        r = zc / best
        out.append((f"{backing}/{kind}: zerocopy {r:.2f}x the better of copy and splice "
                    f"(goal >= 1)", r >= 1.0))
        if "archivemount" in s:
            r = zc / s["archivemount"][0]
            out.append((f"{backing}/{kind}: zerocopy {r:.2f}x archivemount (goal >= 3)",
                        r >= 3.0))
    return out


def report(a):
    with open(a.raw) as f:
        rows = list(csv.DictReader(f))
    summary = summarise(rows)
    lines = ["| backing | archive | " + " | ".join(CONFIGS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in CONFIGS) + " |"]
    for (backing, kind), s in sorted(summary.items()):
        cells = []
        for c in CONFIGS:
            if c not in s:
                cells.append("-")
                continue
            med, lo, hi, cpu = s[c]
            cpu_s = "" if c == "native" else f", {cpu:.2f} s/GiB"
            d = 1 if med < 100 else 0   # small numbers keep a decimal
            cells.append(f"{med:.{d}f} ({lo:.{d}f}-{hi:.{d}f}){cpu_s}")
        lines.append(f"| {backing} | {kind} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("MB/s: median (min-max) over the repetitions; s/GiB: the server's CPU "
                 "seconds (user + system, all threads) per GiB read.")
    lines.append("")
    for text, ok in goals(summary):
        lines.append(f"- {'met' if ok else 'NOT met'}: {text}")
    split = per_member(rows)
    if split:
        lines += ["", "Per member, median ms: in open() (the LOOKUP round trip) + reading "
                  "(READ round trips and data); native opens nothing.", "",
                  "| backing | archive | " + " | ".join(CONFIGS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in CONFIGS) + " |"]
        for (backing, kind), s in sorted(split.items()):
            cells = [f"{s[c][0]:.3f} + {s[c][1]:.3f}" if c in s else "-" for c in CONFIGS]
            lines.append(f"| {backing} | {kind} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.outdir, "tar.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--server", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--mib", type=int, default=256)
    r.add_argument("--reps", type=int, default=1)
    r.add_argument("--disk")
    r.set_defaults(fn=run)
    q = sub.add_parser("report")
    q.add_argument("raw")
    q.add_argument("outdir")
    q.set_defaults(fn=report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
