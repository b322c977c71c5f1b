# SPDX-License-Identifier: GPL-2.0-or-later
"""Resources and bad input (issue 25 items 8 and 11), independent of the read
mode (passthrough.resources):

- a daemon limited to 64 file descriptors (prlimit) serves listings of a
  tree of hundreds of files (inode fds are bounded; file handles reopen),
  and a close() through the mount never fails, not even when the daemon's
  fd table is full; an inode number the source reuses once an inode's fd
  is closed names another file through the mount too; a SIGTERM while
  the daemon's fd table is full stops it cleanly;
- a refusal of kernel passthrough for one file (a backing file on a stacked
  file system) serves that file in the read mode and keeps passthrough for
  the others.
"""

import errno
import os
import shutil
import signal
import subprocess

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


@pytest.fixture
def few_fds(tmp_path):
    """A SOURCE tree of 300 files and 20 directories of 5, served by a
    daemon whose RLIMIT_NOFILE is 64 (soft and hard: it cannot raise it)."""
    if not shutil.which("prlimit"):
        pytest.fail("prlimit (util-linux) is missing")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    for i in range(300):
        (src / f"f{i:03d}").write_text(f"file {i}\n")
    for j in range(20):
        (src / f"d{j:02d}").mkdir()
        for k in range(5):
            (src / f"d{j:02d}" / f"g{k}").write_text(f"{j}/{k}\n")
    d = util.Daemon(str(src), str(mnt), ["-o", "copy"], str(tmp_path / "daemon.log"),
                    wrapper=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"])
    try:
        yield src, mnt, d
        rc, log = d.unmount()
        assert rc == 0, log
    finally:
        d.kill()


def test_listing_with_64_fds(few_fds):
    """ls -l of 300 files and a walk that stats and reads every file: one
    O_PATH fd per inode the kernel knows filled the daemon's table
    (EMFILE for every user after that)."""
    src, mnt, d = few_fds
    res = subprocess.run(["ls", "-l", str(mnt)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]
    assert len(res.stdout.splitlines()) == 1 + 300 + 20
    seen = 0
    for root, dirs, files in os.walk(mnt):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, mnt)
            assert os.lstat(path).st_size == os.lstat(src / rel).st_size, rel
            with open(path) as f:
                assert f.read() == (src / rel).read_text(), rel
            seen += 1
    assert seen == 300 + 100
    # everything once more, now that the first inodes' fds were reused
    res = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]


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
    for i in range(300):
        (src / f"f{i:03d}").write_text(f"file {i}\n")
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
