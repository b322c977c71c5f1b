# SPDX-License-Identifier: GPL-2.0-or-later
"""One source for the option docs (issue 10 item 12): the table in
passthrough/options.c prints --help; the fuse_opt table parses the same
options; the man page and the README document exactly these (and libfuse's
own options, which --help prints after ours)."""

import os
import re
import subprocess

import util

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OPTIONS_C = os.path.join(ROOT, "passthrough", "options.c")
MAN = os.path.join(ROOT, "docs", "passthrough_zc.1")
README = os.path.join(ROOT, "passthrough", "README.md")

# libfuse options the docs may mention with -o (they are not in our table)
# (and mount.fuse3's drop_privileges)
LIBFUSE = {"debug", "allow_other", "default_permissions", "fsname", "ro",
           "max_threads", "max_idle_threads", "clone_fd", "auto_unmount",
           "drop_privileges"}


def help_rows():
    """The '-o USAGE  text' rows of our section of --help."""
    out = subprocess.run([util.binary(), "--help"], capture_output=True, text=True,
                         check=True).stdout
    section = out.split("passthrough_zc options:\n", 1)[1].split("\n\n", 1)[0]
    rows = section.splitlines()
    assert rows and all(re.match(r"^    -o \S+ +\S", r) for r in rows), section
    return rows


def names(usage):
    """Option names of a usage: [no_]x is x and no_x; a=b|c is a=b and a=c
    (literal values); a=VALUE is a=."""
    out = set()
    stems = [usage[5:], "no_" + usage[5:]] if usage.startswith("[no_]") else [usage]
    for stem in stems:
        key, eq, val = stem.partition("=")
        if not eq:
            out.add(key)
        elif val.islower() or "|" in val:
            out |= {f"{key}={v}" for v in val.split("|")}
        else:
            out.add(key + "=")
    return out


def base(name):
    """The option word, for prose that names it without its value."""
    return name.split("=", 1)[0]


def help_names():
    return set().union(*(names(r.split()[1]) for r in help_rows()))


def test_help_matches_fuse_opt_table():
    """Every option the parser knows is in --help, and nothing else."""
    with open(OPTIONS_C) as f:
        src = f.read()
    table = src[src.index("pzc_opts[] = {"):src.index("FUSE_OPT_END")]
    parsed = set()
    for tmpl in re.findall(r'PZC_OPT\("([^"]+)"', table):
        parsed.add(re.sub(r"=%.*$", "=", tmpl))
    assert parsed == help_names(), \
        f"parsed only: {parsed - help_names()}; in --help only: {help_names() - parsed}"


def test_man_page_documents_every_option():
    with open(MAN) as f:
        man = f.read()
    documented = {base(n) for n in re.findall(r"\\-o ([a-z_]+=?[a-z_]*)", man)}
    ours = {base(n) for n in help_names()}
    assert ours - documented == set(), f"not in the man page: {ours - documented}"
    assert documented - ours - LIBFUSE == set(), \
        f"in the man page but not an option: {documented - ours - LIBFUSE}"


def test_readme_has_the_help_table():
    """passthrough/README.md carries --help's table verbatim, and mentions
    no -o option outside it."""
    with open(README) as f:
        readme = f.read()
    block = re.search(r"passthrough_zc options:\n(.*?)\n```", readme, re.S)
    assert block, "README.md: no ```passthrough_zc options: ...``` block"
    assert block.group(1).splitlines() == help_rows(), \
        "README.md's options block differs from passthrough_zc --help"
    mentioned = {base(n) for n in re.findall(r"-o ([a-z_]+=?[a-z_]*)", readme)}
    ours = {base(n) for n in help_names()}
    assert mentioned - ours - LIBFUSE == set(), \
        f"README.md mentions unknown options: {mentioned - ours - LIBFUSE}"
