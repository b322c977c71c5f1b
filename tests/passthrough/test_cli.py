# SPDX-License-Identifier: GPL-2.0-or-later
"""Command line, daemon mode, mount(8)/mount.fuse3/fstab, and bad input:
a bad invocation exits non-zero with one line on stderr, mounts nothing and
leaves SOURCE alone."""

import os
import shutil
import subprocess

import pytest

import util
from conftest import check_mode_log, expect_zc

BIN = util.binary()
ROOT = os.geteuid() == 0


def run(*args, env=None, timeout=30):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def snapshot(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def assert_refused(res, mnt, src=None, before=None, words=()):
    assert res.returncode != 0, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {res.stderr!r}"
    for w in words:
        assert w in lines[0], lines[0]
    assert not util.is_mounted(mnt)
    if src is not None:
        assert snapshot(src) == before


def test_version_help():
    res = run("--version")
    assert res.returncode == 0
    assert "passthrough_zc version" in res.stdout and "libfuse version 3." in res.stdout
    res = run("--help")
    assert res.returncode == 0
    for word in ("zerocopy=required", "splice", "copy", "passthrough", "cache=",
                 "source=", "max_read", "writeback"):
        assert word in res.stdout


def test_missing_source(dirs):
    _, mnt = dirs
    res = run("-f", "/nonexistent/source/dir", mnt)
    assert_refused(res, mnt, words=("source",))


def test_file_as_source(dirs):
    src, mnt = dirs
    before = snapshot(src)
    res = run("-f", os.path.join(src, "keep"), mnt)
    assert_refused(res, mnt, src, before, words=("not a directory",))


def test_no_source(dirs):
    _, mnt = dirs
    assert_refused(run("-f", mnt), mnt, words=("source",))


def test_too_many_args(dirs):
    src, mnt = dirs
    assert_refused(run("-f", src, mnt, "/tmp"), mnt, words=("too many",))


def test_unknown_option(dirs):
    src, mnt = dirs
    before = snapshot(src)
    res = run("-f", "-o", "bogus_option_xyz", src, mnt)
    assert_refused(res, mnt, src, before, words=("bogus_option_xyz",))
    res = run("-f", "-o", "cache=sometimes", src, mnt)
    assert_refused(res, mnt, src, before)


def test_mountpoint_busy(dirs, tmp_path):
    src, mnt = dirs
    other = tmp_path / "other"
    other.mkdir()
    d = util.Daemon(str(other), mnt, [], str(tmp_path / "first.log"))
    try:
        before = snapshot(src)
        res = run("-f", src, mnt)
        assert res.returncode != 0
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "busy" in lines[0], res.stderr
        assert snapshot(src) == before
        # the first mount is still the one there
        assert util.mount_source(mnt)[0] == str(other)
    finally:
        rc, _ = d.unmount()
    assert rc == 0
    assert not util.is_mounted(mnt)


def test_missing_mountpoint(dirs):
    src, _ = dirs
    res = run("-f", src, "/nonexistent/mnt")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not ROOT or not shutil.which("unshare"), reason="needs root, unshare")
def test_no_dev_fuse(dirs):
    """A private mount namespace with an empty /dev: no /dev/fuse."""
    src, mnt = dirs
    before = snapshot(src)
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          'mount -t tmpfs none /dev && exec "$@"', "sh",
                          BIN, "-f", src, mnt], capture_output=True, text=True, timeout=30)
    assert_refused(res, mnt, src, before, words=("/dev/fuse",))


@pytest.mark.parametrize("value", ["1", "4095", "0"])
def test_max_write_below_a_page_refused(dirs, value):
    """The kernel never sends less than a page per WRITE: a smaller buffer
    made the loop fail on the first one and the mount vanish (issue 25
    item 10).  Refused before mounting."""
    src, mnt = dirs
    before = snapshot(src)
    res = run("-f", "-o", f"max_write={value}", src, mnt)
    assert_refused(res, mnt, src, before, words=("max_write", "4096"))


def test_max_write_of_a_page_serves(dirs, tmp_path):
    src, mnt = dirs
    d = util.Daemon(src, mnt, ["-o", "max_write=4096"], str(tmp_path / "w.log"))
    try:
        data = os.urandom(3 * 4096 + 17)
        with open(os.path.join(mnt, "w"), "wb") as f:
            f.write(data)
        with open(os.path.join(src, "w"), "rb") as f:
            assert f.read() == data
    finally:
        rc, log = d.unmount()
    assert rc == 0, log


def test_passthrough_with_writeback_refused(dirs):
    src, mnt = dirs
    assert_refused(run("-f", "-o", "passthrough,writeback", src, mnt), mnt)


@pytest.mark.skipif(expect_zc(), reason="this kernel offers zero copy")
@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_zerocopy_required_refused(dirs, foreground):
    src, mnt = dirs
    before = snapshot(src)
    args = ["-o", "zerocopy=required", src, mnt]
    res = run(*(["-f"] + args if foreground else args))
    assert_refused(res, mnt, src, before, words=("zero copy",))
    util.wait_no_daemon(mnt)


def test_daemon_mode(dirs):
    """Without -f: the parent returns 0 once mounted, the daemon serves,
    unmounting ends it."""
    src, mnt = dirs
    res = run(src, mnt)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert util.is_mounted(mnt)
    assert util.mount_source(mnt) == (src, "fuse.passthrough_zc")
    assert open(os.path.join(mnt, "keep"), "rb").read() == b"untouched"
    assert util.daemon_pids(mnt)
    util.unmount(mnt)
    util.wait_unmounted(mnt)
    util.wait_no_daemon(mnt)


def test_source_option(dirs):
    src, mnt = dirs
    # -o source= instead of the first argument
    res = run("-o", f"source={src}", mnt)
    assert res.returncode == 0, res.stderr
    assert open(os.path.join(mnt, "keep"), "rb").read() == b"untouched"
    util.unmount(mnt)
    util.wait_unmounted(mnt)
    util.wait_no_daemon(mnt)
    assert_refused(run("-f", "-o", f"source={src}", src, mnt), mnt, words=("twice",))


def test_sigterm_unmounts(dirs, tmp_path):
    src, mnt = dirs
    d = util.Daemon(src, mnt, [], str(tmp_path / "d.log"))
    d.proc.terminate()
    assert d.proc.wait(10) == 0, d.log()
    util.wait_unmounted(mnt)


def _env_with_bin():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(BIN) + os.pathsep + env.get("PATH", "")
    return env


SH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def helper_in_path():
    """mount(8) drops PATH before running mount.fuse3, whose /bin/sh then
    finds `passthrough_zc` in the default PATH only.  Link the build's
    binary into /usr/local/sbin for the test unless one is installed."""
    found = shutil.which("passthrough_zc", path=SH_PATH)
    link = None
    if found is None:
        link = "/usr/local/sbin/passthrough_zc"
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(BIN, link)
    elif os.path.realpath(found) != os.path.realpath(BIN):
        pytest.skip(f"another passthrough_zc is installed: {found}")
    try:
        yield
    finally:
        if link:
            os.unlink(link)


@pytest.mark.skipif(not ROOT or not shutil.which("mount.fuse3"), reason="needs root, mount.fuse3")
def test_mount_fuse3_direct(dirs):
    """What mount(8) runs: mount.fuse3 SOURCE MNT -t passthrough_zc -o OPTS
    (with build/bin in PATH)."""
    src, mnt = dirs
    res = subprocess.run(["mount.fuse3", src, mnt, "-t", "passthrough_zc", "-o",
                          "rw,zerocopy,cache=auto"], capture_output=True, text=True,
                         env=_env_with_bin(), timeout=30)
    assert res.returncode == 0, res.stderr
    try:
        assert util.mount_source(mnt) == (src, "fuse.passthrough_zc")
        assert open(os.path.join(mnt, "keep"), "rb").read() == b"untouched"
    finally:
        subprocess.run(["umount", mnt], check=True)
    util.wait_unmounted(mnt)
    util.wait_no_daemon(mnt)


@pytest.mark.skipif(not ROOT or not shutil.which("mount"), reason="needs root and mount(8)")
def test_mount_helper(dirs, helper_in_path):
    """mount -t fuse.passthrough_zc SOURCE MNT -o ... runs mount.fuse3, which
    runs `passthrough_zc SOURCE MNT -o ...` found in the default PATH."""
    src, mnt = dirs
    opts = "zerocopy" if not expect_zc() else "zerocopy=required"
    res = subprocess.run(["mount", "-t", "fuse.passthrough_zc", src, mnt, "-o", opts],
                         capture_output=True, text=True, env=_env_with_bin(), timeout=30)
    assert res.returncode == 0, res.stderr
    try:
        assert util.mount_source(mnt) == (src, "fuse.passthrough_zc")
        with open(os.path.join(mnt, "keep"), "rb") as f:
            assert f.read() == b"untouched"
        with open(os.path.join(mnt, "new"), "wb") as f:
            f.write(b"via mount.fuse3")
        assert open(os.path.join(src, "new"), "rb").read() == b"via mount.fuse3"
    finally:
        subprocess.run(["umount", mnt], check=True)
    util.wait_unmounted(mnt)
    util.wait_no_daemon(mnt)


@pytest.mark.skipif(not ROOT or not shutil.which("mount"), reason="needs root and mount(8)")
def test_fstab_line(dirs, tmp_path, helper_in_path):
    """An /etc/fstab line (via mount --fstab on a private copy)."""
    src, mnt = dirs
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{src} {mnt} fuse.passthrough_zc "
                     "defaults,allow_other,splice,cache=auto 0 0\n")
    res = subprocess.run(["mount", "--fstab", str(fstab), mnt], capture_output=True,
                         text=True, env=_env_with_bin(), timeout=30)
    assert res.returncode == 0, res.stderr
    try:
        assert util.mount_source(mnt) == (src, "fuse.passthrough_zc")
        assert "allow_other" in open("/proc/self/mountinfo").read()
        with open(os.path.join(mnt, "keep"), "rb") as f:
            assert f.read() == b"untouched"
    finally:
        subprocess.run(["umount", mnt], check=True)
    util.wait_unmounted(mnt)
    util.wait_no_daemon(mnt)


@pytest.mark.skipif(not ROOT or not shutil.which("mount"), reason="needs root and mount(8)")
@pytest.mark.skipif(expect_zc(), reason="this kernel offers zero copy")
def test_mount_helper_zerocopy_required_refused(dirs, helper_in_path):
    src, mnt = dirs
    res = subprocess.run(["mount", "-t", "fuse.passthrough_zc", src, mnt,
                          "-o", "zerocopy=required"], capture_output=True, text=True,
                         env=_env_with_bin(), timeout=30)
    assert res.returncode != 0
    assert "zero copy" in res.stderr
    assert not util.is_mounted(mnt)
    util.wait_no_daemon(mnt)


def test_stats_and_log(dirs, tmp_path, mode):
    """-o stats at unmount: the mode says what it did (fallback included)."""
    src, mnt = dirs
    d = util.Daemon(src, mnt, util.mode_options(mode), str(tmp_path / "s.log"))
    with open(os.path.join(mnt, "keep"), "rb") as f:
        assert f.read() == b"untouched"
    rc, log = d.unmount()
    assert rc == 0
    stats = util.parse_stats(log)
    check_mode_log(mode, log, stats)
    for key in ("zc_bytes", "splice_bytes", "copy_bytes", "fallbacks"):
        assert key in stats
