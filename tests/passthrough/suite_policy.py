# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest plugin (-p suite_policy, added by CMakeLists.txt): rules every
passthrough_zc test obeys beyond its own asserts.

1. Under CI (CI=true, the one definition the whole tree uses) a test skipped
   for lack of root fails instead: CI runs as root, so such a skip means the
   test did not run where it had to.
2. The daemon's output is checked, as libfuse's test/util.py output_checker
   does: after a test, every daemon.log under its tmp_path (the logs of the
   fs and mount_with fixtures) must hold no error, warning, refusal or
   fallback line that the test did not expect.  Expected lines: the
   stock-kernel fallback notices (unless FUSEZC_EXPECT_ZC=1), the
   passthrough-unavailable notice (unless passthrough is expected), and
   what a test declares with @pytest.mark.daemon_output(regex, ...).
"""

import os
import re

import pytest

# libfuse prefixes its own complaints with "fuse: ".
SUSPICIOUS = re.compile(
    r"^fuse: |\b(error|warning|fatal|exception|traceback|abort(ed)?|bug|leak|refused|"
    r"failed|cannot|unable|falling back|unavailable|sanitizer|runtime error)\b",
    re.IGNORECASE)

# libfuse copies a splice-mode reply when its pipe cannot take it; the
# library says so once.  Not a failure of the server.
ALWAYS_EXPECTED = [
    r"fuse-zc: libfuse answered a read by copy, not splice \(pipe limits\)",
]

STOCK_KERNEL_ZC = [
    r"fuse-zc: zero copy unavailable: kernel does not offer FUSE zero copy "
    r"\(stock kernel\); falling back to (splice|copy)",
    r"passthrough_zc: read mode zerocopy unavailable \(kernel does not offer "
    r"FUSE zero copy \(stock kernel\)\), falling back to (splice|copy)",
]

NO_PASSTHROUGH = [
    r"fuse-zc: passthrough unavailable: .*",
    r"passthrough_zc: .*passthrough.*unavailable.*",
]


def under_ci():
    return os.environ.get("CI") == "true"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "daemon_output(*regex): daemon log lines this test expects")


def _expectations():
    """(zero copy expected, passthrough expected), from the suite's conftest."""
    try:
        from conftest import expect_passthrough, expect_zc
    except ImportError:      # the plugin's own self-test, outside the suite
        return os.environ.get("FUSEZC_EXPECT_ZC") == "1", False
    return expect_zc(), expect_passthrough()


def _expected(item):
    zc, passthrough = _expectations()
    pats = list(ALWAYS_EXPECTED)
    if not zc:
        pats += STOCK_KERNEL_ZC
    if not passthrough:
        pats += NO_PASSTHROUGH
    for mark in item.iter_markers("daemon_output"):
        pats += list(mark.args)
    return [re.compile(p) for p in pats]


def unexpected_lines(text, expected):
    bad = []
    for line in text.splitlines():
        if SUSPICIOUS.search(line) and not any(p.fullmatch(line.strip()) for p in expected):
            bad.append(line)
    return bad


def _daemon_logs(item):
    """tmp_path/daemon.log (fs) and tmp_path/SUB/daemon.log (mount_with);
    never a walk of the trees the tests made (deep, odd names, mounts)."""
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if tmp is None:
        return []
    logs = [os.path.join(tmp, "daemon.log")]
    try:
        with os.scandir(tmp) as it:
            logs += [os.path.join(e.path, "daemon.log") for e in it
                     if e.is_dir(follow_symlinks=False)]
    except OSError:
        pass
    return sorted(p for p in logs if os.path.isfile(p))


def _skip_reason(rep):
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        return str(rep.longrepr[2])
    return str(rep.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and under_ci() and not hasattr(rep, "wasxfail"):
        reason = _skip_reason(rep)
        if re.search(r"\broot\b", reason):
            rep.outcome = "failed"
            rep.longrepr = f"skipped under CI=true, where it must run: {reason}"
            return
    if rep.when == "teardown" and rep.passed:
        expected = _expected(item)
        problems = []
        for log in _daemon_logs(item):
            with open(log, errors="replace") as f:
                bad = unexpected_lines(f.read(), expected)
            problems += [f"{log}: {line}" for line in bad]
        if problems:
            rep.outcome = "failed"
            rep.longrepr = ("the daemon printed lines this test did not expect:\n" +
                            "\n".join(problems))
