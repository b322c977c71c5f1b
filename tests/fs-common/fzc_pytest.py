# SPDX-License-Identifier: GPL-2.0-or-later
"""What the pytest suites of passthrough_zc (tests/passthrough) and tarfs_zc
(tests/tarfs) share: the read modes a run tests, its start-up check, and the
FUSE connection's zero-copy counters.  Standard library and pytest only; a
suite's conftest.py puts this folder on sys.path.

In a conftest.py:

    pytest_addoption, pytest_configure, pytest_generate_tests = \\
        fzc_pytest.mode_hooks(modes_env=..., default_modes=...,
                              binary=..., binary_env=...)
"""

import os
import subprocess

import pytest

CONNECTIONS = "/sys/fs/fuse/connections"


def modes(config, modes_env, default_modes):
    """The modes asked for: --mode (repeatable or comma separated), else
    $modes_env, else default_modes."""
    raw = config.getoption("--mode") or [os.environ.get(modes_env, default_modes)]
    found = []
    for item in raw:
        found += [m for m in item.replace(" ", ",").split(",") if m]
    return found


def mode_hooks(modes_env, default_modes, binary, binary_env):
    """A suite's three pytest hooks: the --mode option; at start-up, exit 77
    (skip) without /dev/fuse, unless CI=true, and a usage error when
    binary() is not an executable (set $binary_env); every test that takes
    a `mode` argument runs once per mode (modes())."""

    def pytest_addoption(parser):
        parser.addoption("--mode", action="append", default=[],
                         help="read mode(s) to test, e.g. --mode zerocopy=required")

    def pytest_configure(config):
        if not os.path.exists("/dev/fuse"):
            if os.environ.get("CI") == "true":
                raise pytest.UsageError("/dev/fuse is missing (and CI is set)")
            pytest.exit("/dev/fuse is missing: skipping", returncode=77)
        if not os.access(binary(), os.X_OK):
            raise pytest.UsageError(f"{binary()} is not built (set {binary_env})")

    def pytest_generate_tests(metafunc):
        if "mode" in metafunc.fixturenames:
            metafunc.parametrize("mode", modes(metafunc.config, modes_env, default_modes))

    return pytest_addoption, pytest_configure, pytest_generate_tests


def conn_dir(mnt):
    """/sys/fs/fuse/connections/<minor of the mount's st_dev> (fusectl is
    mounted first if that directory is missing)."""
    path = os.path.join(CONNECTIONS, str(os.minor(os.stat(mnt).st_dev)))
    if not os.path.isdir(path):
        subprocess.run(["mount", "-t", "fusectl", "none", CONNECTIONS], capture_output=True)
    return path


def zc_conn_stats(mnt):
    """The mount's connection's zerocopy_stats ('name value' lines) as a dict."""
    stats = {}
    with open(os.path.join(conn_dir(mnt), "zerocopy_stats")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                stats[parts[0]] = int(parts[1])
    return stats
