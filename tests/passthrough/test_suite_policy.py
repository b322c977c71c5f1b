# SPDX-License-Identifier: GPL-2.0-or-later
"""Self-test of suite_policy.py: the rules must be able to fail a test."""

import os
import subprocess
import sys
import textwrap

import pytest

import suite_policy

HERE = os.path.dirname(os.path.abspath(__file__))

INNER = textwrap.dedent('''
    import pytest

    def test_needs_root():
        pytest.skip("needs root")

    def test_quiet_daemon(tmp_path):
        (tmp_path / "daemon.log").write_text("passthrough_zc: read mode copy\\n")

    def test_refusal_not_expected(tmp_path):
        (tmp_path / "daemon.log").write_text(
            "fuse-zc: zero-copy read refused by the kernel (Operation not permitted); "
            "falling back to copy\\n")

    @pytest.mark.daemon_output(r"fuse-zc: zero-copy read refused .*")
    def test_refusal_expected(tmp_path):
        (tmp_path / "daemon.log").write_text(
            "fuse-zc: zero-copy read refused by the kernel (Operation not permitted); "
            "falling back to copy\\n")
''')


def run_inner(tmp_path, ci):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = dict(os.environ, PYTHONPATH=HERE)
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "-p", "suite_policy", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_policy_verdicts(tmp_path, ci):
    out = run_inner(tmp_path, ci)
    verdict = {}
    for line in out.splitlines():
        for word in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            if line.startswith(word + " "):
                name = line.split("::")[-1].split()[0] if "::" in line else line
                verdict[name] = word
    assert verdict.get("test_quiet_daemon") == "PASSED", out
    assert verdict.get("test_refusal_expected") == "PASSED", out
    # an unexpected refusal line fails the test (at teardown: ERROR)
    assert verdict.get("test_refusal_not_expected") in ("FAILED", "ERROR"), out
    if ci:
        assert verdict.get("test_needs_root") in ("FAILED", "ERROR"), out
    else:
        assert "SKIPPED" in out and "needs root" in out, out


def test_unexpected_lines():
    expected = [__import__("re").compile(p) for p in suite_policy.ALWAYS_EXPECTED]
    log = ("passthrough_zc: read mode splice\n"
           "fuse-zc: libfuse answered a read by copy, not splice (pipe limits)\n"
           "fuse: writing device: Invalid argument\n")
    assert suite_policy.unexpected_lines(log, expected) == \
        ["fuse: writing device: Invalid argument"]
