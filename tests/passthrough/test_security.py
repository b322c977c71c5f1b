# SPDX-License-Identifier: GPL-2.0-or-later
"""passthrough_zc as a root server for other users (issue 10):

- objects are created in the caller's context (fs credentials and
  supplementary groups of the caller), never through a symlink planted in
  SOURCE, and nothing outside SOURCE changes;
- a blocking flock() never parks a worker: more waiters than workers, -s,
  and Ctrl-C of a waiter leave the mount responsive;
- SOURCE and MOUNTPOINT must not contain each other; file systems mounted
  under SOURCE do not show colliding inode numbers;
- readdirplus skips an entry removed between readdir() and its lookup.

Most tests need root and a second user (created if missing): without root
they skip, except under CI, where they fail.
"""

import ctypes
import errno
import grp
import os
import pathlib
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import util
from conftest import Mounted
from suite_policy import _expected, under_ci, unexpected_lines

BIN = util.binary()
USER = "fzc-test-user"
GROUP = "fzc-test-group"	# a supplementary group of USER
TIMEOUT = 30.0			# generous bound for anything that must finish


def need_root():
    if os.geteuid() == 0:
        return
    if under_ci():
        pytest.fail("needs root (CI=true: not skipping)")
    pytest.skip("needs root")


def _ensure_user():
    """uid, primary gid and supplementary gid of the test user."""
    need_root()
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                        "--shell", "/usr/sbin/nologin", USER], check=True)
    if USER not in grp.getgrnam(GROUP).gr_mem:
        subprocess.run(["usermod", "-a", "-G", GROUP, USER], check=True)
    pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid, grp.getgrnam(GROUP).gr_gid


@pytest.fixture
def user():
    return _ensure_user()


@pytest.fixture
def base():
    """A directory other users can traverse (pytest's tmp_path is 0700)."""
    need_root()
    path = tempfile.mkdtemp(prefix="fzc-sec-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
        mnt = line.split()[4]
        if mnt.startswith(path + "/"):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mounted(base, request):
    """Mounts under base; their daemon logs get suite_policy's check (which
    only looks under tmp_path by itself)."""
    made = []

    def make(options=(), sub="x"):
        d = base / sub
        d.mkdir()
        os.chmod(d, 0o755)
        m = Mounted(d, "copy", options)
        os.chmod(m.src, 0o755)
        os.chmod(m.mnt, 0o755)
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
    for m in made:
        bad = unexpected_lines(m.log or m.daemon.log(), _expected(request.node))
        assert not bad, f"the daemon printed lines this test did not expect: {bad}"


def as_user(uid, gid, groups, code, *args, timeout=TIMEOUT, check=True):
    """Run python code as uid/gid with supplementary groups."""
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                         user=uid, group=gid, extra_groups=list(groups),
                         capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, res
    return res


def fingerprint(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        data = f.read()
    return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_size,
            st.st_mtime_ns, st.st_ctime_ns, data)


def make_decoy(base, name):
    """A root-owned 0600 file outside SOURCE, standing in for /etc/shadow."""
    path = base / name
    path.write_bytes(b"root:secret-hash:19000:0:99999:7:::\n")
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    return str(path)


# --- 1. creation in the caller's context ---------------------------------

PLANT_AND_CREATE = r"""
import os, sys
mnt, src, decoy, trunc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
try:
    os.stat(mnt)                       # ENOENT: a negative dentry is cached
    raise SystemExit("exists already")
except FileNotFoundError:
    pass
os.symlink(decoy, src)                 # planted in SOURCE, behind the cache
flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else os.O_APPEND)
try:
    fd = os.open(mnt, flags, 0o644)    # FUSE_CREATE: must not follow
    os.write(fd, b"owned\n")
    os.close(fd)
    print("created")
except OSError as e:
    print("refused", e.errno)
"""


@pytest.mark.parametrize("trunc", [False, True], ids=["append", "truncate"])
def test_create_does_not_follow_planted_symlink(mounted, user, base, trunc):
    """The issue's /etc/shadow scenario on a decoy outside SOURCE."""
    uid, gid, sgid = user
    decoy = make_decoy(base, "shadow")
    before = fingerprint(decoy)
    fs = mounted(["-o", "allow_other", "-o", "timeout=60"])
    os.mkdir(fs.s("A"))
    os.chown(fs.s("A"), uid, gid)
    res = as_user(uid, gid, [sgid], PLANT_AND_CREATE, fs.m("A", "x"), fs.s("A", "x"),
                  decoy, int(trunc))
    assert fingerprint(decoy) == before, res.stdout
    assert os.path.islink(fs.s("A", "x"))


def test_new_objects_belong_to_the_caller(mounted, user):
    uid, gid, sgid = user
    fs = mounted(["-o", "allow_other"])
    os.mkdir(fs.s("A"))
    os.chown(fs.s("A"), uid, gid)
    code = r"""
import os, sys
d = sys.argv[1]
open(os.path.join(d, "file"), "w").close()
os.mkdir(os.path.join(d, "dir"), 0o755)
os.mkfifo(os.path.join(d, "fifo"), 0o644)
os.symlink("file", os.path.join(d, "sym"))
os.link(os.path.join(d, "file"), os.path.join(d, "hard"))
"""
    as_user(uid, gid, [sgid], code, fs.m("A"))
    for name in ("file", "dir", "fifo", "sym", "hard"):
        st = os.lstat(fs.s("A", name))
        assert (st.st_uid, st.st_gid) == (uid, gid), name
        mst = os.lstat(fs.m("A", name))
        assert (mst.st_uid, mst.st_gid) == (uid, gid), name


SETID_OPS = r"""
import os, sys
d = sys.argv[1]
old = os.umask(0)
fd = os.open(os.path.join(d, "suid"), os.O_CREAT | os.O_WRONLY, 0o4755)
os.close(fd)
fd = os.open(os.path.join(d, "sgid"), os.O_CREAT | os.O_WRONLY, 0o2755)
os.close(fd)
os.mkdir(os.path.join(d, "sub"), 0o755)
os.mknod(os.path.join(d, "node"), 0o2644 | 0o010000)  # a fifo with S_ISGID
open(os.path.join(d, "plain"), "w").close()
os.chmod(os.path.join(d, "plain"), 0o4750)
"""


def _setid_result(d):
    out = {}
    for name in ("suid", "sgid", "sub", "node", "plain"):
        st = os.lstat(os.path.join(d, name))
        out[name] = (st.st_uid, st.st_gid, oct(st.st_mode))
    return out


@pytest.mark.parametrize("member", [True, False], ids=["in-group", "not-in-group"])
def test_setid_bits_as_on_the_source(mounted, user, base, member):
    """Set-uid/set-gid bits and set-gid directory inheritance come out as
    when the caller works on the source file system directly (which also
    needs the caller's supplementary groups on the server thread)."""
    uid, gid, sgid = user
    dir_gid = sgid if member else 0
    fs = mounted(["-o", "allow_other"])
    ref = base / "ref"
    for d in (str(ref), fs.s("G")):
        os.mkdir(d)
        os.chown(d, 0, dir_gid)
        os.chmod(d, 0o2777)
    as_user(uid, gid, [sgid], SETID_OPS, ref)
    as_user(uid, gid, [sgid], SETID_OPS, fs.m("G"))
    expected = _setid_result(ref)
    assert expected["sub"][1] == dir_gid and expected["suid"][0] == uid  # sanity
    assert _setid_result(fs.s("G")) == expected


RACE_PLANTER = r"""
import os, sys, time
d, decoys, until = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
while time.time() < until:
    for j, decoy in enumerate(decoys):
        p = os.path.join(d, f"n{j}")
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            os.rmdir(p)
        try:
            os.symlink(decoy, p)
        except FileExistsError:
            pass
"""

RACE_CREATOR = r"""
import os, sys, time
d, ndecoys, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < until:
    for j in range(ndecoys):
        p = os.path.join(d, f"n{j}")
        try:
            os.stat(p)
        except OSError:
            pass
        for op in range(3):
            try:
                if op == 0:
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK,
                                 0o666)  # a fifo has no reader: ENXIO
                    os.write(fd, b"x")
                    os.close(fd)
                elif op == 1:
                    os.mkfifo(p, 0o666)
                else:
                    os.mkdir(p, 0o777)
            except OSError:
                pass
"""


def test_symlink_race_loop(mounted, user, base):
    """The second user plants symlinks to root-owned files outside SOURCE
    while racing creates through the mount: nothing outside changes."""
    uid, gid, sgid = user
    decoys = [make_decoy(base, f"decoy{i}") for i in range(3)]
    before = [fingerprint(d) for d in decoys]
    # no caching: every create is a LOOKUP then a CREATE, and the planter
    # swaps the name in between
    fs = mounted(["-o", "allow_other", "-o", "timeout=0"])
    os.mkdir(fs.s("A"))
    os.chown(fs.s("A"), uid, gid)
    until = time.time() + 8
    procs = [subprocess.Popen([sys.executable, "-c", RACE_PLANTER, fs.s("A"),
                               ",".join(decoys), str(until)], user=uid, group=gid),
             subprocess.Popen([sys.executable, "-c", RACE_CREATOR, fs.m("A"),
                               str(len(decoys)), str(until)], user=uid, group=gid)]
    try:
        for p in procs:
            assert p.wait(120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [fingerprint(d) for d in decoys] == before
    for name in os.listdir(fs.s("A")):
        assert os.lstat(fs.s("A", name)).st_uid == uid, name


# --- 2. blocking locks never park a worker --------------------------------

LOCK_HOLDER = r"""
import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
fcntl.flock(f, fcntl.LOCK_UN)
print("unlocked", flush=True)
f.close()
print("closed", flush=True)
"""

LOCK_WAITER = r"""
import fcntl, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)   # as Ctrl-C of flock(1)
f = open(sys.argv[1], "r+")
print("opened", flush=True)	# its next request is the FLOCK
fcntl.flock(f, fcntl.LOCK_EX)
fcntl.flock(f, fcntl.LOCK_UN)
f.close()
"""


def _conn(fs):
    """/sys/fs/fuse/connections/N of the mount, from mountinfo: a stat of
    the mount (fzc_pytest.conn_dir) would hang on a deadlocked server."""
    mnt = os.path.join(os.path.realpath(os.path.dirname(fs.mnt)),
                       os.path.basename(fs.mnt))	# no lstat of the mount
    with open("/proc/self/mountinfo") as f:
        devs = [ln.split()[2] for ln in f if ln.split()[4] == mnt]
    assert devs, f"{mnt} is not mounted"
    base = "/sys/fs/fuse/connections"
    if not os.path.isdir(base + "/" + devs[-1].split(":")[1]):
        subprocess.run(["mount", "-t", "fusectl", "none", base], capture_output=True)
    return os.path.join(base, devs[-1].split(":")[1])


def _waiting(fs):
    """Requests the kernel has queued or sent and not seen answered."""
    with open(os.path.join(_conn(fs), "waiting")) as f:
        return int(f.read())


def _poll(cond, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _read_line(proc, want, timeout=TIMEOUT):
    """The next stdout line of proc, bounded in time."""
    box = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert box and box[0].strip() == want, f"expected {want!r}, got {box!r}"


def _bounded(lockers, fs, code):
    """Run code (argv[1] = the mount's file) in a process that must end
    within TIMEOUT: a hung mount fails the test instead of hanging it."""
    p = lockers(fs, code)
    try:
        p.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError("the mount does not answer") from None
    assert p.returncode == 0, code


STAT = "import os, sys; os.stat(sys.argv[1])"
TRY_LOCK = r"""
import fcntl, sys
with open(sys.argv[1]) as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
"""


@pytest.fixture
def lockers():
    """Holder/waiter processes; on teardown a mount still blocked is
    aborted (connections/N/abort) so that the test cannot hang."""
    procs, mounts = [], []

    def start(fs, code, stdin=None):
        if fs not in mounts:
            mounts.append(fs)
        # stdout to a pipe for those that talk, else to the log (a
        # process stuck in the mount must not block a pipe reader)
        p = subprocess.Popen([sys.executable, "-c", code, fs.m("f")], text=True,
                             stdin=stdin,
                             stdout=subprocess.PIPE if stdin else None)
        procs.append(p)
        return p
    yield start
    stuck = False
    for p in procs:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                stuck = True
    if stuck:
        for fs in mounts:
            with open(os.path.join(_conn(fs), "abort"), "w") as f:
                f.write("1")
        for p in procs:
            p.wait(TIMEOUT)


def _unlock_and_close(holder):
    """The holder unlocks and closes; it says so and exits."""
    holder.stdin.write("\n")
    holder.stdin.flush()
    _read_line(holder, "unlocked")
    _read_line(holder, "closed")
    assert holder.wait(TIMEOUT) == 0


def _waiters_then_unlock(fs, lockers, nwaiters):
    with open(fs.s("f"), "w") as f:
        f.write("lock me")
    holder = lockers(fs, LOCK_HOLDER, stdin=subprocess.PIPE)
    _read_line(holder, "locked")
    base_waiting = _waiting(fs)
    waiters = [lockers(fs, LOCK_WAITER) for _ in range(nwaiters)]
    _poll(lambda: _waiting(fs) >= base_waiting + nwaiters, f"{nwaiters} waiting FLOCKs")
    _bounded(lockers, fs, STAT)
    _unlock_and_close(holder)
    for w in waiters:
        assert w.wait(TIMEOUT) == 0
    _bounded(lockers, fs, STAT)


def test_flock_more_waiters_than_workers(mounted, lockers):
    """Default pool (4 workers): 8 blocked flock() calls, then the holder
    unlocks and closes; every waiter gets the lock in turn."""
    fs = mounted()
    _waiters_then_unlock(fs, lockers, 8)


def test_flock_waiters_single_thread(mounted, lockers):
    fs = mounted(["-s"])
    _waiters_then_unlock(fs, lockers, 3)


def test_posix_lock_waiters_single_thread(mounted, lockers):
    """fcntl(F_SETLKW) waiters never reach the server (no setlk handler:
    the kernel keeps POSIX locks), so they cannot take its one worker."""
    fs = mounted(["-s"])
    posix = {"fcntl.flock(f, fcntl.LOCK_EX)": "fcntl.lockf(f, fcntl.LOCK_EX)",
             "fcntl.flock(f, fcntl.LOCK_UN)": "fcntl.lockf(f, fcntl.LOCK_UN)"}
    holder_code, waiter_code = LOCK_HOLDER, LOCK_WAITER
    for a, b in posix.items():
        holder_code, waiter_code = holder_code.replace(a, b), waiter_code.replace(a, b)
    with open(fs.s("f"), "w") as f:
        f.write("lock me")
    holder = lockers(fs, holder_code, stdin=subprocess.PIPE)
    _read_line(holder, "locked")
    waiters = [lockers(fs, waiter_code) for _ in range(3)]
    _bounded(lockers, fs, STAT)
    _unlock_and_close(holder)
    for w in waiters:
        assert w.wait(TIMEOUT) == 0


@pytest.mark.parametrize("opts", [[], ["-s"]], ids=["mt", "single"])
def test_flock_waiter_interrupted(mounted, lockers, opts):
    """Ctrl-C of a blocked waiter ends it (FUSE_INTERRUPT is honoured);
    the holder still holds the lock and can unlock and close."""
    fs = mounted(opts)
    with open(fs.s("f"), "w") as f:
        f.write("lock me")
    holder = lockers(fs, LOCK_HOLDER, stdin=subprocess.PIPE)
    _read_line(holder, "locked")
    base_waiting = _waiting(fs)
    victim = lockers(fs, LOCK_WAITER)
    _poll(lambda: _waiting(fs) >= base_waiting + 1, "a waiting FLOCK")
    victim.send_signal(signal.SIGINT)
    assert victim.wait(TIMEOUT) == -signal.SIGINT
    # the lock is still the holder's
    _bounded(lockers, fs, TRY_LOCK.replace('print("free")', 'sys.exit("free")'))
    _unlock_and_close(holder)
    _bounded(lockers, fs, TRY_LOCK.replace('print("held")', 'sys.exit("held")'))
    _bounded(lockers, fs, STAT)


WAITER_REPORTS = r"""
import fcntl, sys
f = open(sys.argv[1], "r+")
print("opened", flush=True)
try:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("granted")
except OSError as e:
    print("errno", e.errno)
"""


def test_sigterm_with_flock_waiters(base, lockers):
    """SIGTERM to the daemon while flock() waiters wait (issue 25 item 5):
    each waiter gets an error, never the kernel's internal -ERESTARTSYS
    ("Unknown error 512"), which a waiter without a signal of its own sees
    when the server answers EINTR.  Waits with threads and queued ones.
    Repeated: it lost a race 2 runs in 3."""
    for run in range(4):
        d = base / f"run{run}"
        d.mkdir()
        fs = Mounted(d, "copy")
        try:
            with open(fs.s("f"), "w") as f:
                f.write("lock me")
            holder = lockers(fs, LOCK_HOLDER, stdin=subprocess.PIPE)
            _read_line(holder, "locked")
            base_waiting = _waiting(fs)
            waiters = [subprocess.Popen([sys.executable, "-c", WAITER_REPORTS, fs.m("f")],
                                        stdout=subprocess.PIPE, text=True)
                       for _ in range(10)]	# 8 threads, 2 queued
            for w in waiters:		# each one's only request is its FLOCK
                _read_line(w, "opened")
            _poll(lambda: _waiting(fs) >= base_waiting + 10, "10 waiting FLOCKs")
            fs.daemon.proc.terminate()
            assert fs.daemon.proc.wait(TIMEOUT) == 0, fs.daemon.log()
            for w in waiters:
                out, _ = w.communicate(timeout=TIMEOUT)
                assert out.strip() != "errno 512", f"run {run}: -ERESTARTSYS leaked"
                assert out.startswith("errno"), f"run {run}: {out!r}"
            holder.kill()
            holder.wait(TIMEOUT)
        finally:
            fs.daemon.kill()


def _tasks(fs):
    return len(os.listdir(f"/proc/{fs.daemon.proc.pid}/task"))


def test_flock_waiter_threads_are_capped(mounted, lockers):
    """30 blocked flock() waiters do not make 30 threads (issue 25 item 9):
    at most 8 wait threads and a poller, besides at most max_threads
    workers.  Waits beyond the cap queue; a queued wait for a lock that is
    free is granted however many waits block on another; a queued wait is
    still ended by its Ctrl-C; all of them get the lock once it is free."""
    fs = mounted(["-o", "threads=4"])
    for name in ("f", "g"):
        with open(fs.s(name), "w") as f:
            f.write("lock me")
    holder = lockers(fs, LOCK_HOLDER, stdin=subprocess.PIPE)
    _read_line(holder, "locked")
    _bounded(lockers, fs, STAT)
    before = _tasks(fs)
    base_waiting = _waiting(fs)
    waiters = [lockers(fs, LOCK_WAITER) for _ in range(30)]
    _poll(lambda: _waiting(fs) >= base_waiting + 30, "30 waiting FLOCKs")
    grown = _tasks(fs) - before
    assert grown <= 8 + 1 + 4, f"{grown} more threads for 30 flock() waiters"

    # beyond the cap: queued for certain
    g_holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, fs.m("g")],
                                text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _read_line(g_holder, "locked")
        g_waiter = subprocess.Popen([sys.executable, "-c", LOCK_WAITER, fs.m("g")],
                                    text=True, stdout=subprocess.PIPE)
        victim = lockers(fs, LOCK_WAITER, stdin=subprocess.DEVNULL)
        _read_line(g_waiter, "opened")
        _read_line(victim, "opened")
        _poll(lambda: _waiting(fs) >= base_waiting + 32, "2 more waiting FLOCKs")
        victim.send_signal(signal.SIGINT)
        assert victim.wait(TIMEOUT) == -signal.SIGINT
        _unlock_and_close(g_holder)
        assert g_waiter.wait(TIMEOUT) == 0, "a queued wait for a free lock"
    finally:
        for p in (g_holder, locals().get("g_waiter")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    _unlock_and_close(holder)
    for w in waiters:
        assert w.wait(TIMEOUT) == 0
    _bounded(lockers, fs, STAT)


# --- 4. source topology -----------------------------------------------------

def _refused(res, mnt, words=()):
    assert res.returncode != 0, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {res.stderr!r}"
    for w in words:
        assert w in lines[0], lines[0]
    assert not util.is_mounted(mnt)


@pytest.mark.parametrize("layout", ["mnt-in-src", "src-in-mnt", "same"])
def test_source_and_mountpoint_must_not_nest(tmp_path, layout):
    top = tmp_path / "top"
    inner = top / "a" / "b"
    inner.mkdir(parents=True)
    if layout == "mnt-in-src":
        src, mnt = top, inner
    elif layout == "src-in-mnt":
        src, mnt = inner, top
    else:
        src = mnt = top
    # through a symlink and a relative path: the check compares real paths
    link = tmp_path / "link"
    link.symlink_to(src)
    try:
        res = subprocess.run([BIN, str(link), os.path.relpath(mnt)],
                             capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        util.force_unmount(str(mnt))
    _refused(res, str(mnt), words=("contains",))


def _mount_tmpfs(path):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "fzc-test", path],
                   check=True)


def test_submount_inode_numbers_do_not_collide(mounted):
    """Two fresh tmpfs under SOURCE number their inodes alike (and like
    SOURCE's own): through the mount, two paths share an inode number only
    when they are the same source object."""
    fs = mounted()
    for sub in ("t1", "t2"):
        os.mkdir(fs.s(sub))
        _mount_tmpfs(fs.s(sub))
    try:
        for sub in ("t1", "t2"):
            for i in range(20):
                os.makedirs(fs.s(sub, f"d{i}"))
                with open(fs.s(sub, f"d{i}", "f"), "w") as f:
                    f.write(sub)
            os.link(fs.s(sub, "d0", "f"), fs.s(sub, "hard"))   # a true hard link
        for i in range(20):
            os.makedirs(fs.s(f"d{i}"))
        by_src, by_mnt = {}, {}
        for root, dirs, files in os.walk(fs.mnt):
            for name in ["."] + dirs + files:
                rel = os.path.relpath(os.path.join(root, name), fs.mnt)
                m = os.lstat(fs.m(rel))
                s = os.lstat(fs.s(rel))
                by_src.setdefault((s.st_dev, s.st_ino), set()).add(m.st_ino)
                by_mnt.setdefault(m.st_ino, set()).add((s.st_dev, s.st_ino))
        sharing = {ino: objs for ino, objs in by_mnt.items() if len(objs) > 1}
        assert not sharing, f"inode numbers shared by different objects: {sharing}"
        assert all(len(v) == 1 for v in by_src.values()), by_src
        assert os.lstat(fs.m("t1", "hard")).st_ino == os.lstat(fs.m("t1", "d0", "f")).st_ino
        # find(1) sees neither loops nor changed directories
        res = subprocess.run(["find", fs.mnt], capture_output=True, text=True,
                             timeout=TIMEOUT)
        assert res.returncode == 0 and not res.stderr, res.stderr
        # the numbers are stable while the mount is up
        again = {os.path.relpath(os.path.join(r, n), fs.mnt): os.lstat(os.path.join(r, n)).st_ino
                 for r, ds, fls in os.walk(fs.mnt) for n in ds + fls}
        for rel, ino in again.items():
            assert {ino} == by_src[(os.lstat(fs.s(rel)).st_dev, os.lstat(fs.s(rel)).st_ino)]
    finally:
        for sub in ("t1", "t2"):
            subprocess.run(["umount", "-l", fs.s(sub)], capture_output=True)


# --- 3. readdirplus against a concurrent rm --------------------------------
#
# glibc's readdir() takes ENOENT from getdents() for the end of the
# directory, so a READDIRPLUS that fails on a vanished entry shows up as a
# listing cut short: the entries that exist all along must all be listed.

KEEP = [f"keep-{j:05d}" for j in range(1500)]
DOOMED = [f"gone-{j:05d}" for j in range(1500)]


def _populate(d):
    os.mkdir(d)
    for n in KEEP + DOOMED:
        open(os.path.join(d, n), "w").close()


def _assert_all_kept(names, what):
    missing = set(KEEP) - set(names)
    assert not missing, f"{what}: {len(missing)} entries missing, e.g. {sorted(missing)[:3]}"


CHURN = r"""
import os, sys, time
d, names, until = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
while time.time() < until:
    for n in names:
        open(os.path.join(d, n), "w").close()
    for n in names:
        os.unlink(os.path.join(d, n))
"""


def test_listing_survives_concurrent_rm(mounted):
    """ls -l and scandir+stat while another process creates and removes
    files: no listing fails or misses an entry that is there all along."""
    fs = mounted()
    _populate(fs.s("d"))
    for n in DOOMED:
        os.unlink(fs.s("d", n))
    churn = subprocess.Popen([sys.executable, "-c", CHURN, fs.s("d"), ",".join(DOOMED),
                              str(time.time() + 8)])
    listings = 0
    try:
        while churn.poll() is None:
            names = []
            with os.scandir(fs.m("d")) as it:
                for e in it:
                    names.append(e.name)
                    try:
                        e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        pass	# removed since: fine
            _assert_all_kept(names, f"scandir #{listings}")
            res = subprocess.run(["ls", "-l", fs.m("d")], capture_output=True,
                                 text=True, timeout=TIMEOUT)
            # ls may report an entry that vanished before its own lstat;
            # it must not fail to read the directory
            assert "reading directory" not in res.stderr, res.stderr[-500:]
            _assert_all_kept([ln.split()[-1] for ln in res.stdout.splitlines()[1:]
                              if ln.strip()], f"ls -l #{listings}")
            listings += 1
    finally:
        if churn.poll() is None:
            churn.kill()
        churn.wait(TIMEOUT)
    assert churn.returncode == 0
    assert listings >= 3


# --- 5. a SOURCE root cannot stat (issue 25 item 10) -----------------------

def test_source_another_users_fuse_mount(base, user):
    """Another user's FUSE mount (no allow_other) opens by path but refuses
    fstat even to root: reported as what happened, not as "not a
    directory".  The user's mount is made as mount.fuse3 -o
    drop_privileges makes one (/dev/fuse need not be open to users here)."""
    uid, gid, sgid = user
    theirs_src, theirs_mnt, mnt = base / "tsrc", base / "tmnt", base / "mnt"
    for d in (theirs_src, theirs_mnt, mnt):
        d.mkdir()
        os.chown(d, uid, gid)
    fd = os.open("/dev/fuse", os.O_RDWR)
    opts = f"fd={fd},rootmode=40000,user_id={uid},group_id={gid}"
    if util.libc.mount(os.fsencode(str(theirs_src)), os.fsencode(str(theirs_mnt)),
                       b"fuse.passthrough_zc", ctypes.c_ulong(6),	# nosuid, nodev
                       opts.encode()) == -1:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, os.strerror(err))
    with open(base / "theirs.log", "w") as log:
        proc = subprocess.Popen([BIN, "-f", str(theirs_src), f"/dev/fd/{fd}"],
                                pass_fds=(fd,), user=uid, group=gid,
                                stdout=log, stderr=subprocess.STDOUT)
    os.close(fd)
    try:
        res = subprocess.run([BIN, "-f", str(theirs_mnt), str(mnt)],
                             capture_output=True, text=True, timeout=TIMEOUT)
        _refused(res, str(mnt), words=("cannot stat", "Permission denied"))
        assert "not a directory" not in res.stderr
    finally:
        subprocess.run(["umount", "-l", str(theirs_mnt)], capture_output=True)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
