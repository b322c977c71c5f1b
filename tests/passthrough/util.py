# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for the passthrough_zc tests: mounting, polling, statistics."""

import ctypes
import ctypes.util
import os
import re
import signal
import struct
import subprocess
import time

MOUNT_TIMEOUT = 10.0

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def binary():
    path = os.environ.get("FUSEZC_BIN")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "..", "..", "build", "bin", "passthrough_zc")
    return os.path.abspath(path)


def mode_options(mode):
    """-o words for a test mode ("default" means no read-mode option)."""
    if mode in ("", "default"):
        return []
    return ["-o", mode]


def is_mounted(mnt):
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            path = fields[4].encode().decode("unicode_escape")
            if path == mnt:
                return True
    return False


def mount_source(mnt):
    """The (source, fstype) of the mount at mnt, or None."""
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                sep = fields.index("-")
                return fields[sep + 2], fields[sep + 1]
    return None


def wait_mounted(mnt, proc=None, timeout=MOUNT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mnt):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode} before mounting")
        time.sleep(0.02)
    raise AssertionError(f"{mnt} not mounted after {timeout}s")


def wait_unmounted(mnt, timeout=MOUNT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_mounted(mnt):
            return
        time.sleep(0.02)
    raise AssertionError(f"{mnt} still mounted after {timeout}s")


def users_of(mnt):
    """Processes with a cwd, root, open file or mapping under mnt."""
    mnt = os.path.realpath(mnt)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/{x}") for x in ("cwd", "root")]
            fds = f"/proc/{pid}/fd"
            links += [os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)]
            with open(f"/proc/{pid}/maps") as f:
                links += [ln.split()[-1] for ln in f if "/" in ln]
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        hits = [ln for ln in links if ln == mnt or ln.startswith(mnt + "/")]
        if hits:
            found.append((int(pid), comm, hits[:3]))
    return found


def unmount(mnt, timeout=5.0):
    """fusermount3 -u (umount as a fallback), retried while the mount is
    busy: a process walking the tree (an indexer, another test's `find`)
    can hold it for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
        if res.returncode == 0:
            return
        res2 = subprocess.run(["umount", mnt], capture_output=True, text=True)
        if res2.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot unmount {mnt}: {res.stderr} {res2.stderr}"
                                 f" users: {users_of(mnt)}")
        time.sleep(0.1)


def force_unmount(mnt):
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def parse_stats(log):
    """The key=value pairs of the last 'stats:' line of a daemon log."""
    stats = {}
    for line in log.splitlines():
        if "passthrough_zc: stats:" in line:
            stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return stats


def daemon_pids(mnt):
    """Processes whose command line mentions mnt (our daemons)."""
    pids = []
    needle = os.path.realpath(mnt).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"passthrough_zc") and needle in cmd:
            pids.append(int(pid))
    return pids


def wait_no_daemon(mnt, timeout=MOUNT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon_pids(mnt):
            return
        time.sleep(0.05)
    raise AssertionError(f"daemon for {mnt} still running")


# --- syscalls Python's os module lacks ---------------------------------

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def _check(res):
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def renameat2(old, new, flags):
    _check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                          ctypes.c_uint(flags)))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime):
    """atime/mtime: (sec, nsec) tuples, or UTIME_NOW / UTIME_OMIT."""
    def ts(v):
        if isinstance(v, tuple):
            return _Timespec(v[0], v[1])
        return _Timespec(0, v)
    times = (_Timespec * 2)(ts(atime), ts(mtime))
    _check(libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0))


def fallocate(fd, mode, off, length):
    _check(libc.fallocate(fd, ctypes.c_int(mode), ctypes.c_long(off),
                          ctypes.c_long(length)))


class Daemon:
    """A passthrough_zc run in the foreground (-f) with its stderr in a file."""

    def __init__(self, src, mnt, options, logpath, extra_env=None, wrapper=()):
        self.src, self.mnt, self.logpath = src, mnt, logpath
        self.cmd = [*wrapper, binary(), "-f", "-o", "stats", *options, src, mnt]
        env = dict(os.environ, **(extra_env or {}))
        self.logf = open(logpath, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=env)
        try:
            wait_mounted(mnt, self.proc)
        except AssertionError:
            self.kill()
            raise AssertionError(f"mount failed: {' '.join(self.cmd)}\n{self.log()}")

    def log(self):
        with open(self.logpath) as f:
            return f.read()

    def unmount(self, timeout=MOUNT_TIMEOUT):
        """Unmount, wait for the daemon; returns (exit code, log)."""
        if self.proc.poll() is not None:
            force_unmount(self.mnt)
            raise AssertionError(f"daemon died with {self.proc.returncode}:\n{self.log()}")
        unmount(self.mnt)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not exit after unmount:\n{self.log()}")
        self.logf.close()
        wait_unmounted(self.mnt)
        return rc, self.log()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        force_unmount(self.mnt)
        self.logf.close()


# --- POSIX ACLs as xattrs (no acl package needed) --------------------------

ACL_UNDEFINED = 0xFFFFFFFF


def acl(text, ids=None):
    """system.posix_acl_* bytes for "u::rw,u:bob:---,g::r,m::r,o::r"; named
    entries take their id from ids.uid(name) (users) or getattr(ids, name)
    (groups)."""
    entries = []
    for item in text.split(","):
        kind, who, perms = item.split(":")
        perm = ("r" in perms) * 4 + ("w" in perms) * 2 + ("x" in perms)
        if kind == "u":
            tag, qid = (0x02, ids.uid(who)) if who else (0x01, ACL_UNDEFINED)
        elif kind == "g":
            tag, qid = (0x08, getattr(ids, who)) if who else (0x04, ACL_UNDEFINED)
        else:
            tag, qid = {"m": 0x10, "o": 0x20}[kind], ACL_UNDEFINED
        entries.append((tag, qid, perm))
    entries.sort()
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, q)
                                           for t, q, p in entries)


def set_acl(path, text, ids=None, default=False):
    name = "system.posix_acl_default" if default else "system.posix_acl_access"
    os.setxattr(path, name, acl(text, ids), follow_symlinks=False)
