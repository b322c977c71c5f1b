# SPDX-License-Identifier: GPL-2.0-or-later
"""Kill and abort loops: readers busy on the mount when the daemon is
killed or the connection aborted get an error, never a hang or a wrong
byte, and the mount point is usable again."""

import errno
import os
import signal
import subprocess
import threading
import time

import fzc_pytest
import tarutil

ROUNDS = int(os.environ.get("TARFS_ABORT_ROUNDS", "5"))


def _readers(mnt, want, stop, errors, wrong):
    def run():
        while not stop.is_set():
            try:
                with open(os.path.join(mnt, "dir", "f1048583"), "rb", buffering=0) as f:
                    off = 0
                    while not stop.is_set():
                        b = f.read(65536)
                        if not b:
                            break
                        if b != want[off:off + len(b)]:
                            wrong.append(off)
                        off += len(b)
                    # this file's pages out of the cache: the next pass
                    # goes to the server again
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError as e:
                errors.append(e.errno)
                time.sleep(0.01)
    ts = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    for t in ts:
        t.start()
    return ts


def test_kill_and_abort(archives, tree, mode, tmp_path):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root (the connection's abort file)")
    want = open(os.path.join(tree, "dir", "f1048583"), "rb").read()
    for rnd in range(ROUNDS):
        for how in ("kill", "abort"):
            mnt = str(tmp_path / f"m{rnd}{how}")
            m = tarutil.Mount(archives["gnutar-posix"], mnt, [mode],
                              f"{mnt}.log").start()
            conn = fzc_pytest.conn_dir(mnt)
            stop, errors, wrong = threading.Event(), [], []
            ts = _readers(mnt, want, stop, errors, wrong)
            try:
                time.sleep(0.3)
                if how == "kill":
                    m.proc.send_signal(signal.SIGKILL)
                else:
                    with open(f"{conn}/abort", "w") as f:
                        f.write("1")
                time.sleep(0.3)
            finally:
                stop.set()
            for t in ts:
                t.join(timeout=120)
                assert not t.is_alive(), "a reader hangs after the " + how
            assert not wrong, f"wrong bytes at {wrong[:3]}"
            # the readers saw the connection go: an error, not a short read
            assert errors, f"no reader saw the {how}"
            assert set(errors) <= {errno.ENOTCONN, errno.ECONNABORTED, errno.EIO}, errors
            m.proc.wait(timeout=120)
            subprocess.run(["umount", "-l", mnt], check=False)
            assert not os.path.ismount(mnt)
