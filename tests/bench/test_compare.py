# SPDX-License-Identifier: GPL-2.0-or-later
"""compare.py on two made-up runs: which table it reads, and each verdict
(host test, no VM)."""
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

HEADER = ("| workload | backing | jobs | mode | MB/s median [min–max] | × native | server CPU s/GiB |\n"
          "| --- | --- | ---: | --- | ---: | ---: | ---: |\n")


def table(run, rows):
    lines = [f"Run {run}, kernel x, file 512 MiB.", "", HEADER.rstrip("\n")]
    lines += [f"| {wl} | tmpfs | 1 | {mode} | {mb} | 1.00 | {cpu} |" for wl, mode, mb, cpu in rows]
    return "\n".join(lines) + "\n\n"


OLD = table("2026-01-01T00:00:00Z", [
    ("seq-1m", "native", "400 [390–410]", "—"),
    ("seq-1m", "passthrough", "400 [390–410]", "0.02"),
    ("seq-1m", "zerocopy", "300 [290–310]", "1.00"),   # falls beyond the drift: worse
    ("seq-1m", "splice", "200 [190–210]", "2.00"),     # falls as native did: drift
    ("seq-1m", "copy", "100 [90–110]", "4.00"),        # overlaps: noise
    ("rand-1m", "zerocopy", "100 [90–110]", "1.00"),   # beats every old repetition: better
])
NEW = table("2026-02-01T00:00:00Z", [
    ("seq-1m", "native", "320 [310–330]", "—"),
    ("seq-1m", "passthrough", "360 [350–370]", "0.02"),
    ("seq-1m", "zerocopy", "210 [200–220]", "1.50"),
    ("seq-1m", "splice", "170 [160–180]", "2.00"),
    ("seq-1m", "copy", "95 [92–100]", "4.00"),
    ("rand-1m", "zerocopy", "130 [120–140]", "0.80"),
    ("rand-1m", "splice", "130 [120–140]", "0.80"),   # not in OLD: left out
])
LATER = table("2026-03-01T00:00:00Z", [("seq-1m", "zerocopy", "999 [999–999]", "0.10")])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def by_row(rows):
    return {(r["workload"], r["mode"]): r for r in rows}


def test_verdicts(tmp_path):
    old = compare.parse(write(tmp_path, "old.md", OLD), [])
    new = compare.parse(write(tmp_path, "new.md", "# doc\n\n" + NEW + LATER), ["2026-02"])
    rows = by_row(compare.compare(old, new))
    assert set(rows) == {("seq-1m", m) for m in ("native", "passthrough", "zerocopy", "splice", "copy")} \
        | {("rand-1m", "zerocopy")}
    assert rows[("seq-1m", "zerocopy")]["verdict"] == "worse"
    assert rows[("seq-1m", "zerocopy")]["mb_s"] == 0.7
    assert rows[("seq-1m", "zerocopy")]["server_cpu"] == 1.5
    assert rows[("seq-1m", "zerocopy")]["drift"] == [0.8, 0.9]
    assert rows[("seq-1m", "splice")]["verdict"] == "drift"      # 0.85 >= native's 0.80
    assert rows[("seq-1m", "copy")]["verdict"] == "noise"
    assert rows[("rand-1m", "zerocopy")]["verdict"] == "better"
    assert rows[("rand-1m", "zerocopy")]["drift"] == []


def test_later_table_replaces_earlier_rows(tmp_path):
    new = compare.parse(write(tmp_path, "new.md", NEW + LATER), [])
    assert new[("seq-1m", "tmpfs", 1, "zerocopy")]["median"] == 999


def test_report_names_only_rows_that_got_worse(tmp_path):
    old = compare.parse(write(tmp_path, "old.md", OLD), [])
    new = compare.parse(write(tmp_path, "new.md", NEW), [])
    out = io.StringIO()
    compare.report(compare.compare(old, new), out)
    text = out.getvalue()
    assert "| zerocopy | 2 | 0.70-1.30 (median 1.00, 2 rows) | 1 | 0 | 0 | 1 |" in text
    assert "| splice | 1 | 0.85-0.85 (median 0.85, 1 rows) | 0 | 1 | 0 | 0 |" in text
    assert "| seq-1m | tmpfs | 1 | zerocopy | 300 [290–310] | 210 [200–220] | 0.70 | 0.80, 0.90 | 1.50 |" in text
    assert "| splice |" not in text.split("Rows that fell")[1]


def test_no_table_is_an_error(tmp_path, capsys):
    empty = write(tmp_path, "empty.md", "# nothing here\n")
    good = write(tmp_path, "old.md", OLD)
    assert compare.main([empty, good]) == 2
    assert "no bench table in OLD" in capsys.readouterr().err
    assert compare.main([good, good, "--new-run", "1999"]) == 2
