# SPDX-License-Identifier: GPL-2.0-or-later
"""tarfs_zc against tar -x: every member's bytes and metadata, in every read
mode; readers of every kind; bad archives refused with a clear message."""

import hashlib
import io
import mmap
import os
import random
import re
import stat
import struct
import subprocess
import tarfile
import threading
import time

import pytest

import fzc_pytest
import tarutil
from tarutil import mounted


def test_matches_tar_x(archives, mode, tmp_path):
    """Names, types, modes, owners, times, sizes, bytes, link targets, hard
    links and device numbers: as tar -x makes them, for GNU tar and bsdtar
    archives in each of their formats."""
    for name, archive in sorted(archives.items()):
        ref = tarutil.extract(archive, str(tmp_path / f"x-{name}"),
                              "bsdtar" if name.startswith("bsdtar") else "tar")
        mnt = str(tmp_path / f"m-{name}")
        with mounted(archive, mnt, mode) as m:
            tarutil.compare_trees(mnt, ref)
        tarutil.check_mode(mode, m.stats, m.text, tarutil.member_bytes(ref))


def _big_member(tree):
    return os.path.join(tree, "dir", "f1048583")


def test_readers(archives, tree, mode, tmp_path):
    """Buffered, O_DIRECT, mmap, random offsets (also past the end), many
    readers at once: every byte as in the source, none past a member."""
    archive = archives["gnutar-posix"]
    mnt = str(tmp_path / "m")
    names = [f"dir/f{s}" for s in tarutil.SIZES]
    want = {n: open(os.path.join(tree, n), "rb").read() for n in names}
    with mounted(archive, mnt, mode) as m:
        # O_DIRECT first: nothing in the page cache yet
        for n in names:
            fd = os.open(os.path.join(mnt, n), os.O_RDONLY | os.O_DIRECT)
            try:
                buf = mmap.mmap(-1, 1 << 21)
                got = bytearray()
                while True:
                    k = os.preadv(fd, [buf], len(got))
                    if k <= 0:
                        break
                    got += buf[:k]
                    if k < len(buf):
                        break
                assert bytes(got) == want[n], n
            finally:
                os.close(fd)
        for n in names:
            with open(os.path.join(mnt, n), "rb") as f:
                assert f.read() == want[n], n
            if want[n]:
                with open(os.path.join(mnt, n), "rb") as f, \
                        mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                    assert mm[:] == want[n], n
        rnd = random.Random(27)
        for _ in range(300):
            n = rnd.choice(names)
            size = len(want[n])
            off = rnd.randrange(0, size + 8192)
            ln = rnd.choice([1, 100, 4096, 5000, 131072, 1 << 20])
            fd = os.open(os.path.join(mnt, n), os.O_RDONLY)
            try:
                assert os.pread(fd, ln, off) == want[n][off:off + ln], (n, off, ln)
            finally:
                os.close(fd)
        errors = []

        def reader(seed):
            r = random.Random(seed)
            try:
                for _ in range(100):
                    n = r.choice(names)
                    off = r.randrange(0, len(want[n]) + 1)
                    with open(os.path.join(mnt, n), "rb", buffering=0) as f:
                        f.seek(off)
                        assert f.read(65536) == want[n][off:off + 65536]
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors[:3]
    tarutil.check_mode(mode, m.stats, m.text)


def _tar_bytes(members, fmt=tarfile.GNU_FORMAT):
    """A tar made by Python's tarfile: [(TarInfo, data or None)]."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return bio.getvalue()


def _file(name, data, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def _refused(archive, mnt, expect):
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run([tarutil.binary(), archive, mnt], capture_output=True, text=True,
                       timeout=tarutil.MOUNT_TIMEOUT)
    assert r.returncode != 0, r.stderr
    assert not os.path.ismount(mnt)
    assert re.search(expect, r.stderr), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_bad_archives(tmp_path):
    """Each bad archive is refused at mount, with one line naming the fault."""
    good = _tar_bytes([_file("a", b"x" * 5000), _file("b", b"y" * 100)])
    cases = {
        # cut inside a's data: its size runs past the end
        "truncated": (good[:512 + 2000], r"member a: size 5000 runs past the end"),
        # a header cut in half
        "half-header": (good[:512 + 5120 + 256], r"truncated|past the end"),
        "checksum": (good[:100] + bytes([good[100] ^ 1]) + good[101:],
                     r"bad header checksum"),
        "not-tar": (b"hello world\n" * 100, r"bad header checksum"),
    }
    # a size field that runs past the end of the archive
    big = bytearray(good)
    big[124:136] = b"%011o\0" % (1 << 30)
    big[148:156] = b" " * 8
    big[148:155] = b"%06o\0" % (sum(big[:512]) & 0o777777)
    cases["size-past-end"] = (bytes(big), r"member a: size 1073741824 runs past the end")
    # a pax header that lies: its record length runs past the header
    pax = tarfile.TarInfo("x")
    pax.pax_headers = {"path": "p" * 10}
    lying = bytearray(_tar_bytes([(pax, b"")], tarfile.PAX_FORMAT))
    i = lying.index(b" path=")
    lying[i - 2:i] = b"99"
    cases["pax-length"] = (bytes(lying), r"pax record")
    # a pax size that is not a number
    pax2 = tarfile.TarInfo("y")
    pax2.pax_headers = {"size": "12x"}
    cases["pax-size"] = (_tar_bytes([(pax2, b"")], tarfile.PAX_FORMAT), r"pax size")
    for name, (data, expect) in cases.items():
        _refused(_write(tmp_path / f"{name}.tar", data), str(tmp_path / f"m-{name}"),
                 expect)


def test_sparse_refused(tmp_path):
    """GNU sparse members are refused at mount, naming the member."""
    src = tmp_path / "s"
    src.mkdir()
    with open(src / "holey", "wb") as f:
        f.truncate(1 << 20)
        f.seek(1 << 19)
        f.write(b"data")
    for fmt, arg in (("gnu", []), ("posix", ["--sparse-version=1.0"])):
        a = str(tmp_path / f"sparse-{fmt}.tar")
        subprocess.run(["tar", f"--format={fmt}", "--sparse", *arg, "-cf", a, "-C",
                        str(src), "holey"], check=True)
        _refused(a, str(tmp_path / f"m-{fmt}"), r"holey is a GNU sparse file")


def test_names_kept_inside(tmp_path, mode):
    """Absolute names stay inside the mount (leading '/' removed) and names
    with '..' are not served, as GNU tar extracts them; a later member of
    the same name wins; directories implied by member paths exist."""
    members = [
        _file("/abs/file", b"absolute"),
        _file("../../up", b"up"),
        _file("a/../../b/c", b"dots"),
        _file("dup", b"first"),
        _file("dup", b"second, longer"),
        _file("implied/deep/file", b"deep"),
    ]
    archive = _write(tmp_path / "names.tar", _tar_bytes(members))
    mnt = str(tmp_path / "m")
    ref = str(tmp_path / "x")
    os.makedirs(ref)
    r = subprocess.run(["tar", "-xf", archive, "-C", ref], capture_output=True, text=True)
    assert "Member name contains '..'" in r.stderr, r.stderr
    with mounted(archive, mnt, mode) as m:
        assert sorted(os.listdir(mnt)) == ["abs", "dup", "implied"]
        assert sorted(os.listdir(mnt)) == sorted(os.listdir(ref))
        for p in ("abs/file", "dup", "implied/deep/file"):
            assert open(f"{mnt}/{p}", "rb").read() == open(f"{ref}/{p}", "rb").read()
        assert open(f"{mnt}/dup", "rb").read() == b"second, longer"
        assert stat.S_ISDIR(os.stat(f"{mnt}/implied/deep").st_mode)
    assert "2 member(s) with '..' in the name not served" in m.text


def _gnu_base256_header(name, size, mtime=1_700_000_000):
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124] = 0x80
    h[125:136] = size.to_bytes(11, "big")
    h[136:148] = b"%011o\0" % mtime
    h[156:157] = b"0"
    h[257:265] = b"ustar  \0"
    h[148:156] = b" " * 8
    h[148:155] = b"%06o\0" % (sum(h) & 0o777777)
    return bytes(h)


def test_beyond_8gib(tmp_path, mode):
    """Members beyond 8 GiB: a GNU base-256 size and a pax size.  The
    archive is a sparse file: the index never reads the data."""
    size = (8 << 30) + 12345
    tail = tarutil.pattern("tail", 12345)
    path = str(tmp_path / "big.tar")
    with open(path, "wb") as f:
        f.write(_gnu_base256_header("huge", size))
        f.seek(512 + size - len(tail))
        f.write(tail)
        pad = (-size) % 512
        f.write(b"\0" * (pad + 1024))
    # the same member with a pax size
    pax = b"30 size=%d\n" % size
    pax = (b"%d" % (len(pax) - 2 + len(str(len(pax))))) + pax[2:]
    ph = bytearray(_gnu_base256_header("PaxHeader", len(pax)))
    ph[124:136] = b"%011o\0" % len(pax)
    ph[156:157] = b"x"
    ph[257:265] = b"ustar\x0000"
    ph[148:156] = b" " * 8
    ph[148:155] = b"%06o\0" % (sum(ph) & 0o777777)
    mh = bytearray(_gnu_base256_header("huge-pax", 0))
    mh[124:136] = b"%011o\0" % 0
    mh[257:265] = b"ustar\x0000"
    mh[148:156] = b" " * 8
    mh[148:155] = b"%06o\0" % (sum(mh) & 0o777777)
    path2 = str(tmp_path / "big-pax.tar")
    with open(path2, "wb") as f:
        f.write(bytes(ph) + pax + b"\0" * ((-len(pax)) % 512) + bytes(mh))
        start = f.tell()
        f.seek(start + size - len(tail))
        f.write(tail)
        f.write(b"\0" * ((-size) % 512 + 1024))
    for archive, name in ((path, "huge"), (path2, "huge-pax")):
        mnt = str(tmp_path / f"m-{name}")
        with mounted(archive, mnt, mode):
            p = os.path.join(mnt, name)
            assert os.stat(p).st_size == size
            fd = os.open(p, os.O_RDONLY)
            try:
                assert os.pread(fd, 100000, size - len(tail)) == tail
                assert os.pread(fd, 4096, size - 100) == tail[-100:]
                assert os.pread(fd, 4096, size) == b""
                assert os.pread(fd, 4096, 1 << 32) == b"\0" * 4096
            finally:
                os.close(fd)


def test_100k_members(tmp_path):
    """A 100,000-member archive mounts in seconds; the index's memory per
    member is what tarfs/README.md states (at most 160 bytes + the name)."""
    path = str(tmp_path / "many.tar")
    with open(path, "wb") as f:
        for i in range(100_000):
            name = "d%03d/m%06d" % (i // 1000, i)
            data = b"%d\n" % i
            h = bytearray(512)
            h[0:len(name)] = name.encode()
            h[100:108] = b"0000644\0"
            h[108:116] = b"0000000\0"
            h[116:124] = b"0000000\0"
            h[124:136] = b"%011o\0" % len(data)
            h[136:148] = b"%011o\0" % 1_700_000_000
            h[156:157] = b"0"
            h[257:265] = b"ustar\x0000"
            h[148:156] = b" " * 8
            h[148:155] = b"%06o\0" % (sum(h) & 0o777777)
            f.write(bytes(h) + data + b"\0" * (512 - len(data)))
        f.write(b"\0" * 1024)
    mnt = str(tmp_path / "m")
    t0 = time.monotonic()
    with mounted(path, mnt, "copy", ["progress"]) as m:
        took = time.monotonic() - t0
        assert open(f"{mnt}/d099/m099999", "rb").read() == b"99999\n"
        assert len(os.listdir(f"{mnt}/d050")) == 1000
    assert took < 30, f"mount took {took:.1f} s"
    names = sum(len("m%06d" % i) + 1 for i in range(100_000)) + 100 * 5
    per_member = (m.stats["index_bytes"] - names) / m.stats["members"]
    assert m.stats["members"] == 100_000
    assert per_member <= 160, per_member
    assert re.search(r"tarfs_zc: indexing .*many.tar: 100000 members, 100%", m.text), m.text


def test_zero_message_opens(archives, tree, tmp_path):
    """Where the kernel offers FUSE_NO_OPEN_SUPPORT, one OPEN is answered
    ENOSYS and no OPEN or RELEASE follows: a member costs a LOOKUP and its
    READs.  The page cache stays across opens."""
    mnt = str(tmp_path / "m")
    names = [f"dir/f{s}" for s in tarutil.SIZES]
    reads = []
    with mounted(archives["gnutar-posix"], mnt, "copy", ["debug"]) as m:
        for _ in range(2):
            for n in names:
                with open(os.path.join(mnt, n), "rb") as f:
                    assert f.read() == open(os.path.join(tree, n), "rb").read(), n
            os.listdir(os.path.join(mnt, "dir"))
            reads.append(m.log().count("opcode: READ "))
    log = m.text
    assert log.count("opcode: OPEN ") <= 1, log.count("opcode: OPEN ")
    assert log.count("opcode: RELEASE ") == 0
    assert log.count("opcode: OPENDIR ") <= 1
    # the second pass came from the page cache: no READ at all
    assert reads[0] >= len([s for s in tarutil.SIZES if s]) and reads[1] == reads[0], reads


def test_help_and_docs():
    """--help, the man page and tarfs/README.md name the same options."""
    out = subprocess.run([tarutil.binary(), "--help"], capture_output=True, text=True,
                         check=True).stdout
    ours = out.split("tarfs_zc options:")[1].split("\n\n")[0]
    opts = re.findall(r"^    -o (\S+)", ours, re.M)
    assert "zerocopy=required" in opts and "copy" in opts
    man = open(os.path.join(tarutil.REPO, "docs", "tarfs_zc.1")).read()
    readme = open(os.path.join(tarutil.REPO, "tarfs", "README.md")).read()
    man = man.replace("\\-", "-").replace('"', "")
    for o in opts:
        # "source=ARCHIVE": the man page sets the placeholder in italics
        key = o.split("=")[0] + "=" if o.split("=")[-1].isupper() else o
        assert key in man, o
        assert o in readme, o


def test_usage_errors(tmp_path):
    for args, expect in (([], "no archive"),
                         ([str(tmp_path / "missing.tar"), str(tmp_path)],
                          "No such file")):
        r = subprocess.run([tarutil.binary(), *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and expect in r.stderr, r.stderr


@pytest.mark.skipif(os.environ.get("FUSEZC_EXPECT_ZC") != "1",
                    reason="FUSEZC_EXPECT_ZC=1 not set (stock kernel)")
def test_zerocopy_connection_stats(archives, tree, mode, tmp_path):
    """On the patched kernel: every member byte read went zero copy by the
    kernel's own count (zc_read_bytes), none copied, none refused: members
    at 512-byte offsets, partial last pages and reads clipped at a member's
    end included."""
    if not mode.startswith("zerocopy"):
        pytest.skip("zero-copy accounting applies to the zerocopy modes")
    mnt = str(tmp_path / "m")
    with mounted(archives["gnutar-posix"], mnt, mode) as m:
        before = fzc_pytest.zc_conn_stats(mnt)
        for name in ("zc_read_bytes", "copy_read_bytes", "zc_refused"):
            assert name in before, before
        total = 0
        for dirpath, _, files in os.walk(mnt):
            for f in files:
                p = os.path.join(dirpath, f)
                if stat.S_ISREG(os.lstat(p).st_mode):
                    want = open(os.path.join(tree, os.path.relpath(p, mnt)), "rb").read()
                    assert open(p, "rb").read() == want, p
        total = tarutil.member_bytes(mnt)
        after = fzc_pytest.zc_conn_stats(mnt)
    zc = after["zc_read_bytes"] - before["zc_read_bytes"]
    copied = after["copy_read_bytes"] - before["copy_read_bytes"]
    refused = after["zc_refused"] - before["zc_refused"]
    assert zc >= total, (zc, total, after)
    assert copied == 0 and refused == 0, after
    assert m.stats["fallbacks"] == 0 and m.stats["copy_bytes"] == 0, m.text
    assert m.stats["splice_bytes"] == 0 and m.stats["zc_bytes"] >= total, m.text
