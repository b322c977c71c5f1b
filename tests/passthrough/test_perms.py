# SPDX-License-Identifier: GPL-2.0-or-later
"""Permissions for other users through a root server with allow_other
(issue 25 items 6 and 7; passthrough.perms).

A table of attacks, each run twice by the same users: on SOURCE directly
(what the user can do) and through the mount.  An attack is a setup on the
source (as root), optionally a step that fills the mount's caches and a
change made on the source behind them, and actions by test users; its
expectation is what the actions do natively, which the table states (a
setup that does not deny what it means to deny fails the test).  Through
the mount every action must give the same result, and the source must end
in the same state (owners, modes, sizes, contents, xattrs, ACLs), with the
default options, with cache=always (1 day timeouts: the caches the attacks
fill stay stale), and with the writeback cache (write-only opens become
read-write on the source).

The users (fzcp-alice, fzcp-bob, groups fzcp-team with both, fzcp-other
with neither) are created for the module and removed after it.
"""

import dataclasses
import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from conftest import Mounted
from util import set_acl
from suite_policy import _expected, unexpected_lines
from test_startup import need_root

USERS = ("fzcp-alice", "fzcp-bob")
GROUPS = ("fzcp-team", "fzcp-other")
TIMEOUT = 30.0

CONFIGS = {
    "default": [],
    "cache=always": ["-o", "cache=always"],
    "writeback": ["-o", "writeback"],
}
# Their entry and attribute timeouts (passthrough_zc's defaults).
TIMEOUTS = {"default": 1.0, "cache=always": 86400.0, "writeback": 1.0}


# --- users ------------------------------------------------------------------

@dataclasses.dataclass
class Ids:
    alice: int
    bob: int
    alice_gid: int
    bob_gid: int
    team: int
    other: int

    def uid(self, who):
        return getattr(self, who)

    def groups(self, who):
        """primary gid, supplementary gids"""
        return getattr(self, f"{who}_gid"), [self.team]


def _delete_people():
    for u in USERS:
        subprocess.run(["userdel", u], capture_output=True)
    for g in GROUPS:
        subprocess.run(["groupdel", g], capture_output=True)


@pytest.fixture(scope="module")
def ids():
    need_root()
    _delete_people()	# leftovers of an interrupted run
    try:
        for g in GROUPS:
            subprocess.run(["groupadd", "--system", g], check=True)
        for u in USERS:
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                            "--groups", GROUPS[0], "--shell", "/usr/sbin/nologin", u],
                           check=True)
        a, b = (pwd.getpwnam(u) for u in USERS)
        yield Ids(a.pw_uid, b.pw_uid, a.pw_gid, b.pw_gid,
                  grp.getgrnam(GROUPS[0]).gr_gid, grp.getgrnam(GROUPS[1]).gr_gid)
    finally:
        _delete_people()


# --- the attacks --------------------------------------------------------------

# Each action is a Python expression run as a user with d = the attack's
# directory; it prints "ok", "ok VALUE" or the errno's name.
PRELUDE = r"""
import errno, os, subprocess, sys
d = sys.argv[1]
def p(*names):
    return os.path.join(d, *names)
def read(name):
    with open(p(name)) as f:
        return f.read()
def append(name, data="+"):
    with open(p(name), "a") as f:
        f.write(data)
def write_only(name, data="+"):
    fd = os.open(p(name), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
def openf(name, flags):
    os.close(os.open(p(name), flags))
def create(name, mode):
    os.close(os.open(p(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
def ftrunc(name, size):
    with open(p(name), "r+") as f:
        f.truncate(size)
def renameat2(old, new, flags):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, old.encode(), -100, new.encode(), flags) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def run(name):
    r = subprocess.run([p(name)], capture_output=True, text=True)
    return r.stdout.strip()
try:
    r = eval(sys.argv[2])
    print("ok" if r is None else f"ok {r}")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


@dataclasses.dataclass
class Attack:
    name: str
    setup: Callable		# setup(d, ids) on the source, as root
    steps: list		# [(user, expression), ...]
    expect: list		# the native result of each step
    prime: Optional[tuple] = None	# (user, expression) before the change
    change: Optional[Callable] = None	# change(d, ids) on the source
    # The verdict is the kernel's path walk through a directory whose
    # attributes it caches for the timeout (no request reaches the server):
    # right once the timeout has passed.
    walk_cached: bool = False


def w(path, data="data", mode=0o644, uid=0, gid=0):
    with open(path, "w") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def mkd(path, mode=0o755, uid=0, gid=0):
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def alice_file(mode, name="f", data="data"):
    return lambda d, i: w(d / name, data, mode, i.alice, i.alice_gid)


def sticky_dir_with(*files):
    """A root 1777 directory with files (name, owner) in it."""
    def setup(d, i):
        mkd(d / "s", 0o1777)
        for name, who in files:
            w(d / "s" / name, who, 0o666, i.uid(who), i.groups(who)[0])
    return setup


def _acl_file(text, mode=0o644, name="f", data="data"):
    def setup(d, i):
        w(d / name, data, mode, i.alice, i.alice_gid)
        set_acl(d / name, text, i)
    return setup


def _acl_team_file(d, i):
    """0600 alice:team; the mask widens the group class to rw, the owning
    group entry (team, bob's group) stays ---: mode shows 0660."""
    w(d / "f", "data", 0o600, i.alice, i.team)
    set_acl(d / "f", "u::rw,g::---,m::rw,o::---", i)


def _acl_dir(text, mode=0o755):
    def setup(d, i):
        mkd(d / "sub", mode, i.alice, i.alice_gid)
        w(d / "sub" / "f", "inner", 0o644, i.alice, i.alice_gid)
        set_acl(d / "sub", text, i)
    return setup


def _default_acl_dir(d, i):
    mkd(d / "shared", 0o777, i.alice, i.alice_gid)
    set_acl(d / "shared", "u::rwx,g::rwx,o::rwx", i)
    set_acl(d / "shared", "u::rwx,u:bob:---,g::rwx,m::rwx,o::rwx", i, default=True)


def _script(d, i):
    w(d / "x", "#!/bin/sh\necho ran\n", 0o755, i.alice, i.alice_gid)
    set_acl(d / "x", "u::rwx,u:bob:r--,g::r-x,m::r-x,o::r-x", i)


def _exec_only(mode):
    """alice's copy of /bin/true with @mode: running a binary needs x, not r."""
    def setup(d, i):
        shutil.copyfile("/bin/true", d / "x")
        os.chown(d / "x", i.alice, i.alice_gid)
        os.chmod(d / "x", mode)
    return setup


def _setgid_dir(d, i):
    mkd(d / "g", 0o2777, 0, i.other)


def _bob_file_other_group(d, i):
    w(d / "f", "data", 0o755, i.bob, i.other)


def _bob_file(mode=0o644):
    return lambda d, i: w(d / "f", "data", mode, i.bob, i.bob_gid)


def _with_user_xattr(d, i):
    w(d / "f", "data", 0o644, i.alice, i.alice_gid)
    os.setxattr(d / "f", "user.tag", b"alice")
    set_acl(d / "f", "u::rw,u:bob:---,g::r,m::r,o::r", i)


def _hardlink_setup(d, i):
    mkd(d / "pub", 0o777)
    w(d / "secret", "root only", 0o600)


def _two_dirs(d, i):
    mkd(d / "a", 0o777)
    mkd(d / "b", 0o755)
    w(d / "a" / "f", "bob's", 0o644, i.bob, i.bob_gid)


def _group_dir(d, i):
    mkd(d / "t", 0o770, 0, i.team)
    w(d / "t" / "f", "team", 0o660, i.alice, i.team)


def _dir_with_alice_file(mode):
    def setup(d, i):
        mkd(d / "sub", mode, i.alice, i.alice_gid)
        w(d / "sub" / "f", "data", 0o644, i.alice, i.alice_gid)
    return setup


def _decoy_link(d, i):
    mkd(d / "mine", 0o755, i.bob, i.bob_gid)
    w(d / "decoy", "root secret", 0o600)
    os.symlink(d / "decoy", d / "mine" / "link")
    os.lchown(d / "mine" / "link", i.bob, i.bob_gid)


def chmod_on_source(name, mode):
    return lambda d, i: os.chmod(d / name, mode)


def chown_on_source(name, who):
    return lambda d, i: os.chown(d / name, i.uid(who), i.groups(who)[0])


ATTACKS = [
    # ACLs on the source (item 6)
    Attack("acl-deny-read", _acl_file("u::rw,u:bob:---,g::r,m::r,o::r"),
           [("bob", "read('f')")], ["EACCES"]),
    Attack("acl-mask-widens-group", _acl_team_file,
           [("bob", "append('f')")], ["EACCES"]),
    Attack("acl-grants-write", _acl_file("u::rw,u:bob:rw,g::---,m::rw,o::---", 0o600),
           [("bob", "append('f')"), ("bob", "read('f')")], ["ok", "ok data+"]),
    Attack("acl-dir-denies-search", _acl_dir("u::rwx,u:bob:---,g::r-x,m::r-x,o::r-x"),
           [("bob", "read('sub/f')"), ("bob", "os.stat(p('sub/f')).st_size")],
           ["EACCES", "EACCES"]),
    Attack("acl-dir-denies-listing", _acl_dir("u::rwx,u:bob:--x,g::r-x,m::r-x,o::r-x"),
           [("bob", "os.listdir(p('sub'))"), ("bob", "read('sub/f')")],
           ["EACCES", "ok inner"]),
    Attack("acl-denies-exec", _script, [("bob", "run('x')")], ["EACCES"]),
    # execve(2) of a binary needs only x (xfstests generic/126): the
    # server's open as the caller cannot ask for that
    Attack("exec-only-binary", _exec_only(0o711),
           [("bob", "run('x')"), ("alice", "run('x')"), ("bob", "read('x')")],
           ["ok", "ok", "EACCES"]),
    Attack("exec-denied-without-x", _exec_only(0o744),
           [("bob", "run('x')")], ["EACCES"]),
    Attack("acl-access-check", _acl_file("u::rw,u:bob:r--,g::r,m::rw,o::rw", 0o666),
           [("bob", "os.access(p('f'), os.W_OK)"), ("bob", "os.access(p('f'), os.R_OK)")],
           ["ok False", "ok True"]),
    Attack("default-acl-on-create", _default_acl_dir,
           [("alice", "create('shared/new', 0o666)"), ("bob", "read('shared/new')"),
            ("alice", "os.mkdir(p('shared/sub'))"), ("bob", "create('shared/sub/b', 0o644)")],
           ["ok", "EACCES", "ok", "EACCES"]),
    Attack("acl-set-on-others-file", alice_file(0o666),
           [("bob", "os.setxattr(p('f'), 'system.posix_acl_access', bytes.fromhex("
                    "'02000000' '01000600ffffffff' '04000600ffffffff' '20000600ffffffff'))")],
           ["EPERM"]),
    # sticky directories
    Attack("sticky-unlink-others", sticky_dir_with(("f", "alice")),
           [("bob", "os.unlink(p('s/f'))")], ["EPERM"]),
    Attack("sticky-rename-over-others", sticky_dir_with(("f", "alice"), ("g", "bob")),
           [("bob", "os.rename(p('s/g'), p('s/f'))")], ["EPERM"]),
    Attack("sticky-rename-others-away", sticky_dir_with(("f", "alice")),
           [("bob", "os.rename(p('s/f'), p('s/mine'))")], ["EPERM"]),
    Attack("sticky-rmdir-others", lambda d, i: (mkd(d / "s", 0o1777),
                                                mkd(d / "s" / "sub", 0o777, i.alice)),
           [("bob", "os.rmdir(p('s/sub'))")], ["EPERM"]),
    Attack("sticky-unlink-after-chown-on-source", sticky_dir_with(("f", "bob")),
           [("bob", "os.unlink(p('s/f'))")], ["EPERM"],
           prime=("bob", "os.stat(p('s/f')).st_uid"), change=chown_on_source("s/f", "alice")),
    Attack("sticky-user-xattr-on-dir", lambda d, i: mkd(d / "s", 0o1777),
           [("bob", "os.setxattr(p('s'), 'user.x', b'1')")], ["EPERM"]),
    # links and renames
    Attack("hardlink-to-unreadable", _hardlink_setup,
           [("bob", "os.link(p('secret'), p('pub/l'))")], ["EPERM"]),
    Attack("rename-into-unwritable-dir", _two_dirs,
           [("bob", "os.rename(p('a/f'), p('b/f'))")], ["EACCES"]),
    Attack("unlink-after-dir-chmod-on-source", _dir_with_alice_file(0o777),
           [("bob", "os.unlink(p('sub/f'))")], ["EACCES"],
           prime=("bob", "os.stat(p('sub/f')).st_size"), change=chmod_on_source("sub", 0o755)),
    Attack("symlink-to-root-file", _decoy_link,
           [("bob", "read('mine/link')")], ["EACCES"]),
    # setattr of others' files
    Attack("chmod-others", alice_file(0o644), [("bob", "os.chmod(p('f'), 0o666)")], ["EPERM"]),
    Attack("chown-others", alice_file(0o666),
           [("bob", "os.chown(p('f'), os.getuid(), -1)")], ["EPERM"]),
    Attack("chgrp-own-not-member", _bob_file(),
           [("bob", "os.chown(p('f'), -1, int(sys.argv[3]))")], ["EPERM"]),
    Attack("chgrp-own-member", _bob_file(),
           [("bob", "os.chown(p('f'), -1, os.getgroups()[0])"),	# the team
            ("bob", "os.stat(p('f')).st_gid == os.getgroups()[0]")], ["ok", "ok True"]),
    Attack("utimes-explicit-others", alice_file(0o666),
           [("bob", "os.utime(p('f'), (1, 1))")], ["EPERM"]),
    Attack("utimes-now-writable", alice_file(0o666),
           [("bob", "os.utime(p('f'))")], ["ok"]),
    Attack("truncate-others-readonly", alice_file(0o644),
           [("bob", "os.truncate(p('f'), 0)")], ["EACCES"]),
    Attack("o-trunc-others-readonly", alice_file(0o644),
           [("bob", "openf('f', os.O_WRONLY | os.O_TRUNC)")], ["EACCES"]),
    Attack("ftruncate-writable", alice_file(0o666),
           [("bob", "ftrunc('f', 2)"), ("bob", "read('f')")], ["ok", "ok da"]),
    Attack("o-noatime-others", alice_file(0o644),
           [("bob", "openf('f', os.O_RDONLY | os.O_NOATIME)")], ["EPERM"]),
    # set-id bits
    Attack("setgid-dir-inherits", _setgid_dir,
           [("bob", "create('g/f', 0o644)"), ("bob", "os.mkdir(p('g/sub'))"),
            ("bob", "oct(os.stat(p('g/sub')).st_mode)")], ["ok", "ok", "ok 0o42755"]),
    Attack("chmod-setgid-not-member", _bob_file_other_group,
           [("bob", "os.chmod(p('f'), 0o2755)"), ("bob", "oct(os.stat(p('f')).st_mode)")],
           ["ok", "ok 0o100755"]),
    Attack("write-kills-setuid", alice_file(0o4766),
           [("bob", "append('f')"), ("bob", "oct(os.stat(p('f')).st_mode)")],
           ["ok", "ok 0o100766"]),
    Attack("o-trunc-kills-setuid", alice_file(0o6776),
           [("bob", "openf('f', os.O_WRONLY | os.O_TRUNC)"),
            ("bob", "oct(os.stat(p('f')).st_mode)")], ["ok", "ok 0o100776"]),
    Attack("mknod-device", lambda d, i: mkd(d / "pub", 0o777),
           [("bob", "os.mknod(p('pub/dev'), 0o666 | 0o020000, os.makedev(1, 3))")],
           ["EPERM"]),
    # extended attributes
    Attack("user-xattr-others-readonly", alice_file(0o644),
           [("bob", "os.setxattr(p('f'), 'user.x', b'1')")], ["EACCES"]),
    Attack("user-xattr-read-denied", _with_user_xattr,
           [("bob", "os.getxattr(p('f'), 'user.tag')"),
            ("bob", "os.removexattr(p('f'), 'user.tag')")], ["EACCES", "EACCES"]),
    Attack("trusted-xattr", _bob_file(), [("bob", "os.setxattr(p('f'), 'trusted.x', b'1')")],
           ["EPERM"]),
    Attack("trusted-xattr-names-hidden",
           lambda d, i: (w(d / "f", "data", 0o644, i.bob, i.bob_gid),
                         os.setxattr(d / "f", "trusted.fzc", b"root's")),
           [("bob", "sorted(os.listxattr(p('f')))")], ["ok []"]),
    Attack("security-xattr", _bob_file(),
           [("bob", "os.setxattr(p('f'), 'security.fzc', b'1')")], ["EPERM"]),
    # supplementary groups
    Attack("group-member-reads", lambda d, i: w(d / "f", "team", 0o640, i.alice, i.team),
           [("bob", "read('f')")], ["ok team"]),
    Attack("group-dir-member-writes", _group_dir,
           [("bob", "create('t/b', 0o644)"), ("bob", "os.unlink(p('t/f'))"),
            ("bob", "os.rename(p('t/b'), p('t/c'))")], ["ok", "ok", "ok"]),
    Attack("search-only-dir", _dir_with_alice_file(0o711),
           [("bob", "os.listdir(p('sub'))"), ("bob", "read('sub/f')")], ["EACCES", "ok data"]),
    # permissions changed on the source behind the mount's caches
    Attack("open-after-chmod-on-source", alice_file(0o644),
           [("bob", "read('f')")], ["EACCES"],
           prime=("bob", "read('f')"), change=chmod_on_source("f", 0o600)),
    Attack("write-after-chmod-on-source", alice_file(0o666),
           [("bob", "append('f')")], ["EACCES"],
           prime=("bob", "append('f')"), change=chmod_on_source("f", 0o644)),
    Attack("open-after-acl-on-source", alice_file(0o644),
           [("bob", "read('f')")], ["EACCES"],
           prime=("bob", "read('f')"),
           change=lambda d, i: set_acl(d / "f", "u::rw,u:bob:---,g::r,m::r,o::r", i)),
    Attack("chmod-after-chown-on-source", alice_file(0o644),
           [("alice", "os.chmod(p('f'), 0o666)")], ["EPERM"],
           prime=("alice", "os.stat(p('f')).st_uid"), change=chown_on_source("f", "bob")),
    Attack("hardlink-after-chmod-on-source",
           lambda d, i: (mkd(d / "pub", 0o777), w(d / "f", "data", 0o666, i.alice)),
           [("bob", "os.link(p('f'), p('pub/l'))")], ["EPERM"],
           prime=("bob", "os.stat(p('f')).st_mode"), change=chmod_on_source("f", 0o644)),
    Attack("search-after-dir-chmod-on-source", _dir_with_alice_file(0o755),
           [("bob", "read('sub/f')")], ["EACCES"],
           prime=("bob", "read('sub/f')"), change=chmod_on_source("sub", 0o700),
           walk_cached=True),
    Attack("search-after-dir-acl-on-source", _dir_with_alice_file(0o755),
           [("bob", "read('sub/f')")], ["EACCES"],
           prime=("bob", "read('sub/f')"),
           change=lambda d, i: set_acl(d / "sub", "u::rwx,u:bob:---,g::r-x,m::r-x,o::r-x", i),
           walk_cached=True),
    Attack("sticky-exchange-with-others", sticky_dir_with(("f", "alice"), ("g", "bob")),
           [("bob", "renameat2(p('s/g'), p('s/f'), 2)")], ["EPERM"]),
    # write-only files (the writeback cache opens them read-write)
    Attack("write-only-file", alice_file(0o622),
           [("bob", "write_only('f')"), ("bob", "read('f')")], ["ok", "EACCES"]),
]


# --- running them -------------------------------------------------------------

def act(ids, who, expr, d):
    gid, groups = ids.groups(who)
    res = subprocess.run([sys.executable, "-c", PRELUDE, str(d), expr, str(ids.other)],
                         user=ids.uid(who), group=gid, extra_groups=groups,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0 and res.stdout.count("\n") == 1, res
    return res.stdout.strip()


def state(top):
    """What an attack may have changed under top, times aside."""
    out = {}
    for root, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            st = os.lstat(path)
            entry = [st.st_uid, st.st_gid, oct(st.st_mode), st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry.append(hashlib.sha256(f.read()).hexdigest()[:16])
            if not stat.S_ISLNK(st.st_mode):
                entry.append(sorted((x, os.getxattr(path, x, follow_symlinks=False))
                                    for x in os.listxattr(path, follow_symlinks=False)))
            out[os.path.relpath(path, top)] = entry
    return out


def perform(attack, ids, src_dir, user_dir, settle=0.0):
    """Set up in src_dir, act in user_dir (src_dir itself, or its name
    through the mount; settle seconds after the change): the steps'
    results and src_dir's state after."""
    mkd(src_dir, 0o755)
    attack.setup(src_dir, ids)
    if attack.prime:
        act(ids, attack.prime[0], attack.prime[1], user_dir)
    if attack.change:
        attack.change(src_dir, ids)
        time.sleep(settle)
    results = [act(ids, who, expr, user_dir) for who, expr in attack.steps]
    return results, state(src_dir)


@pytest.fixture(scope="module")
def base():
    need_root()
    path = tempfile.mkdtemp(prefix="fzc-perms-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=list(CONFIGS))
def mount(request, base, ids):
    """One mount per configuration, allow_other, shared by the attacks (each
    in a directory of its own); its log must be clean."""
    top = os.path.join(base, request.param.replace("=", "-"))
    os.mkdir(top)
    os.chmod(top, 0o755)
    m = Mounted(_Path(top), "copy", ["-o", "allow_other", *CONFIGS[request.param]])
    os.chmod(m.src, 0o755)
    os.chmod(m.mnt, 0o755)
    native = os.path.join(top, "native")
    os.mkdir(native)
    os.chmod(native, 0o755)
    try:
        yield m, native, request.param
        m.unmount()
    finally:
        if m.rc is None:
            m.daemon.kill()
    bad = unexpected_lines(m.log, _expected(request.node))
    assert not bad, f"the daemon printed lines this test did not expect: {bad}"


class _Path(str):
    """The str Mounted joins paths onto (it takes a pathlib-like tmp_path)."""
    def __truediv__(self, other):
        return os.path.join(self, other)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack(mount, ids, attack, request):
    m, native_top, config = mount
    native = Path(native_top) / attack.name
    want, want_state = perform(attack, ids, native, native)
    assert want == attack.expect, \
        f"natively the steps give {want}, not {attack.expect}: the setup is wrong"
    settle = 0.0
    if attack.walk_cached:
        if TIMEOUTS[config] > 10:
            request.applymarker(pytest.mark.xfail(strict=True, reason=(
                f"{config}: a directory's permission changed on SOURCE reaches the "
                f"kernel's path walk after the {TIMEOUTS[config]:.0f} s attribute "
                "timeout (passthrough_zc(1), PERMISSIONS)")))
        else:
            settle = TIMEOUTS[config] + 0.2
    got, got_state = perform(attack, ids, Path(m.s(attack.name)), m.m(attack.name), settle)
    assert got == want, f"through the mount {got}, natively {want}"
    assert got_state == want_state, "the source ends in another state"
