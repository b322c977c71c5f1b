# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest setup for the passthrough_zc suite.

Modes come from --mode (repeatable or comma separated), else from
FUSEZC_TEST_MODES, else "copy,splice,passthrough,zerocopy".  Each mode is
a passthrough_zc read-mode option (-o MODE); "default" passes none.  The
--mode hooks and the start-up check are ../fs-common/fzc_pytest.py's.

FUSEZC_EXPECT_ZC=1        the kernel offers zero copy: assert it is used
                          (daemon stats and the connection's zerocopy_stats)
FUSEZC_EXPECT_PASSTHROUGH=0|1  whether -o passthrough must be active
                          (default: 1 when root on Linux >= 6.9)
FUSEZC_BIG=1              >= 1 GiB of random-range reads instead of 64 MiB
FUSEZC_BIN                the binary (default: build/bin/passthrough_zc)
"""

import os
import platform
import sys

import pytest

import util

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fs-common"))
import fzc_pytest  # noqa: E402

DEFAULT_MODES = "copy,splice,passthrough,zerocopy"

pytest_addoption, pytest_configure, pytest_generate_tests = fzc_pytest.mode_hooks(
    modes_env="FUSEZC_TEST_MODES", default_modes=DEFAULT_MODES,
    binary=util.binary, binary_env="FUSEZC_BIN")


def expect_zc():
    return os.environ.get("FUSEZC_EXPECT_ZC") == "1"


def expect_passthrough():
    env = os.environ.get("FUSEZC_EXPECT_PASSTHROUGH")
    if env is not None:
        return env == "1"
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return os.geteuid() == 0 and (major, minor) >= (6, 9)


def server_read_bytes(stats):
    return stats["zc_bytes"] + stats["splice_bytes"] + stats["copy_bytes"]


def check_mode_log(mode, log, stats, small_writes=False):
    """What every run in @mode must show in its log and statistics;
    @small_writes: writes below fuse.zerocopy_write_min came with data."""
    assert stats, f"no stats line in the daemon log:\n{log}"
    if mode == "copy":
        assert stats["zc_bytes"] == 0 and stats["splice_bytes"] == 0, log
    elif mode == "splice":
        assert stats["zc_bytes"] == 0, log
    elif mode.startswith("zerocopy") or mode == "default":
        if expect_zc():
            assert stats["zerocopy_active"] == 1, log
            # every write from a process is in pages: none comes with data
            if "no_zerocopy_write" not in log:
                assert stats["zerocopy_writes_active"] == 1, log
                if not small_writes:
                    assert stats["copy_write_bytes"] == 0, log
        else:
            # the stock kernel: mount fine, fall back, and say so
            assert stats["zerocopy_active"] == 0, log
            assert stats["zc_bytes"] == 0, log
            assert "zerocopy unavailable" in log and "falling back" in log, log
    elif mode == "passthrough":
        if expect_passthrough():
            assert stats["passthrough_active"] == 1, log
            assert "passthrough active" in log, log
            assert server_read_bytes(stats) == 0, log


class Mounted:
    def __init__(self, tmp_path, mode, options=()):
        self.mode = mode
        self.src = str(tmp_path / "src")
        self.mnt = str(tmp_path / "mnt")
        os.makedirs(self.src, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        self.options = [*util.mode_options(mode), *options]
        self.daemon = util.Daemon(self.src, self.mnt, self.options,
                                  str(tmp_path / "daemon.log"))
        self.rc = self.log = self.stats = None
        self.small_writes = False  # writes came with data for their size

    def s(self, *names):
        return os.path.join(self.src, *names)

    def m(self, *names):
        return os.path.join(self.mnt, *names)

    def unmount(self):
        """Unmount (once) and check the exit code and the mode's log."""
        if self.rc is None:
            self.rc, self.log = self.daemon.unmount()
            self.stats = util.parse_stats(self.log)
            assert self.rc == 0, f"daemon exit code {self.rc}:\n{self.log}"
            assert not util.is_mounted(self.mnt)
            check_mode_log(self.mode, self.log, self.stats, self.small_writes)
        return self.stats


ZC_WRITE_MIN = "/sys/module/fuse/parameters/zerocopy_write_min"


def set_zc_write_min(value):
    with open(ZC_WRITE_MIN, "w") as f:
        f.write(str(value))


@pytest.fixture(scope="session", autouse=True)
def zc_write_min_boot():
    """fuse.zerocopy_write_min as the suite found it (None: no such
    parameter, or not root).  The suite checks that every write from a
    process is lent (check_mode_log), so it sets 0 (lend every write) for
    its run and puts the value back after; test_io's
    test_small_writes_with_data sets it back for its own mount."""
    try:
        with open(ZC_WRITE_MIN) as f:
            boot = int(f.read())
        set_zc_write_min(0)
    except OSError:
        yield None
        return
    try:
        yield boot
    finally:
        set_zc_write_min(boot)


@pytest.fixture
def fs(tmp_path, mode):
    m = Mounted(tmp_path, mode)
    try:
        yield m
        m.unmount()
    finally:
        if m.rc is None:
            m.daemon.kill()


@pytest.fixture
def dirs(tmp_path):
    """An empty SOURCE (with one file, "keep") and MOUNTPOINT; whatever a
    test mounted there is unmounted, and its daemon must be gone."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "keep").write_bytes(b"untouched")
    yield str(src), str(mnt)
    util.force_unmount(str(mnt))
    util.wait_no_daemon(str(mnt))


@pytest.fixture
def mount_with(tmp_path):
    """Mount with extra options: mount_with(mode, [opts])."""
    made = []

    def make(mode, options=(), sub="x"):
        m = Mounted(tmp_path / sub, mode, options)
        made.append(m)
        return m
    yield make
    for m in made:
        if m.rc is None:
            try:
                m.unmount()
            finally:
                if m.rc is None:
                    m.daemon.kill()
