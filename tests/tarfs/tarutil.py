# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers of the tarfs_zc suite: trees, archives, mounts, tree comparison."""

import contextlib
import hashlib
import os
import re
import shutil
import stat
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MOUNT_TIMEOUT = 120  # a loaded machine, a VM under TCG


def binary():
    return os.environ.get("TARFS_BIN", os.path.join(REPO, "build", "bin", "tarfs_zc"))


def index_test():
    return os.environ.get("TARFS_INDEX_TEST",
                          os.path.join(os.path.dirname(binary()), "tarfs_index_test"))


def pattern(seed, size):
    """Deterministic bytes: no two 4 KiB pages alike, no member alike."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    return bytes(out[:size])


SIZES = [0, 1, 511, 512, 513, 4095, 4096, 4097, 65536 + 3, 131072, 1048576 + 7]


def make_tree(root):
    """Every kind of member: files of awkward sizes (so their data is at
    512-byte, not page, offsets in the archive), long names and link names,
    symlinks, hard links, directories with their own modes and times,
    fifos, devices, owners other than root, a fractional mtime."""
    root = str(root)
    os.makedirs(f"{root}/dir/sub", exist_ok=True)
    for i, size in enumerate(SIZES):
        with open(f"{root}/dir/f{size}", "wb") as f:
            f.write(pattern(i, size))
    long_dir = f"{root}/" + "d" * 120
    os.makedirs(long_dir, exist_ok=True)
    with open(f"{long_dir}/" + "n" * 150, "wb") as f:
        f.write(pattern("long", 10000))
    os.symlink("../dir/f4097", f"{root}/dir/sub/rel-link")
    os.symlink("/" + "t" * 180, f"{root}/long-link")
    os.link(f"{root}/dir/f513", f"{root}/dir/sub/hard")
    with open(f"{root}/päth with spaces ✓", "wb") as f:
        f.write(b"unicode\n")
    os.mkfifo(f"{root}/fifo")
    if os.geteuid() == 0:
        os.mknod(f"{root}/null", stat.S_IFCHR | 0o640, os.makedev(1, 3))
        os.mknod(f"{root}/blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.chown(f"{root}/dir/f4096", 1234, 5678)
        os.lchown(f"{root}/dir/sub/rel-link", 4321, 8765)
    os.chmod(f"{root}/dir/f1", 0o4755)
    os.chmod(f"{root}/dir/sub", 0o711)
    os.utime(f"{root}/dir/f0", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(f"{root}/dir/sub", (1_000_000_000, 1_000_000_000))
    return root


def make_archives(tree, outdir):
    outdir = str(outdir)
    made = {}
    for fmt in ("gnu", "oldgnu", "posix"):
        path = f"{outdir}/gnutar-{fmt}.tar"
        subprocess.run(["tar", f"--format={fmt}", "-cf", path, "-C", tree, "."],
                       check=True)
        made[f"gnutar-{fmt}"] = path
    if shutil.which("bsdtar"):
        for fmt in ("pax", "gnutar"):
            path = f"{outdir}/bsdtar-{fmt}.tar"
            subprocess.run(["bsdtar", f"--format={fmt}", "-cf", path, "-C", tree, "."],
                           check=True)
            made[f"bsdtar-{fmt}"] = path
    elif os.environ.get("CI") == "true":
        raise RuntimeError("bsdtar missing (apt-get install libarchive-tools)")
    return made


def extract(archive, dest, tool="tar"):
    """@archive extracted by @tool (tar: GNU tar; bsdtar) as root does:
    modes as archived, numeric owners.  bsdtar archives are extracted by
    bsdtar: GNU tar restores a directory's mtime before it extracts a hard
    link that bsdtar put later in that directory."""
    os.makedirs(dest, exist_ok=True)
    subprocess.run([tool, "--numeric-owner", "-p", "-xf", archive, "-C", dest],
                   check=True)
    return dest


STATS_RE = re.compile(r"tarfs_zc: stats: (.*)")


class Mount:
    def __init__(self, archive, mnt, opts, log):
        self.archive, self.mnt, self.log_path = archive, mnt, log
        self.opts = opts
        self.proc = None

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.logf = open(self.log_path, "w")
        args = [binary(), "-f", self.archive, self.mnt]
        if self.opts:
            args += ["-o", ",".join(self.opts)]
        self.proc = subprocess.Popen(args, stderr=self.logf, stdout=self.logf)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"tarfs_zc exited ({self.proc.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"no mount after {MOUNT_TIMEOUT} s: {self.log()}")
            time.sleep(0.05)
        return self

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """Unmount, wait for a clean exit; the daemon's stats."""
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], check=True)
        rc = self.proc.wait(timeout=MOUNT_TIMEOUT)
        self.logf.close()
        log = self.log()
        assert rc == 0, f"tarfs_zc exited {rc}: {log}"
        m = STATS_RE.search(log)
        stats = {}
        if m:
            for kv in m.group(1).split():
                k, v = kv.split("=")
                stats[k] = int(v)
        return stats, log


@contextlib.contextmanager
def mounted(archive, mnt, mode, extra=(), log=None):
    m = Mount(archive, mnt, [mode, "stats", *extra], log or f"{mnt}.log").start()
    try:
        yield m
    finally:
        if m.proc.poll() is None:
            m.stats, m.text = m.stop()


def check_mode(mode, stats, log, member_bytes=None):
    """What every run in @mode must show in its statistics."""
    assert stats, f"no stats line in the daemon log:\n{log}"
    if mode == "copy":
        assert stats["zc_bytes"] == 0 and stats["splice_bytes"] == 0, log
    elif mode == "splice":
        assert stats["zc_bytes"] == 0, log
    elif mode.startswith("zerocopy") and os.environ.get("FUSEZC_EXPECT_ZC") == "1":
        assert stats["zerocopy_active"] == 1, log
        assert stats["fallbacks"] == 0, log
        assert stats["copy_bytes"] == 0 and stats["splice_bytes"] == 0, log
        if member_bytes is not None:
            assert stats["zc_bytes"] >= member_bytes, log


def describe(root):
    """{relative path: what tar -x would make of it}, and the hard-link groups."""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            d = {"type": stat.S_IFMT(st.st_mode), "perm": stat.S_IMODE(st.st_mode),
                 "uid": st.st_uid, "gid": st.st_gid}
            if not stat.S_ISLNK(st.st_mode):
                d["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                d["size"] = st.st_size
                with open(p, "rb") as f:
                    d["sha256"] = hashlib.sha256(f.read()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = st.st_rdev
            out[rel] = d
    links = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out, links


def compare_trees(mnt, ref):
    got, got_links = describe(mnt)
    want, want_links = describe(ref)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == want[k], k
    assert got_links == want_links


def member_bytes(root):
    """Bytes of the regular files under @root, each inode once."""
    sizes = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                sizes[st.st_ino] = st.st_size
    return sum(sizes.values())
