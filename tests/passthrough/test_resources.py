# SPDX-License-Identifier: GPL-2.0-or-later
"""Resources and bad input (issue 25 items 8 and 11), independent of the read
mode (passthrough.resources):

- a daemon limited to 64 file descriptors (prlimit) serves listings of a
  tree of hundreds of files (inode fds are bounded; file handles reopen),
  and a close() through the mount never fails, not even when the daemon's
  fd table is full; an inode number the source reuses once an inode's fd
  is closed names another file through the mount too; a SIGTERM while
  the daemon's fd table is full stops it cleanly;
- the same listing by a server without file handles: an unprivileged one
  (run as nobody) and a root one whose SOURCE is an overlayfs (no handles
  to export): inodes reopen through their directory and name, which
  follows renames, exchanges and unlinks made through the mount;
- a refusal of kernel passthrough for one file (a backing file on a stacked
  file system) serves that file in the read mode and keeps passthrough for
  the others.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

import util
from conftest import expect_passthrough
from test_ops import pattern, read_file, write_file
from test_io import block_source  # noqa: F401 - a fixture
from test_startup import need_root


def _server_read_bytes(stats):
    return stats["zc_bytes"] + stats["splice_bytes"] + stats["copy_bytes"]


@pytest.fixture
def overlay_in_source(tmp_path):
    """SOURCE (tmp_path/x/src) with an overlayfs mounted at src/ovl: its
    files are one level stacked, and FUSE passthrough refuses them as
    backing files (ELOOP: max_stack_depth 1)."""
    need_root()
    src = tmp_path / "x" / "src"
    ovl = src / "ovl"
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (ovl, lower, upper, work):
        d.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "overlay", "fzc-test", "-o",
                          f"lowerdir={lower},upperdir={upper},workdir={work}", str(ovl)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount overlayfs: {res.stderr}")
    try:
        yield str(src)
    finally:
        subprocess.run(["umount", "-l", str(ovl)], capture_output=True)


@pytest.mark.daemon_output(r"passthrough_zc: passthrough refused for some files "
                           r"\(Too many levels of symbolic links\): the read mode "
                           r"serves them")
def test_passthrough_refused_for_one_file_only(overlay_in_source, mount_with):
    """The stacked file is served by the read mode; a file opened after it
    still goes through kernel passthrough (no READ reaches the daemon)."""
    if not expect_passthrough():
        pytest.skip("kernel passthrough is not expected here (root, Linux >= 6.9)")
    m = mount_with("copy", ["-o", "passthrough"])	# the read mode: copy
    assert m.src == overlay_in_source
    stacked, plain = pattern(1 << 20, 7), pattern(2 << 20, 8)
    write_file(m.s("ovl", "f"), stacked)
    write_file(m.s("plain"), plain)
    assert read_file(m.m("ovl", "f")) == stacked
    assert read_file(m.m("plain")) == plain
    stats = m.unmount()
    assert stats["passthrough_active"] == 1, m.log
    assert _server_read_bytes(stats) == len(stacked), \
        f"the daemon read {_server_read_bytes(stats)} bytes, the stacked file " \
        f"has {len(stacked)}:\n{m.log}"


# --- a daemon with few file descriptors --------------------------------------

NOFILE = 64


def _make_tree(src):
    for i in range(300):
        (src / f"f{i:03d}").write_text(f"file {i}\n")
    for j in range(20):
        (src / f"d{j:02d}").mkdir()
        for k in range(5):
            (src / f"d{j:02d}" / f"g{k}").write_text(f"{j}/{k}\n")


@pytest.fixture
def few_fds(tmp_path):
    """A SOURCE tree of 300 files and 20 directories of 5, served by a
    daemon whose RLIMIT_NOFILE is 64 (soft and hard: it cannot raise it)."""
    if not shutil.which("prlimit"):
        pytest.fail("prlimit (util-linux) is missing")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    _make_tree(src)
    d = util.Daemon(str(src), str(mnt), ["-o", "copy"], str(tmp_path / "daemon.log"),
                    wrapper=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"])
    try:
        yield src, mnt, d
        rc, log = d.unmount()
        assert rc == 0, log
    finally:
        d.kill()


# Run as the mount's user (python -c): ls -l of SOURCE's 300 files and 20
# directories, then a walk that stats and reads every file, then ls -lR.
LISTING = r"""
import os, subprocess, sys
src, mnt = sys.argv[1:3]
res = subprocess.run(["ls", "-l", mnt], capture_output=True, text=True, timeout=60)
assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]
assert len(res.stdout.splitlines()) == 1 + 300 + 20, res.stdout[-2000:]
seen = 0
for root, dirs, files in os.walk(mnt):
    for name in files:
        path = os.path.join(root, name)
        rel = os.path.relpath(path, mnt)
        assert os.lstat(path).st_size == os.lstat(os.path.join(src, rel)).st_size, rel
        with open(path) as f, open(os.path.join(src, rel)) as g:
            assert f.read() == g.read(), rel
        seen += 1
assert seen == 300 + 100, seen
# everything once more, now that the first inodes' fds were reused
res = subprocess.run(["ls", "-lR", mnt], capture_output=True, text=True, timeout=60)
assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]
"""


def _run(code, *args, user=None):
    """Run python code (as uid @user, its group, no other groups)."""
    kw = dict(user=user, group=user, extra_groups=[]) if user is not None else {}
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                         capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, res.stderr[-3000:]


def test_listing_with_64_fds(few_fds):
    """ls -l of 300 files and a walk that stats and reads every file: one
    O_PATH fd per inode the kernel knows filled the daemon's table
    (EMFILE for every user after that)."""
    src, mnt, d = few_fds
    _run(LISTING, src, mnt)


def test_close_never_fails_with_a_full_fd_table(few_fds):
    """Open files through the mount until the daemon's fd table is full
    (each open holds a source fd: EMFILE is the honest answer), then close
    them all: FLUSH must not turn the full table into EBADF; and the mount
    works again afterwards."""
    src, mnt, d = few_fds
    held = []
    try:
        for i in range(300):
            try:
                held.append(os.open(os.path.join(mnt, f"f{i:03d}"), os.O_RDONLY))
            except OSError as e:
                assert e.errno in (errno.EMFILE, errno.ENFILE), e
                break
        else:
            pytest.fail(f"300 opens with a {NOFILE}-fd daemon")
        assert len(held) > 10
    finally:
        errors = []
        for fd in held:
            try:
                os.close(fd)
            except OSError as e:
                errors.append(e.errno)
    assert not errors, f"close() failed: {[errno.errorcode[e] for e in errors]}"
    with open(os.path.join(mnt, "f299")) as f:
        assert f.read() == "file 299\n"


def test_stop_with_a_full_fd_table(tmp_path):
    """SIGTERM while the daemon's fd table is full (files held open through
    the mount): a clean stop, exit 0.  libfuse cancels its workers with
    pthread_cancel(), whose first call loads libgcc_s: with no fd left that
    aborted the daemon ("libgcc_s.so.1 must be installed for pthread_cancel
    to work", SIGABRT)."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    _make_tree(src)
    d = util.Daemon(str(src), str(mnt), ["-o", "copy"], str(tmp_path / "daemon.log"),
                    wrapper=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"])
    held = []
    try:
        for i in range(300):
            try:
                held.append(os.open(os.path.join(mnt, f"f{i:03d}"), os.O_RDONLY))
            except OSError as e:
                assert e.errno in (errno.EMFILE, errno.ENFILE), e
                break
        else:
            pytest.fail(f"300 opens with a {NOFILE}-fd daemon")
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(util.MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not stop on SIGTERM:\n{d.log()}")
        assert rc == 0, f"exit {rc}:\n{d.log()}"
    finally:
        for fd in held:
            try:
                os.close(fd)
            except OSError:
                pass	# the connection is gone
        d.kill()


def test_reused_inode_number_is_another_file(block_source, tmp_path):
    """Without its fd an inode does not pin its object: the source may give
    its number to a new file.  That file must be a new inode through the
    mount (cache=always keeps the old one's pages: its bytes would show).
    A fresh ext4 reuses a freed inode number at once."""
    src, mnt = block_source, tmp_path / "x" / "mnt"
    mnt.mkdir()
    os.mkdir(os.path.join(src, "a"))
    os.mkdir(os.path.join(src, "many"))
    for i in range(100):
        write_file(os.path.join(src, "many", f"m{i}"), b"m")
    write_file(os.path.join(src, "a", "f"), b"old bytes")
    d = util.Daemon(src, str(mnt), ["-o", "copy", "-o", "cache=always"],
                    str(tmp_path / "x" / "daemon.log"),
                    wrapper=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"])
    try:
        assert read_file(mnt / "a" / "f") == b"old bytes"
        ino = os.stat(os.path.join(src, "a", "f")).st_ino
        for i in range(100):		# closes a/f's fd (16 kept)
            os.stat(mnt / "many" / f"m{i}")
        os.unlink(os.path.join(src, "a", "f"))
        write_file(os.path.join(src, "a", "g"), b"new bytes")
        assert os.stat(os.path.join(src, "a", "g")).st_ino == ino, \
            "the source did not reuse the inode number (the daemon pins it?)"
        assert read_file(mnt / "a" / "g") == b"new bytes"
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "a" / "f")
    finally:
        rc, log = d.unmount()
    assert rc == 0, log


# --- servers without file handles ----------------------------------------------

NOBODY = 65534


class Handleless:
    """A SOURCE tree as in few_fds, served with RLIMIT_NOFILE 64 by a server
    that cannot reopen inodes by file handle; run() runs code as the user
    that can use the mount."""

    def __init__(self, src, mnt, logpath, user, wrapper):
        self.src, self.mnt, self.logpath = src, mnt, logpath
        self.user, self.wrapper, self.daemon = user, wrapper, None

    def start(self, options):
        self.daemon = util.Daemon(str(self.src), str(self.mnt), options, self.logpath,
                                  wrapper=["prlimit", f"--nofile={NOFILE}:{NOFILE}",
                                           "--", *self.wrapper])
        return self

    def run(self, code):
        _run(code, self.src, self.mnt, user=self.user)


@pytest.fixture(params=["unprivileged", "overlay"])
def handleless(request, tmp_path):
    """unprivileged: the daemon runs as nobody (no CAP_DAC_READ_SEARCH: no
    open_by_handle_at) on a tree nobody owns, and the checks run as nobody
    (the mount is not allow_other); /dev/fuse is made 0666 for the test
    where it is not.  overlay: a root daemon whose SOURCE is
    an overlayfs without nfs_export (name_to_handle_at: EOPNOTSUPP)."""
    need_root()
    for tool in ("prlimit", "setpriv"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} (util-linux) is missing")
    cleanup = []
    if request.param == "unprivileged":
        # Debian's udev makes /dev/fuse 0666; some containers leave it 0600
        mode = os.stat("/dev/fuse").st_mode & 0o777
        if mode & 0o006 != 0o006:
            os.chmod("/dev/fuse", mode | 0o666)
            cleanup.append(lambda: os.chmod("/dev/fuse", mode))
        # tmp_path's parents are root's 0700: a 0755 directory nobody can reach
        base = tempfile.mkdtemp(prefix="fzc-handleless-", dir="/var/tmp")
        os.chmod(base, 0o755)
        cleanup.append(lambda: shutil.rmtree(base, ignore_errors=True))
        src, mnt = (os.path.join(base, n) for n in ("src", "mnt"))
        for d in (src, mnt):
            os.mkdir(d)
        _make_tree(type(tmp_path)(src))
        for root, dirs, files in os.walk(base):
            for n in [root] + [os.path.join(root, f) for f in dirs + files]:
                os.lchown(n, NOBODY, NOBODY)
        h = Handleless(src, mnt, str(tmp_path / "daemon.log"), NOBODY,
                       ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                        "--clear-groups", "--"])
    else:
        src, mnt = tmp_path / "src", tmp_path / "mnt"
        lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
        for d in (src, mnt, lower, upper, work):
            d.mkdir()
        res = subprocess.run(["mount", "-t", "overlay", "fzc-test", "-o",
                              f"lowerdir={lower},upperdir={upper},workdir={work}",
                              str(src)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"cannot mount overlayfs: {res.stderr}")
        cleanup.append(lambda: subprocess.run(["umount", "-l", str(src)],
                                              capture_output=True))
        _make_tree(src)
        h = Handleless(str(src), str(mnt), str(tmp_path / "daemon.log"), None, [])
    try:
        yield h
        if h.daemon:
            rc, log = h.daemon.unmount()
            assert rc == 0, log
    finally:
        if h.daemon:
            h.daemon.kill()
        for f in reversed(cleanup):
            f()


def test_listing_with_64_fds_without_handles(handleless):
    """The listing of test_listing_with_64_fds by a server that cannot
    reopen by file handle: before, each such inode kept its O_PATH fd and
    the 64-fd table filled (EMFILE)."""
    handleless.start(["-o", "copy"]).run(LISTING)


# As the mount's user: O_PATH fds (no FUSE OPEN: nothing keeps the
# daemon's fds open) hold inodes the kernel knows; a walk over 100 other
# files closes the daemon's fds of them; renames, an exchange and unlinks
# are made through the mount, with more walks between.  Each inode is then
# opened through its O_PATH fd (/proc/self/fd/N or openat: no LOOKUP of
# its name, which would give the daemon the name anew, and no retry of an
# ESTALE by the VFS as a path walk does): it reopens through the name it
# has now.
RENAMES = r"""
import ctypes, os, sys
src, mnt = sys.argv[1:3]
m = lambda *p: os.path.join(mnt, *p)

rounds = iter(range(3))
def evict():	# 100 inodes the kernel has not seen (it caches the others)
    r = next(rounds)
    for i in range(100 * r, 100 * r + 100):
        os.lstat(m(f"f{i:03d}"))

def rd(path, dir_fd=None):
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd) as f:
        return f.read()

libc = ctypes.CDLL(None, use_errno=True)
def exchange(a, b):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), a)

held = {p: os.open(m(p), os.O_PATH | os.O_NOFOLLOW)
        for p in ("d00/g0", "d01", "d03/g0", "d05/g0", "d05/g1", "d06/g0", "d06/g1",
                  "d07/g2")}
evict()
os.rename(m("d00", "g0"), m("d02", "moved"))	# a file to another directory
os.rename(m("d01"), m("d19", "sub"))		# a directory under another one
os.link(m("d03", "g0"), m("d03", "other"))	# a second name; the first removed
os.unlink(m("d03", "g0"))
exchange(m("d05", "g0"), m("d05", "g1"))	# two names swapped
os.rename(m("d06", "g0"), m("d06", "g1"))	# onto a known file
os.rename(m("d07", "g2"), m("d07", "g9"))	# renamed twice, fds closed between
evict()
os.rename(m("d07", "g9"), m("d08", "g9"))
evict()
want = {"d00/g0": "0/0\n", "d03/g0": "3/0\n", "d05/g0": "5/0\n", "d05/g1": "5/1\n",
        "d06/g0": "6/0\n", "d06/g1": "6/1\n", "d07/g2": "7/2\n"}
for p, data in want.items():
    got = rd(f"/proc/self/fd/{held[p]}")
    assert got == data, (p, got, data)
got = rd("g4", dir_fd=held["d01"])		# a name the kernel has not seen
assert got == "1/4\n", got
# and by path
checks = {("d02", "moved"): "0/0\n", ("d19", "sub", "g1"): "1/1\n",
          ("d03", "other"): "3/0\n", ("d05", "g0"): "5/1\n", ("d05", "g1"): "5/0\n",
          ("d06", "g1"): "6/0\n", ("d08", "g9"): "7/2\n"}
for path, data in checks.items():
    got = rd(m(*path))
    assert got == data, (path, got, data)
for gone in (("d00", "g0"), ("d01",), ("d03", "g0"), ("d06", "g0"), ("d07", "g2")):
    assert not os.path.lexists(m(*gone)), gone
"""


def test_renames_without_handles(handleless):
    """An inode without a file handle whose fd was closed reopens through
    the name it has now: renames, an exchange, a rename onto a known file
    and an unlink of the first of two names, each made through the mount
    (cache=always: the kernel keeps its dentries and attributes)."""
    handleless.start(["-o", "copy", "-o", "cache=always"]).run(RENAMES)
