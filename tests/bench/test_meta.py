# SPDX-License-Identifier: GPL-2.0-or-later
"""meta.py's summary on rows with known numbers: medians, server CPU per
operation and the ratios the metadata table reports (host test, no VM)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meta  # noqa: E402


def row(workload, config, rep, seconds, cpu="-", ops=1000):
    return {"workload": workload, "config": config, "rep": str(rep), "ops": str(ops),
            "seconds": str(seconds), "server_cpu_s": str(cpu)}


def test_medians_and_ratios():
    rows = [row("open", "native", r, 0.01) for r in (1, 2, 3)]
    rows += [row("open", "root", 1, 1.0, 0.2), row("open", "root", 2, 2.0, 0.4),
             row("open", "root", 3, 4.0, 0.3)]		# median 500 ops/s, 300 us/op
    rows += [row("open", "user", r, 4.0, 0.6) for r in (1, 2, 3)]	# 250 ops/s
    rows += [row("open", "user-no_acl", r, 2.5, 0.5) for r in (1, 2, 3)]  # 400 ops/s
    s = meta.summarise(rows)
    assert s[("open", "native")] == (100000.0, None, 100000.0, 100000.0)
    assert s[("open", "root")] == (500.0, 300.0, 250.0, 1000.0)
    assert s[("open", "user")] == (250.0, 600.0, 250.0, 250.0)
    assert meta.ratio(s, "open", "user", "root") == 0.5
    assert meta.ratio(s, "open", "user", "user-no_acl") == 0.625
    assert meta.ratio(s, "stat", "user", "root") is None
    lines = meta.table(s)
    assert len(lines) == 3		# header, rule, the one workload measured
    assert lines[2] == ("| open | 100000 (100000–100000) | 500 (250–1000) | 250 (250–250) "
                        "| 400 (400–400) | 300 / 600 | 0.80 | 0.62 | 0.50 |")
