# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest setup for the tarfs_zc suite.

Modes come from --mode (repeatable or comma separated), else from
TARFS_TEST_MODES, else "copy,splice,zerocopy"; each is a tarfs_zc read-mode
option (-o MODE).  The --mode hooks and the start-up check are
../fs-common/fzc_pytest.py's.

FUSEZC_EXPECT_ZC=1   the kernel offers zero copy: assert member bytes went
                     zero copy (daemon stats; the VM test)
TARFS_BIN            the binary (default: build/bin/tarfs_zc)
TARFS_INDEX_TEST     the index test program (default: build/bin/tarfs_index_test)
"""

import os
import sys

import pytest

import tarutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fs-common"))
import fzc_pytest  # noqa: E402

pytest_addoption, pytest_configure, pytest_generate_tests = fzc_pytest.mode_hooks(
    modes_env="TARFS_TEST_MODES", default_modes="copy,splice,zerocopy",
    binary=tarutil.binary, binary_env="TARFS_BIN")


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """The source tree every archive of the suite is made from."""
    return tarutil.make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="session")
def archives(tree, tmp_path_factory):
    """{name: path}: the tree archived by GNU tar and bsdtar in their formats."""
    return tarutil.make_archives(tree, tmp_path_factory.mktemp("archives"))
