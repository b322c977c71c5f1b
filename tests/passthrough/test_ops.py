# SPDX-License-Identifier: GPL-2.0-or-later
"""Every filesystem operation, in every read mode, checked against SOURCE."""

import errno
import fcntl
import mmap
import os
import stat
import struct
import time

import pytest

import util
from conftest import expect_passthrough, expect_zc, server_read_bytes


def pattern(size, seed=0):
    """Deterministic, position-dependent bytes (catches misplaced ranges)."""
    block = bytearray()
    i = seed
    while len(block) < size:
        block += struct.pack("<QQ", i, i * 0x9E3779B97F4A7C15 & (2**64 - 1))
        i += 1
    return bytes(block[:size])


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


SIZES = [0, 1, 4095, 4096, 4097, 131072 + 17, (1 << 20) + 3, 5 << 20]


def test_read_content(fs):
    for i, size in enumerate(SIZES):
        write_file(fs.s(f"f{i}"), pattern(size, i))
    for i, size in enumerate(SIZES):
        assert read_file(fs.m(f"f{i}")) == pattern(size, i), size
    # partial reads at odd offsets, across page and request boundaries
    with open(fs.m("f7"), "rb") as f:
        data = pattern(5 << 20, 7)
        for off, n in [(1, 10), (4095, 2), (1 << 20, 1 << 20), ((5 << 20) - 5, 100)]:
            assert os.pread(f.fileno(), n, off) == data[off:off + n]
    stats = fs.unmount()
    if fs.mode == "copy":
        assert stats["copy_bytes"] > 0
    elif fs.mode == "splice":
        assert stats["splice_bytes"] > 0
    elif fs.mode == "passthrough" and expect_passthrough():
        assert server_read_bytes(stats) == 0
    elif fs.mode.startswith("zerocopy") and not expect_zc():
        assert stats["splice_bytes"] > 0 and stats["zc_bytes"] == 0
    elif fs.mode.startswith("zerocopy"):
        assert stats["zc_bytes"] > 0


def same_stat(a, b, fields=("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid",
                            "st_size", "st_mtime_ns", "st_rdev")):
    for f in fields:
        assert getattr(a, f) == getattr(b, f), f


def test_stat_fields(fs):
    write_file(fs.s("file"), b"x" * 12345)
    os.mkdir(fs.s("dir"))
    os.symlink("file", fs.s("link"))
    os.mkfifo(fs.s("fifo"))
    os.chmod(fs.s("file"), 0o640)
    os.utime(fs.s("file"), ns=(1_000_000_123, 2_000_000_456))
    for name in ("file", "dir", "link", "fifo"):
        same_stat(os.lstat(fs.m(name)), os.lstat(fs.s(name)))
    same_stat(os.stat(fs.mnt), os.stat(fs.src), ("st_mode", "st_ino", "st_uid"))
    assert os.stat(fs.m("file")).st_blocks == os.stat(fs.s("file")).st_blocks
    with pytest.raises(FileNotFoundError):
        os.stat(fs.m("missing"))


def test_create_write(fs):
    data = pattern(3 << 20, 3)
    write_file(fs.m("new"), data)
    assert read_file(fs.s("new")) == data
    assert read_file(fs.m("new")) == data
    # overwrite in the middle, then append
    with open(fs.m("new"), "r+b") as f:
        f.seek(1000)
        f.write(b"A" * 5000)
    with open(fs.m("new"), "ab") as f:
        f.write(b"tail")
    exp = data[:1000] + b"A" * 5000 + data[6000:] + b"tail"
    assert read_file(fs.s("new")) == exp
    assert read_file(fs.m("new")) == exp
    # O_EXCL on an existing file
    with pytest.raises(FileExistsError):
        os.open(fs.m("new"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    fd = os.open(fs.m("excl"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    assert stat.S_IMODE(os.stat(fs.s("excl")).st_mode) == 0o600


def test_truncate(fs):
    data = pattern(100000)
    write_file(fs.s("t"), data)
    os.truncate(fs.m("t"), 5000)                   # setattr without fh
    assert read_file(fs.s("t")) == data[:5000]
    with open(fs.m("t"), "r+b") as f:
        os.ftruncate(f.fileno(), 1 << 20)           # setattr on an open fh
        assert os.fstat(f.fileno()).st_size == 1 << 20
    assert read_file(fs.m("t")) == data[:5000] + bytes((1 << 20) - 5000)
    assert os.stat(fs.s("t")).st_size == 1 << 20
    with open(fs.m("t"), "wb"):                     # O_TRUNC
        pass
    assert os.stat(fs.s("t")).st_size == 0


def test_chmod_chown_utimens(fs):
    write_file(fs.s("f"), b"abc")
    os.chmod(fs.m("f"), 0o751)
    assert stat.S_IMODE(os.stat(fs.s("f")).st_mode) == 0o751
    if os.geteuid() == 0:
        os.chown(fs.m("f"), 1234, 5678)
        st = os.stat(fs.s("f"))
        assert (st.st_uid, st.st_gid) == (1234, 5678)
        os.chown(fs.m("f"), -1, 42)
        assert os.stat(fs.s("f")).st_gid == 42 and os.stat(fs.s("f")).st_uid == 1234
    os.utime(fs.m("f"), ns=(111_000_000_001, 222_000_000_002))
    st = os.stat(fs.s("f"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (111_000_000_001, 222_000_000_002)
    # UTIME_OMIT keeps atime, UTIME_NOW sets mtime to now
    before = time.time_ns()
    util.utimensat(fs.m("f"), util.UTIME_OMIT, util.UTIME_NOW)
    st = os.stat(fs.s("f"))
    assert st.st_atime_ns == 111_000_000_001
    assert st.st_mtime_ns >= before - 2_000_000_000
    util.utimensat(fs.m("f"), (5, 6), util.UTIME_OMIT)
    st = os.stat(fs.s("f"))
    assert st.st_atime_ns == 5_000_000_006 and st.st_mtime_ns >= before - 2_000_000_000
    # futimens on an open file
    with open(fs.m("f"), "r+b") as f:
        os.utime(f.fileno(), ns=(7, 8))
    assert os.stat(fs.s("f")).st_mtime_ns == 8
    same_stat(os.stat(fs.m("f")), os.stat(fs.s("f")))


def test_xattr(fs):
    write_file(fs.s("f"), b"")
    os.mkdir(fs.s("d"))
    for name in ("f", "d"):
        p = fs.m(name)
        os.setxattr(p, "user.one", b"1")
        os.setxattr(p, "user.two", b"\0binary\xff" * 100)
        assert os.getxattr(fs.s(name), "user.two") == b"\0binary\xff" * 100
        assert os.getxattr(p, "user.one") == b"1"
        assert sorted(os.listxattr(p)) == sorted(os.listxattr(fs.s(name)))
        assert {"user.one", "user.two"} <= set(os.listxattr(p))
        with pytest.raises(FileExistsError):
            os.setxattr(p, "user.one", b"x", os.XATTR_CREATE)
        with pytest.raises(OSError) as e:
            os.setxattr(p, "user.none", b"x", os.XATTR_REPLACE)
        assert e.value.errno == errno.ENODATA
        os.removexattr(p, "user.one")
        assert "user.one" not in os.listxattr(fs.s(name))
        with pytest.raises(OSError) as e:
            os.getxattr(p, "user.one")
        assert e.value.errno == errno.ENODATA
    os.setxattr(fs.s("f"), "user.src", b"from source")
    assert os.getxattr(fs.m("f"), "user.src") == b"from source"


def test_symlink_readlink(fs):
    os.symlink("target/../x", fs.m("l1"))
    assert os.readlink(fs.s("l1")) == "target/../x"
    assert os.readlink(fs.m("l1")) == "target/../x"
    os.symlink("/" + "a" * 1000, fs.s("long"))
    assert os.readlink(fs.m("long")) == "/" + "a" * 1000
    write_file(fs.s("t"), b"through")
    os.symlink("t", fs.m("l2"))
    assert read_file(fs.m("l2")) == b"through"
    assert stat.S_ISLNK(os.lstat(fs.m("l2")).st_mode)


def test_hardlink(fs):
    write_file(fs.m("a"), b"linked")
    os.link(fs.m("a"), fs.m("b"))
    sa, sb = os.stat(fs.m("a")), os.stat(fs.m("b"))
    assert sa.st_ino == sb.st_ino == os.stat(fs.s("b")).st_ino
    assert sa.st_nlink == 2 == os.stat(fs.s("a")).st_nlink
    os.unlink(fs.m("a"))
    assert read_file(fs.m("b")) == b"linked"
    assert os.stat(fs.m("b")).st_nlink == 1


def test_mkdir_rmdir_unlink_mknod(fs):
    os.mkdir(fs.m("d"), 0o705)
    assert stat.S_IMODE(os.stat(fs.s("d")).st_mode) == 0o705
    os.makedirs(fs.m("d", "e", "f"))
    write_file(fs.m("d", "e", "f", "g"), b"deep")
    assert read_file(fs.s("d", "e", "f", "g")) == b"deep"
    with pytest.raises(OSError) as e:
        os.rmdir(fs.m("d", "e", "f"))
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(fs.m("d", "e", "f", "g"))
    assert not os.path.exists(fs.s("d", "e", "f", "g"))
    os.rmdir(fs.m("d", "e", "f"))
    assert not os.path.exists(fs.s("d", "e", "f"))
    with pytest.raises(IsADirectoryError):
        os.unlink(fs.m("d"))
    os.mkfifo(fs.m("fifo"), 0o600)
    assert stat.S_ISFIFO(os.stat(fs.s("fifo")).st_mode)
    if os.geteuid() == 0:
        os.mknod(fs.m("null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        st = os.stat(fs.s("null"))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    # an open, unlinked file stays readable
    write_file(fs.m("gone"), b"still here")
    with open(fs.m("gone"), "rb") as f:
        os.unlink(fs.m("gone"))
        assert f.read() == b"still here"


def test_rename(fs):
    write_file(fs.m("a"), b"A")
    write_file(fs.m("b"), b"B")
    os.mkdir(fs.m("dir"))
    os.rename(fs.m("a"), fs.m("dir", "a2"))
    assert read_file(fs.s("dir", "a2")) == b"A" and not os.path.exists(fs.s("a"))
    os.rename(fs.m("dir", "a2"), fs.m("b"))         # replaces
    assert read_file(fs.s("b")) == b"A"
    write_file(fs.m("c"), b"C")
    with pytest.raises(FileExistsError):
        util.renameat2(fs.m("c"), fs.m("b"), util.RENAME_NOREPLACE)
    assert read_file(fs.s("b")) == b"A" and read_file(fs.s("c")) == b"C"
    util.renameat2(fs.m("c"), fs.m("d"), util.RENAME_NOREPLACE)
    assert read_file(fs.s("d")) == b"C"
    util.renameat2(fs.m("b"), fs.m("d"), util.RENAME_EXCHANGE)
    assert read_file(fs.s("b")) == b"C" and read_file(fs.s("d")) == b"A"
    assert read_file(fs.m("b")) == b"C" and read_file(fs.m("d")) == b"A"
    util.renameat2(fs.m("b"), fs.m("dir"), util.RENAME_EXCHANGE)  # file <-> dir
    assert os.path.isdir(fs.s("b")) and read_file(fs.s("dir")) == b"C"
    with pytest.raises(FileNotFoundError):
        util.renameat2(fs.m("d"), fs.m("nothere"), util.RENAME_EXCHANGE)
    with pytest.raises(OSError) as e:
        util.renameat2(fs.m("d"), fs.m("x"), util.RENAME_EXCHANGE | util.RENAME_NOREPLACE)
    assert e.value.errno == errno.EINVAL


def test_fallocate(fs):
    with open(fs.m("fa"), "w+b") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
        assert os.fstat(f.fileno()).st_size == 1 << 20
        assert os.stat(fs.s("fa")).st_blocks * 512 >= 1 << 20
        f.write(b"\xaa" * (1 << 20))
        f.flush()
        util.fallocate(f.fileno(), util.FALLOC_FL_PUNCH_HOLE | util.FALLOC_FL_KEEP_SIZE,
                       65536, 65536)
        util.fallocate(f.fileno(), util.FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
    exp = b"\xaa" * 65536 + bytes(65536) + b"\xaa" * ((1 << 20) - 131072)
    assert os.stat(fs.s("fa")).st_size == 1 << 20
    assert read_file(fs.s("fa")) == exp
    assert read_file(fs.m("fa")) == exp


def test_seek_data_hole(fs):
    with open(fs.s("sparse"), "wb") as f:
        f.seek(1 << 20)
        f.write(b"D" * 4096)
        f.seek(3 << 20)
        f.write(b"E" * 10)
    with open(fs.s("sparse"), "rb") as s, open(fs.m("sparse"), "rb") as m:
        for off in (0, 4096, (1 << 20) + 100, 2 << 20, (3 << 20) + 5):
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                assert os.lseek(m.fileno(), off, whence) == \
                    os.lseek(s.fileno(), off, whence), (off, whence)
        with pytest.raises(OSError) as e:
            os.lseek(m.fileno(), (3 << 20) + 100, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO


def test_copy_file_range(fs):
    data = pattern(3 << 20, 9)
    write_file(fs.m("in"), data)
    with open(fs.m("in"), "rb") as fin, open(fs.m("out"), "wb") as fout:
        n = 0
        while n < len(data) - 100:
            r = os.copy_file_range(fin.fileno(), fout.fileno(), len(data) - 100 - n,
                                   100 + n, n)
            assert r > 0
            n += r
    assert read_file(fs.s("out")) == data[100:]
    assert read_file(fs.m("out")) == data[100:]


def test_flock(fs):
    write_file(fs.m("lock"), b"")
    with open(fs.m("lock"), "rb") as a, open(fs.m("lock"), "rb") as b:
        fcntl.flock(a, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the lock lives on the source file: visible to direct users
        with open(fs.s("lock"), "rb") as direct:
            with pytest.raises(BlockingIOError):
                fcntl.flock(direct, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_UN)
        fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # closing released everything, once the FUSE_RELEASEs (sent in the
    # background, after close() returned) have reached the server
    with open(fs.m("lock"), "rb") as c:
        _flock_eventually(c, fcntl.LOCK_EX)


def _flock_eventually(f, op, timeout=5.0):
    """flock(f, op | LOCK_NB), retried until the deadline: a lock released
    by close() is released by a FUSE_RELEASE the kernel sends in the
    background, so the server drops it a moment after close() returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_flock_released_by_close_while_file_stays_open(fs):
    """Closing the file that holds a flock() releases it even while another
    open of the same file stays: in passthrough mode that other open shares
    the backing file the kernel was given, which may be the locker's."""
    write_file(fs.m("lock"), b"")
    with open(fs.m("lock"), "rb") as a, open(fs.m("lock"), "rb") as b:
        fcntl.flock(a, fcntl.LOCK_EX)
        a.close()
        _flock_eventually(b, fcntl.LOCK_EX)
        with open(fs.s("lock"), "rb") as direct:
            with pytest.raises(BlockingIOError):
                fcntl.flock(direct, fcntl.LOCK_SH | fcntl.LOCK_NB)


def _child_trylock(path, start, length, kind=fcntl.F_WRLCK):
    """In a child process: try a POSIX lock; exit 0 if granted, 1 if busy."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            fd = os.open(path, os.O_RDWR)
            lk = struct.pack("hhqqi", kind, os.SEEK_SET, start, length, 0)
            try:
                fcntl.fcntl(fd, fcntl.F_SETLK, lk)
                code = 0
            except OSError:
                code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _child_getlk(path, start, length):
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            fd = os.open(path, os.O_RDWR)
            lk = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
            res = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, lk))
            code = 10 if res[0] == fcntl.F_UNLCK else 11
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_posix_locks(fs):
    write_file(fs.m("plock"), b"x" * 100)
    with open(fs.m("plock"), "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)            # bytes 0..9
        assert _child_trylock(fs.m("plock"), 0, 5) == 1
        assert _child_trylock(fs.m("plock"), 20, 5) == 0
        assert _child_getlk(fs.m("plock"), 5, 1) == 11
        assert _child_getlk(fs.m("plock"), 50, 1) == 10
        fcntl.lockf(f, fcntl.LOCK_UN, 10, 0)
        assert _child_trylock(fs.m("plock"), 0, 5) == 0
        fcntl.lockf(f, fcntl.LOCK_SH, 0, 0)
        assert _child_trylock(fs.m("plock"), 0, 5, fcntl.F_RDLCK) == 0
        assert _child_trylock(fs.m("plock"), 0, 5, fcntl.F_WRLCK) == 1
    assert _child_trylock(fs.m("plock"), 0, 5) == 0     # close dropped it


def test_readdir_big(fs):
    names = {f"entry-{i:05d}-{'x' * (i % 50)}" for i in range(3000)}
    for n in names:
        write_file(fs.s(n), b"")
    os.mkdir(fs.s("sub"))
    names.add("sub")
    assert set(os.listdir(fs.mnt)) == names
    ents = {e.name: e for e in os.scandir(fs.mnt)}      # readdirplus
    for n in list(names)[:200]:
        assert ents[n].inode() == os.lstat(fs.s(n)).st_ino
        assert ents[n].is_dir() == (n == "sub")
        same_stat(ents[n].stat(follow_symlinks=False), os.lstat(fs.s(n)),
                  ("st_mode", "st_ino", "st_size", "st_nlink"))
    # telldir/seekdir path: a second listing of the same directory
    assert sorted(os.listdir(fs.mnt)) == sorted(names)
    # creating and deleting while listing does not break the listing
    with os.scandir(fs.mnt) as it:
        first = [next(it).name for _ in range(10)]
        write_file(fs.m("late-file"), b"")
        rest = [e.name for e in it]
    assert len(set(first + rest) & names) == len(names)


def test_mmap(fs):
    data = pattern(3 * 4096 + 100, 5)
    write_file(fs.s("mm"), data)
    with open(fs.m("mm"), "r+b") as f:
        with mmap.mmap(f.fileno(), 0) as mm:
            assert mm[:] == data
            mm[4096:4096 + 5] = b"HELLO"
            mm.flush()
    exp = data[:4096] + b"HELLO" + data[4096 + 5:]
    assert read_file(fs.s("mm")) == exp
    with open(fs.m("mm"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == exp


def _aligned(size):
    return mmap.mmap(-1, size)      # page-aligned anonymous memory


def test_odirect(fs):
    data = pattern(4 << 20, 11)
    write_file(fs.s("direct"), data)
    fd = os.open(fs.m("direct"), os.O_RDONLY | os.O_DIRECT)
    try:
        buf = _aligned(1 << 20)
        for off in (0, 1 << 20, 3 << 20, 8192):
            n = os.preadv(fd, [buf], off)
            assert n == 1 << 20
            assert buf[:n] == data[off:off + n]
        # read past EOF is short
        n = os.preadv(fd, [buf], (4 << 20) - 4096)
        assert n == 4096
    finally:
        os.close(fd)
    fd = os.open(fs.m("direct"), os.O_RDWR | os.O_DIRECT)
    try:
        buf = _aligned(65536)
        buf[:] = b"\x5a" * 65536
        assert os.pwritev(fd, [buf], 65536) == 65536
    finally:
        os.close(fd)
    exp = data[:65536] + b"\x5a" * 65536 + data[131072:]
    assert read_file(fs.s("direct")) == exp
    assert read_file(fs.m("direct")) == exp


def test_fsync_statfs_access(fs):
    with open(fs.m("sync"), "wb") as f:
        f.write(b"sync me")
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    dfd = os.open(fs.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    a, b = os.statvfs(fs.mnt), os.statvfs(fs.src)
    assert (a.f_bsize, a.f_blocks, a.f_files, a.f_namemax) == \
        (b.f_bsize, b.f_blocks, b.f_files, b.f_namemax)
    assert os.access(fs.m("sync"), os.R_OK | os.W_OK)
    os.chmod(fs.m("sync"), 0o644)
    assert not os.access(fs.m("sync"), os.X_OK)


def test_source_changes_visible(fs):
    """Changes made directly in SOURCE show up (within the cache timeout)."""
    write_file(fs.s("ext"), b"one")
    assert read_file(fs.m("ext")) == b"one"
    write_file(fs.s("ext"), b"two, longer")
    deadline = time.monotonic() + 3
    while read_file(fs.m("ext")) != b"two, longer":
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --- POSIX ACLs: default ACLs inherit, the caller's umask applies otherwise --

@pytest.mark.parametrize("options", [["-o", "posix_acl"], []], ids=["posix_acl", "default"])
def test_posix_acl(mount_with, mode, options):
    """-o posix_acl, and the default (on with xattrs)."""
    m = mount_with(mode, options)
    old = os.umask(0o022)
    try:
        os.mkdir(m.m("d"))
        util.set_acl(m.m("d"), "u::rwx,g::rwx,o::---", default=True)
        os.mkdir(m.m("d/sub"))
        open(m.m("d/f"), "w").close()
        os.mkdir(m.m("plain"))
        open(m.m("pf"), "w").close()
    finally:
        os.umask(old)
    # Inherited default ACL: umask ignored, group keeps rwx (generic/319).
    assert stat.S_IMODE(os.stat(m.s("d/sub")).st_mode) == 0o770
    assert stat.S_IMODE(os.stat(m.s("d/f")).st_mode) == 0o660
    assert os.getxattr(m.m("d/sub"), "system.posix_acl_default") == \
        util.acl("u::rwx,g::rwx,o::---")
    # No default ACL: the caller's umask, as on any file system.
    assert stat.S_IMODE(os.stat(m.s("plain")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(m.s("pf")).st_mode) == 0o644
