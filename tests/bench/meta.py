#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""tests/bench/meta.py - metadata rows: what acting as the caller costs.

  meta.py run --server BIN --out DIR [--files N] [--reps R]   (in the VM, root)
  meta.py report RAW_CSV OUTDIR                                (on the host)

A root passthrough_zc performs every operation the source checks (open,
create, chmod, setxattr, rename, unlink, ...) with the caller's fs uid, fs
gid and supplementary groups, except for a root caller, who needs no
switch.  Each row times N operations of one kind on a fresh tmpfs source
and a fresh mount (allow_other), side by side in one run:

  native       the source itself, as uid 60001
  root         through passthrough_zc, as root: no switch
  user         through passthrough_zc, as uid 60001: a switch per operation
  user-no_acl  the same with -o no_posix_acl: without the kernel's ACL
               checks (their GETXATTRs), on by default

The report gives the median operations per second (min-max), the server's
CPU time per operation, and the ratios user-no_acl / root (the switch alone),
user / user-no_acl (the kernel's ACL checks) and user / root (both).
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import time

USER = 60001
CONFIGS = {
    "native": (None, USER),
    "root": ([], 0),
    "user": ([], USER),
    "user-no_acl": (["-o", "no_posix_acl"], USER),
}
WORKLOADS = ["stat", "open", "create", "chmod", "setxattr", "rename", "unlink", "ls-l"]
COLUMNS = ["workload", "config", "rep", "ops", "seconds", "server_cpu_s"]
ROOT = "/run/fzmeta"


def operate(workload, d, n):
    """The timed loop, in the caller's process: n operations under d."""
    names = [os.path.join(d, f"f{i:05d}") for i in range(n)]
    start = time.monotonic()
    if workload == "stat":
        for p in names:
            os.lstat(p)
    elif workload == "open":
        for p in names:
            os.close(os.open(p, os.O_RDONLY))
    elif workload == "create":
        for p in names:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif workload == "chmod":
        for p in names:
            os.chmod(p, 0o600)
    elif workload == "setxattr":
        for p in names:
            os.setxattr(p, "user.bench", b"1")
    elif workload == "rename":
        for p in names:
            os.rename(p, p + ".r")
    elif workload == "unlink":
        for p in names:
            os.unlink(p)
    elif workload == "ls-l":
        with os.scandir(d) as it:
            seen = sum(1 for e in it if e.stat(follow_symlinks=False))
        assert seen == n, seen
    return time.monotonic() - start


def as_caller(uid, workload, d, n):
    """operate() in a child with uid/gid @uid and no supplementary groups."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            if uid:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.write(wr, repr(operate(workload, d, n)).encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - reported by the parent
            os.write(wr, f"error {e!r}".encode())
            os._exit(1)
    os.close(wr)
    with os.fdopen(rd) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if status:
        sys.exit(f"meta: {workload} as uid {uid}: {out}")
    return float(out)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def populate(d, workload, n, uid):
    os.mkdir(d)
    if workload != "create":
        for i in range(n):
            with open(os.path.join(d, f"f{i:05d}"), "w"):
                pass
            os.chown(os.path.join(d, f"f{i:05d}"), uid, uid)
    os.chown(d, uid, uid)


def mount(server, src, mnt, options, log):
    proc = subprocess.Popen([server, "-f", "-o", "copy,allow_other", *options, src, mnt],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while subprocess.run(["mountpoint", "-q", mnt]).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"meta: {server} did not mount {src}")
        time.sleep(0.05)
    os.stat(mnt)	# INIT done
    return proc


def unmount(proc, mnt):
    subprocess.run(["umount", mnt], check=True)
    if proc.wait(30) != 0:
        sys.exit(f"meta: the server exited with {proc.returncode}")


def run(args):
    if os.geteuid() != 0:
        sys.exit("meta: run as root (inside tests/vm/run)")
    src, mnt = f"{ROOT}/src", f"{ROOT}/mnt"
    os.makedirs(src, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "fzmeta", src], check=True)
    os.chmod(src, 0o755)
    raw = open(os.path.join(args.out, "meta-raw.csv"), "w", newline="")
    out = csv.writer(raw)
    out.writerow(COLUMNS)
    workloads = args.workloads.split(",") if args.workloads else WORKLOADS
    configs = args.configs.split(",") if args.configs else list(CONFIGS)
    for name, known in (("workload", WORKLOADS), ("config", CONFIGS)):
        for w in workloads if name == "workload" else configs:
            if w not in known:
                sys.exit(f"meta: unknown {name} '{w}' (one of: {', '.join(known)})")
    total, k = args.reps * len(workloads) * len(configs), 0
    with open(f"{ROOT}/server.log", "w") as log:
        for rep in range(1, args.reps + 1):
            for workload in workloads:
                for config in configs:
                    options, uid = CONFIGS[config]
                    k += 1
                    d = f"{src}/{workload}-{config}-{rep}"
                    populate(d, workload, args.files, uid)
                    proc = None
                    if options is not None:
                        proc = mount(args.server, src, mnt, options, log)
                        d = f"{mnt}/{os.path.basename(d)}"
                    subprocess.run(["sync"])
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("3")
                    cpu0 = cpu_seconds(proc.pid) if proc else 0.0
                    secs = as_caller(uid, workload, d, args.files)
                    cpu = cpu_seconds(proc.pid) - cpu0 if proc else None
                    if proc:
                        unmount(proc, mnt)
                    out.writerow([workload, config, rep, args.files, f"{secs:.4f}",
                                  "-" if cpu is None else f"{cpu:.3f}"])
                    raw.flush()
                    print(f"meta: [{k}/{total}] {workload:8} {config:11} rep{rep} "
                          f"{args.files / secs:9.0f} ops/s", flush=True)
    raw.close()
    subprocess.run(["umount", src])


def summarise(rows):
    """{(workload, config): (median ops/s, median server CPU us per op,
    min ops/s, max ops/s)}."""
    runs = {}
    for r in rows:
        runs.setdefault((r["workload"], r["config"]), []).append(r)
    out = {}
    for key, rs in runs.items():
        rates = [int(r["ops"]) / float(r["seconds"]) for r in rs]
        cpu = [float(r["server_cpu_s"]) * 1e6 / int(r["ops"]) for r in rs
               if r["server_cpu_s"] not in ("", "-")]
        out[key] = (statistics.median(rates), statistics.median(cpu) if cpu else None,
                    min(rates), max(rates))
    return out


def ratio(summary, workload, a, b):
    """a's operations per second / b's, or None."""
    if (workload, a) not in summary or (workload, b) not in summary:
        return None
    return summary[(workload, a)][0] / summary[(workload, b)][0]


def table(summary):
    fmt = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731

    def rate(wl, c):
        if (wl, c) not in summary:
            return "—"
        med, _, lo, hi = summary[(wl, c)]
        return f"{med:.0f} ({lo:.0f}–{hi:.0f})"
    lines = ["| workload | " + " | ".join(f"{c} ops/s" for c in CONFIGS) +
             " | server µs/op root / user | switch: user-no_acl ÷ root"
             " | ACL checks: user ÷ user-no_acl | both: user ÷ root |",
             "| --- |" + " ---: |" * (len(CONFIGS) + 4)]
    for wl in WORKLOADS:
        if not any((wl, c) in summary for c in CONFIGS):
            continue
        cpu = [summary.get((wl, c), (None, None))[1] for c in ("root", "user")]
        lines.append(f"| {wl} | " + " | ".join(rate(wl, c) for c in CONFIGS) +
                     f" | {fmt(cpu[0], 0)} / {fmt(cpu[1], 0)}"
                     f" | {fmt(ratio(summary, wl, 'user-no_acl', 'root'))}"
                     f" | {fmt(ratio(summary, wl, 'user', 'user-no_acl'))}"
                     f" | {fmt(ratio(summary, wl, 'user', 'root'))} |")
    return lines


def report(args):
    with open(args.raw, newline="") as f:
        rows = list(csv.DictReader(f))
    summary = summarise(rows)
    lines = ["Metadata rows (tests/bench/meta): median (min–max) operations per second "
             f"of {rows[0]['ops']} operations, {max(int(r['rep']) for r in rows)} "
             "repetition(s), one VM run.  user-no_acl ÷ root < 1: what acting as the "
             "caller costs; user ÷ user-no_acl < 1: what the kernel's ACL checks cost.",
             ""]
    lines += table(summary)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.outdir, "meta.md"), "w") as f:
        f.write(text)
    print(text, end="")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--server", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--files", type=int, default=500)
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--workloads", help="comma-separated subset of: " + " ".join(WORKLOADS))
    r.add_argument("--configs", help="comma-separated subset of: " + " ".join(CONFIGS))
    s = sub.add_parser("report")
    s.add_argument("raw")
    s.add_argument("outdir")
    args = p.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
