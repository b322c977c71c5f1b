# SPDX-License-Identifier: GPL-2.0-or-later
"""tests/bench/tar.py's summary and goal verdicts, from known numbers."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tar  # noqa: E402

GIB = 1 << 30


def _rows(mbs, cpu=0.5):
    rows = []
    for (backing, kind), cfgs in mbs.items():
        for config, speeds in cfgs.items():
            for rep, s in enumerate(speeds):
                rows.append(dict(backing=backing, archive=kind, config=config, rep=rep,
                                 bytes=GIB, seconds=GIB / (s * 1e6),
                                 server_cpu_s=cpu, members=1024))
    return rows


def test_summary_median_and_cpu():
    s = tar.summarise(_rows({("disk", "1m"): {"copy": [100, 300, 200]}}, cpu=2.0))
    med, lo, hi, cpu = s[("disk", "1m")]["copy"]
    assert round(med) == 200 and round(lo) == 100 and round(hi) == 300
    assert abs(cpu - 2.0) < 1e-9


def test_goals():
    s = tar.summarise(_rows({
        ("disk", "1m"): {"native": [1000], "copy": [300], "splice": [500],
                         "zerocopy": [950], "archivemount": [100]},
        ("tmpfs", "wds"): {"native": [1000], "copy": [300], "splice": [500],
                           "zerocopy": [400], "archivemount": [200]},
    }))
    verdicts = {text.split(":")[0] + ":" + text.split("x ")[1].split(" (")[0]: ok
                for text, ok in tar.goals(s)}
    assert verdicts == {
        "disk/1m:native": True,
        "disk/1m:the better of copy and splice": True,
        "disk/1m:archivemount": True,
        "tmpfs/wds:the better of copy and splice": False,
        "tmpfs/wds:archivemount": False,
    }


def test_per_member_split():
    rows = _rows({("disk", "1m"): {"zerocopy": [100, 100, 100]}})
    for r in rows:
        r["members"] = 1000
        r["seconds"] = 3.0
        r["open_s"] = 1.0
    native = dict(rows[0], config="native", open_s=0.0, seconds=2.0)
    split = tar.per_member(rows + [native])
    assert split[("disk", "1m")]["zerocopy"] == (1.0, 2.0)
    assert split[("disk", "1m")]["native"] == (0.0, 2.0)
    # raw files from before the split have no open_s: no table, no error
    old = [{k: v for k, v in r.items() if k != "open_s"} for r in rows]
    assert tar.per_member(old) == {}
