# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest setup for the tarfs_zc suite.

Modes come from --mode (repeatable or comma separated), else from
TARFS_TEST_MODES, else "copy,splice,zerocopy"; each is a tarfs_zc read-mode
option (-o MODE).

FUSEZC_EXPECT_ZC=1   the kernel offers zero copy: assert member bytes went
                     zero copy (daemon stats; the VM test)
TARFS_BIN            the binary (default: build/bin/tarfs_zc)
TARFS_INDEX_TEST     the index test program (default: build/bin/tarfs_index_test)
"""

import os

import pytest

import tarutil


def pytest_addoption(parser):
    parser.addoption("--mode", action="append", default=[],
                     help="read mode(s) to test, e.g. --mode zerocopy=required")


def _modes(config):
    raw = config.getoption("--mode") or [os.environ.get("TARFS_TEST_MODES",
                                                        "copy,splice,zerocopy")]
    modes = []
    for item in raw:
        modes += [m for m in item.replace(" ", ",").split(",") if m]
    return modes


def pytest_configure(config):
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("/dev/fuse is missing (and CI is set)")
        pytest.exit("/dev/fuse is missing: skipping", returncode=77)
    if not os.access(tarutil.binary(), os.X_OK):
        raise pytest.UsageError(f"{tarutil.binary()} is not built (set TARFS_BIN)")


def pytest_generate_tests(metafunc):
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", _modes(metafunc.config))


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """The source tree every archive of the suite is made from."""
    return tarutil.make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="session")
def archives(tree, tmp_path_factory):
    """{name: path}: the tree archived by GNU tar and bsdtar in their formats."""
    return tarutil.make_archives(tree, tmp_path_factory.mktemp("archives"))
