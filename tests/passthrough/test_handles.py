# SPDX-License-Identifier: GPL-2.0-or-later
"""File handles (issue 10 item 15): a handle the mount hands out with
name_to_handle_at(2) must open again with open_by_handle_at(2) after the
inode left the cache and after a remount (export support), or the mount
must refuse to hand one out (EOPNOTSUPP, so that xfstests' generic/426 and
generic/477 report "not run").  passthrough_zc refuses them
(FUSE_NO_EXPORT_SUPPORT in its INIT reply, Linux 6.9+); before that it handed
out handles that went stale (ESTALE after drop_caches and after a remount)."""

import ctypes
import errno
import os

import pytest

import util
from suite_policy import under_ci

AT_FDCWD = -100


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]


def name_to_handle(path):
    fh = FileHandle(handle_bytes=128)
    mount_id = ctypes.c_int()
    if util.libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(fh),
                                   ctypes.byref(mount_id), 0) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fh


def read_by_handle(mnt, fh):
    """The first bytes of the file @fh names, opened on the mount at @mnt."""
    mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = util.libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
        if fd == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(mfd)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def test_handles_survive_or_are_refused(tmp_path):
    if os.geteuid() != 0:
        if under_ci():
            pytest.fail("needs root (CI=true: not skipping)")
        pytest.skip("open_by_handle_at needs CAP_DAC_READ_SEARCH")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "f").write_bytes(b"by handle")
    d = util.Daemon(str(src), str(mnt), [], str(tmp_path / "d1.log"))
    try:
        try:
            fh = name_to_handle(os.path.join(mnt, "f"))
        except OSError as e:
            assert e.errno == errno.EOPNOTSUPP, e
            return		# refused cleanly: xfstests report "not run"
        assert read_by_handle(str(mnt), fh) == b"by handle"
        drop_caches()
        try:
            got = read_by_handle(str(mnt), fh)
        except OSError as e:
            raise AssertionError(f"after drop_caches: {e}")
        assert got == b"by handle"
    finally:
        rc, log = d.unmount()
    assert rc == 0, log
    d = util.Daemon(str(src), str(mnt), [], str(tmp_path / "d2.log"))
    try:
        try:
            got = read_by_handle(str(mnt), fh)
        except OSError as e:
            raise AssertionError(f"after a remount: {e}")
        assert got == b"by handle"
    finally:
        rc, log = d.unmount()
    assert rc == 0, log
