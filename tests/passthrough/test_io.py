# SPDX-License-Identifier: GPL-2.0-or-later
"""Data paths under load: concurrency, random ranges, zero-copy accounting,
and the caching / request-size options."""

import contextlib
import mmap
import os
import random
import shutil
import subprocess
import threading
import time

import pytest

import conftest
import fzc_pytest
import util
from conftest import expect_passthrough, expect_zc
from test_ops import pattern, read_file, write_file
from test_startup import _fd_flags, need_root

BIG = os.environ.get("FUSEZC_BIG") == "1"


def test_concurrent_readers_writers(fs):
    nthreads, size = 8, 4 << 20
    src = pattern(size, 21)
    write_file(fs.s("shared"), src)
    errors = []

    def reader(seed):
        rnd = random.Random(seed)
        try:
            with open(fs.m("shared"), "rb") as f:
                for _ in range(60):
                    off = rnd.randrange(size)
                    n = rnd.randrange(1, 1 << 20)
                    if os.pread(f.fileno(), n, off) != src[off:off + n]:
                        errors.append(f"reader {seed}: mismatch at {off}+{n}")
                        return
        except Exception as e:  # noqa: BLE001 - report from the main thread
            errors.append(repr(e))

    def writer(i):
        try:
            data = pattern(1 << 20, 100 + i)
            with open(fs.m(f"w{i}"), "wb") as f:
                for off in range(0, len(data), 65536):
                    f.write(data[off:off + 65536])
            # disjoint regions of one common file
            with open(fs.m("common"), "r+b") as f:
                os.pwrite(f.fileno(), data[:65536], i * 65536)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    write_file(fs.m("common"), bytes(nthreads * 65536))
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(nthreads)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "thread hung"
    assert not errors, errors
    common = read_file(fs.s("common"))
    for i in range(nthreads):
        exp = pattern(1 << 20, 100 + i)
        assert read_file(fs.s(f"w{i}")) == exp
        assert read_file(fs.m(f"w{i}")) == exp
        assert common[i * 65536:(i + 1) * 65536] == exp[:65536]


def _random_reads(path_m, path_s, total, seed, direct=False):
    """Random (offset, length) reads of path_m compared with path_s;
    returns (bytes read, mismatches)."""
    rnd = random.Random(seed)
    size = os.stat(path_s).st_size
    ref = os.open(path_s, os.O_RDONLY)
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path_m, flags)
    buf = mmap.mmap(-1, 1 << 20)
    done = mismatches = 0
    try:
        while done < total:
            if direct:
                off = rnd.randrange(size // 4096) * 4096
                n = rnd.choice((4096, 65536, 1 << 20))
                got = os.preadv(fd, [memoryview(buf)[:n]], off)
                data = buf[:got]
            else:
                off = rnd.randrange(size)
                n = rnd.randrange(1, 1 << 20)
                data = os.pread(fd, n, off)
            if data != os.pread(ref, len(data), off) or \
                    len(data) != min(n, size - off):
                mismatches += 1
            done += len(data)
    finally:
        os.close(fd)
        os.close(ref)
        buf.close()
    return done, mismatches


def test_random_range_reads(fs):
    size = (256 << 20) if BIG else (32 << 20)
    total = (1 << 30) if BIG else (64 << 20)
    with open(fs.s("big"), "wb") as f:
        for i in range(size >> 20):
            f.write(pattern(1 << 20, i * 65536))
    done, bad = _random_reads(fs.m("big"), fs.s("big"), total // 2, 1)
    assert bad == 0
    done2, bad = _random_reads(fs.m("big"), fs.s("big"), total // 2, 2, direct=True)
    assert bad == 0
    assert done + done2 >= total


def test_direct_source_reads(mount_with, mode):
    """-o direct_source: aligned reads come from the source with O_DIRECT
    (into fuse-zc's page-aligned buffers or the lent pages); the rest and
    data just written through the source's page cache must still match."""
    m = mount_with(mode, ["-o", "direct_source"])
    size = 16 << 20
    with open(m.s("big"), "wb") as f:
        for i in range(size >> 20):
            f.write(pattern(1 << 20, 7 * i))
    done, bad = _random_reads(m.m("big"), m.s("big"), 32 << 20, 3)
    assert bad == 0
    done, bad = _random_reads(m.m("big"), m.s("big"), 32 << 20, 4, direct=True)
    assert bad == 0
    # Dirty data in the source's page cache, read back O_DIRECT through a
    # second open: the source must flush before its direct read.
    with open(m.m("big"), "r+b") as f:
        f.seek(4096 * 5)
        f.write(b"x" * 8192)
    fd = os.open(m.m("big"), os.O_RDONLY | os.O_DIRECT)   # past FUSE's cache
    buf = mmap.mmap(-1, 65536)
    try:
        assert os.preadv(fd, [buf], 0) == 65536
        assert buf[4096 * 5:4096 * 7] == b"x" * 8192
        assert buf[:] == read_file(m.s("big"))[:65536]
    finally:
        os.close(fd)
        buf.close()


@pytest.mark.skipif(not expect_zc(), reason="FUSEZC_EXPECT_ZC=1 not set (stock kernel)")
def test_zerocopy_connection_stats(fs):
    """Inside the patched kernel: FUSE_READ data really moved by zero copy."""
    if not fs.mode.startswith("zerocopy") and fs.mode != "default":
        pytest.skip("zero-copy accounting applies to the zerocopy modes")
    size = 64 << 20
    with open(fs.s("zc"), "wb") as f:
        for i in range(size >> 20):
            f.write(pattern(1 << 20, i))
    before = fzc_pytest.zc_conn_stats(fs.mnt)
    for name in ("zc_read_bytes", "copy_read_bytes", "zc_refused", "zc_lent_pages"):
        assert name in before, before
    done, bad = _random_reads(fs.m("zc"), fs.s("zc"), size, 3, direct=True)
    assert bad == 0
    # buffered: a fresh open (cache=auto drops the page cache on open)
    with open(fs.m("zc"), "rb") as f:
        assert f.read() == read_file(fs.s("zc"))
    done += size
    after = fzc_pytest.zc_conn_stats(fs.mnt)
    zc = after["zc_read_bytes"] - before["zc_read_bytes"]
    copied = after["copy_read_bytes"] - before["copy_read_bytes"]
    refused = after["zc_refused"] - before["zc_refused"]
    # Every read of a regular file of the source can be zero copy, so the
    # mode promises all of them: nothing copied, nothing refused, no
    # fallback.  (zc may miss a little of done only because the kernel can
    # serve part of the buffered read from pages it still caches.)
    assert zc >= done * 0.99, (zc, done, after)
    assert copied == 0, (copied, done, after)
    assert refused == 0, (refused, after)
    stats = fs.unmount()
    assert stats["fallbacks"] == 0, stats
    assert stats["splice_bytes"] == 0 and stats["copy_bytes"] == 0, stats
    assert stats["zc_bytes"] >= zc, (stats, zc)


@pytest.mark.skipif(not expect_zc(), reason="FUSEZC_EXPECT_ZC=1 not set (stock kernel)")
@pytest.mark.parametrize("options", [[], ["-o", "direct_source"], ["-o", "writeback"]],
                         ids=lambda o: "".join(o) or "plain")
def test_zerocopy_write_stats(mount_with, mode, options):
    """Inside the patched kernel: FUSE_WRITE data goes from the writer's
    pages to the source, none through the daemon, every byte where it
    belongs: buffered, unaligned, O_DIRECT (aligned and not), mmap, append."""
    if not mode.startswith("zerocopy") and mode != "default":
        pytest.skip("zero-copy writes apply to the zerocopy modes")
    m = mount_with(mode, options)
    size = 8 << 20
    want = bytearray(pattern(size, 3))
    write_file(m.s("w"), bytes(want))
    before = fzc_pytest.zc_conn_stats(m.mnt)
    written = 0
    with open(m.m("w"), "r+b") as f:
        for off, n, seed in ((0, 1 << 20, 4), (4097, 5000, 5), (3 << 20, 3 * 4096 + 7, 6),
                             ((2 << 20) - 100, 200, 7)):
            data = pattern(n, seed)
            assert os.pwrite(f.fileno(), data, off) == n
            want[off:off + n] = data
            written += n
        os.fsync(f.fileno())
    fd = os.open(m.m("w"), os.O_RDWR | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 1 << 20)
        buf[:] = pattern(1 << 20, 8)
        assert os.pwritev(fd, [buf], 4 << 20) == 1 << 20
        want[4 << 20:5 << 20] = buf[:]
        # a buffer that is not page-aligned: still the writer's own pages
        assert os.pwritev(fd, [memoryview(buf)[512:512 + 8192]], 6 << 20) == 8192
        want[6 << 20:(6 << 20) + 8192] = buf[512:512 + 8192]
        written += (1 << 20) + 8192
        buf.close()
    finally:
        os.close(fd)
    with open(m.m("w"), "r+b") as f:
        mm = mmap.mmap(f.fileno(), size)
        mm[7 << 20:(7 << 20) + 10000] = pattern(10000, 9)
        want[7 << 20:(7 << 20) + 10000] = pattern(10000, 9)
        mm.flush()
        mm.close()
        written += 10000
    with open(m.m("w"), "ab") as f:
        f.write(pattern(3000, 10))
        want += pattern(3000, 10)
        written += 3000
    after = fzc_pytest.zc_conn_stats(m.mnt)
    stats = m.unmount()
    assert read_file(m.s("w")) == bytes(want)
    zc = after["zc_write_bytes"] - before["zc_write_bytes"]
    copied = after["copy_write_bytes"] - before["copy_write_bytes"]
    assert copied == 0, (copied, after)
    assert zc >= written, (zc, written, after)
    assert stats["zc_write_bytes"] + stats["memfd_write_bytes"] >= zc, (stats, zc)
    assert after["zc_lent_pages"] == 0, after


@pytest.mark.skipif(not expect_zc(), reason="FUSEZC_EXPECT_ZC=1 not set (stock kernel)")
def test_small_writes_with_data(mount_with, mode, zc_write_min_boot):
    """Issue 26 step 5: with fuse.zerocopy_write_min at its default, a
    write below it comes with its data on a zero-copy write connection and
    passthrough_zc writes it as any write with data; writes at or above it are
    lent; every byte lands where it belongs."""
    if not mode.startswith("zerocopy") and mode != "default":
        pytest.skip("zero-copy writes apply to the zerocopy modes")
    if not zc_write_min_boot:
        pytest.fail(f"{conftest.ZC_WRITE_MIN}: {zc_write_min_boot}, want a default > 0")
    small = zc_write_min_boot
    conftest.set_zc_write_min(small)
    try:
        m = mount_with(mode)
        m.small_writes = True
        want = bytearray(pattern(1 << 20, 11))
        write_file(m.s("w"), bytes(want))
        before = fzc_pytest.zc_conn_stats(m.mnt)
        copied = 0
        with open(m.m("w"), "ab", buffering=0) as f:
            for i in range(50):
                f.write(b"%04d" % i)
                want += b"%04d" % i
                copied += 4
        with open(m.m("w"), "r+b", buffering=0) as f:
            for off, n, seed in ((4096, small - 1, 12), (3 * 4096 + 5, 100, 13)):
                data = pattern(n, seed)
                assert os.pwrite(f.fileno(), data, off) == n
                want[off:off + n] = data
                copied += n
            data = pattern(small + 65536, 14)
            assert os.pwrite(f.fileno(), data, 65536) == len(data)
            want[65536:65536 + len(data)] = data
        after = fzc_pytest.zc_conn_stats(m.mnt)
    finally:
        conftest.set_zc_write_min(0)
    stats = m.unmount()
    assert read_file(m.s("w")) == bytes(want)
    assert after["copy_write_small"] - before["copy_write_small"] == 52, (before, after)
    assert after["copy_write_bytes"] - before["copy_write_bytes"] == copied, (before, after)
    assert after["zc_write_bytes"] - before["zc_write_bytes"] >= small + 65536, (before, after)
    # the daemon wrote the small ones as any write with data (pzc_write_buf)
    assert stats["zc_write_bytes"] + stats["memfd_write_bytes"] >= small + 65536, stats
    assert after["zc_lent_pages"] == 0, after


# --- options: caching, writeback, direct_io, single thread, sizes --------

OPTION_SETS = [
    ["-o", "cache=never"],
    ["-o", "cache=always"],
    ["-o", "writeback"],
    ["-o", "direct_io"],
    ["-s"],
    ["-o", "max_write=131072,max_readahead=65536"],
    ["-o", "max_read=262144"],
    ["-o", "direct_source"],
    ["-o", "timeout=0.5,no_flock,no_xattr"],
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "".join(o))
def test_options_smoke(mount_with, mode, options):
    if mode == "passthrough" and "writeback" in "".join(options):
        pytest.skip("passthrough and writeback are exclusive")
    m = mount_with(mode, options)
    data = pattern(3 << 20, 31)
    write_file(m.m("f"), data)
    assert read_file(m.s("f")) == data
    assert read_file(m.m("f")) == data
    with open(m.m("f"), "r+b") as f:
        f.seek(12345)
        f.write(b"patch")
        f.seek(0)
        exp = data[:12345] + b"patch" + data[12350:]
        assert f.read() == exp
    with open(m.m("wo"), "wb") as f:     # O_WRONLY (writeback makes it O_RDWR)
        f.write(b"a" * 10000)
    with open(m.m("wo"), "ab") as f:
        f.write(b"b" * 10)
    assert read_file(m.s("wo")) == b"a" * 10000 + b"b" * 10
    os.truncate(m.m("f"), 100)
    assert read_file(m.m("f")) == exp[:100]
    if "direct_io" not in options and "cache=never" not in "".join(options):
        with open(m.m("f"), "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            mm[0:3] = b"MAP"
        assert read_file(m.s("f"))[:3] == b"MAP"
    if "no_xattr" in "".join(options):
        with pytest.raises(OSError):
            os.setxattr(m.m("f"), "user.x", b"1")
    done, bad = _random_reads(m.m("f"), m.s("f"), 1000, 4)
    assert bad == 0


# --- noatime: reads through the mount leave the source's atime alone ------

def test_noatime(mount_with, mode):
    """-o noatime reaches both the mount and the source (O_NOATIME opens)."""
    old = 1577836800                     # 2020-01-01: relatime would update it
    atimes = {}
    for sub, options in (("plain", ()), ("noatime", ("-o", "noatime"))):
        m = mount_with(mode, options, sub=sub)
        write_file(m.s("f"), pattern(1 << 20, 7))
        os.utime(m.s("f"), (old, old + 10))
        with open(m.m("f"), "rb") as f:   # a fresh open: no cached pages
            f.read()
        atimes[sub] = os.stat(m.s("f")).st_atime
    # The control: without noatime the source's relatime updates atime, so
    # the check below can fail.
    assert atimes["plain"] != old
    if mode == "passthrough":
        # The kernel reads through its own backing file, opened with the
        # reader's flags on the source's mount: the server's O_NOATIME
        # cannot reach it.
        assert atimes["noatime"] != old
    else:
        assert atimes["noatime"] == old


# --- the default source I/O: O_DIRECT on a block device ------------------

@contextlib.contextmanager
def _mounted_source(tmp_path, *mount_args):
    """mount(8) @mount_args at tmp_path/x/src, the SOURCE of
    mount_with(mode, ..., sub="x"), for the with block."""
    src = tmp_path / "x" / "src"
    src.mkdir(parents=True)
    subprocess.run(["mount", *mount_args, str(src)], check=True)
    try:
        yield str(src)
    finally:
        subprocess.run(["umount", str(src)], check=False)


@pytest.fixture
def block_source(tmp_path):
    """An ext4 file system on a loop device at tmp_path/x/src: the SOURCE
    of mount_with(mode, ..., sub="x")."""
    need_root()
    if not shutil.which("mkfs.ext4") or not os.path.exists("/dev/loop-control"):
        pytest.fail("mkfs.ext4 or /dev/loop-control missing: cannot make a block-device source")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    # losetup and mount -t, not mount -o loop: in the test VM util-linux's
    # type probing of a fresh loop device fails with EBUSY.
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        with _mounted_source(tmp_path, "-t", "ext4", dev) as src:
            yield src
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _source_opens(pid, path):
    """Open flags of @pid's descriptors of the file @path."""
    want, flags = os.path.realpath(path), []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
        if target == want:
            fl = _fd_flags(pid, int(name))
            if fl is not None:
                flags.append(fl)
    return flags


def _cached_pages(path):
    out = subprocess.run(["fincore", "-n", "-r", "-o", "PAGES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _read_with_direct_source(m, name, size):
    """Read @name through @m while it is open; (O_DIRECT twin opened, source
    pages cached afterwards).  The source file starts with none cached."""
    data = pattern(size, 11)
    with open(m.s(name), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert _cached_pages(m.s(name)) == 0
    # Into page-aligned memory: with direct_io the reader's buffer decides
    # the FUSE_READ ranges, and only aligned ones can go O_DIRECT.
    buf = mmap.mmap(-1, 1 << 20)
    fd = os.open(m.m(name), os.O_RDONLY)
    try:
        twin = any(fl & os.O_DIRECT for fl in _source_opens(m.daemon.proc.pid, m.s(name)))
        for off in range(0, size, 1 << 20):
            assert os.preadv(fd, [buf], off) == 1 << 20
            assert buf[:] == data[off:off + (1 << 20)], f"wrong bytes at {off}"
    finally:
        os.close(fd)
        buf.close()
    return twin, _cached_pages(m.s(name))


@pytest.mark.parametrize("options,direct", [
    ((), True),
    (("-o", "no_direct_source"), False),
    (("-o", "cache=never"), False),
    (("-o", "direct_io,direct_source"), True),
], ids=["default", "no_direct_source", "cache=never", "direct_io+direct_source"])
def test_direct_source_default_block_device(block_source, mount_with, mode, options, direct):
    """By default a source on a block device is read with O_DIRECT where
    FUSE caches the file: no second cached copy of the bytes (none of the
    source's pages end up cached).  Options override it both ways."""
    m = mount_with(mode, options)
    assert m.src == block_source
    twin, cached = _read_with_direct_source(m, "f", 8 << 20)
    if mode == "passthrough" and expect_passthrough():
        # the kernel reads its own buffered backing file
        assert cached > 0
        return
    assert twin == direct
    if direct:
        assert cached == 0, f"{cached} source pages cached with O_DIRECT source reads"
    else:
        assert cached > 0


@pytest.fixture
def tmpfs_source(tmp_path):
    """A tmpfs at tmp_path/x/src: the SOURCE of mount_with(mode, ..., sub="x")."""
    need_root()
    with _mounted_source(tmp_path, "-t", "tmpfs", "-o", "size=64m", "fzc-test") as src:
        yield src


def test_direct_source_default_anonymous_device(tmpfs_source, mount_with, mode):
    """Sources on anonymous devices (tmpfs, overlay, network) keep buffered
    reads: their page cache is their data."""
    m = mount_with(mode)
    assert m.src == tmpfs_source
    assert os.major(os.stat(m.src).st_dev) == 0
    write_file(m.s("f"), pattern(1 << 20, 5))
    with open(m.m("f"), "rb") as f:
        assert f.read() == pattern(1 << 20, 5)
        flags = _source_opens(m.daemon.proc.pid, m.s("f"))
    assert not any(fl & os.O_DIRECT for fl in flags), flags


# --- read-ahead: -o max_readahead above the kernel's default ----------------

def _bdi_read_ahead_kb(mnt, want=None, timeout=5.0):
    """The mount's bdi read_ahead_kb; with @want, polled until it is that
    (the server sets it just after INIT) or @timeout passes."""
    st = os.stat(mnt)
    knob = f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb"
    deadline = time.monotonic() + timeout
    while True:
        with open(knob) as f:
            value = int(f.read())
        if want is None or value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.mark.parametrize("options,kb", [((), 1024), (("-o", "max_readahead=131072"), 128)],
                         ids=["default", "max_readahead=131072"])
def test_default_readahead(mount_with, mode, options, kb):
    """A root server without -o max_readahead gives the mount 1 MiB of
    read-ahead (one max_pages FUSE_READ per window); the option still
    overrides it."""
    need_root()
    m = mount_with(mode, options)
    assert _bdi_read_ahead_kb(m.mnt, kb) == kb
    if not options:
        # and it stays: nothing lowers it after the server raised it
        time.sleep(0.3)
        assert _bdi_read_ahead_kb(m.mnt) == kb

@pytest.mark.skipif(os.geteuid() != 0, reason="raising a bdi's read_ahead_kb needs root")
def test_max_readahead_raised(mount_with, mode):
    """FUSE_INIT cannot raise read-ahead past the bdi default (128 KiB);
    passthrough_zc writes the bdi's read_ahead_kb after INIT instead."""
    m = mount_with(mode, ["-o", "max_readahead=2097152"])
    write_file(m.s("f"), pattern(4 << 20, 3))
    assert _bdi_read_ahead_kb(m.mnt, 2048) == 2048
    assert read_file(m.m("f")) == pattern(4 << 20, 3)
