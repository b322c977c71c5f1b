# SPDX-License-Identifier: GPL-2.0-or-later
"""Resources and bad input (issue 25 items 8 and 11), independent of the read
mode (passthrough.resources):

- a refusal of kernel passthrough for one file (a backing file on a stacked
  file system) serves that file in the read mode and keeps passthrough for
  the others.
"""

import os
import subprocess

import pytest

import util
from conftest import expect_passthrough
from test_ops import pattern, read_file, write_file
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
