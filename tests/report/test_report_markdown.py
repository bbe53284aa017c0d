"""summary.md: the verdict table a PR reader sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gate.report import render_summary
from gate.report.markdown import md_escape

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def fixture(name: str = "three_candidates.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def table_rows(md: str, header: str) -> list[list[str]]:
    lines = md.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_verdict_table_has_a_row_per_candidate_and_tier() -> None:
    md = render_summary(fixture())
    assert md.startswith("## gate: release ❌ FAIL\n")
    rows = table_rows(md, "| candidate | tier | deciding task | delta | verdict |")
    assert len(rows) == 9
    assert rows[4] == ["overfit", "related", "toy\\_country\\_facts", "-21.0 pts", "❌ FAIL"]
    assert rows[8] == ["small-sample", "general", "toy\\_wikitext", "+3.8%", "✅ PASS"]


def test_tasks_that_did_not_pass_are_listed_with_advice() -> None:
    rows = table_rows(render_summary(fixture()),
                      "| candidate | tier | task | delta | interval | policy | verdict | advice |")
    assert [r[2] for r in rows] == ["toy\\_country\\_facts", "toy\\_capital\\_reverse",
                                    "toy\\_general\\_qa", "toy\\_wikitext", "toy\\_summ",
                                    "toy\\_country\\_facts", "toy\\_capital\\_reverse"]
    assert rows[1][7].startswith("About 830 items")


def test_passing_run_lists_no_failing_tasks() -> None:
    md = render_summary(fixture("passing.json"))
    assert "Tasks that did not pass" not in md and "✅ PASS" in md


@pytest.mark.parametrize(("text", "escaped"), [
    ("a|b", "a\\|b"),
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("[link](http://x)", "\\[link\\](http://x)"),
    ("*bold* _em_ `code`", "\\*bold\\* \\_em\\_ \\`code\\`"),
    ("# heading", "\\# heading"),
    ("- item", "\\- item"),
    ("1. item", "\\1. item"),
    ("two\nlines\r\n", "two lines "),
    ("a & b", "a &amp; b"),
])
def test_md_escape(text: str, escaped: str) -> None:
    assert md_escape(text) == escaped


def test_stopped_tasks_are_not_judged_and_never_decide_a_tier() -> None:
    """A task fail_fast stopped is STOPPED everywhere, shows no interval, and the
    tier's row names the task that failed it (issue 18: not the stopped one)."""
    import copy

    results = copy.deepcopy(fixture())
    overfit = next(c for c in results["candidates"] if c["name"] == "overfit")
    general = next(t for t in overfit["tiers"] if t["tier"] == "general")
    failing = next(t for t in general["tasks"] if t["verdict"] == "FAIL")
    stopped = next(t for t in general["tasks"] if t is not failing)
    stopped.update(verdict="STOPPED", delta=-0.59, ci_low=None, ci_high=None, p_value=None,
                   flags=["stopped_candidate_failed"])
    general["worst_task"] = failing["task"]
    md = render_summary(results)
    row = next(r for r in table_rows(md, "| candidate | tier | deciding task | delta | verdict |")
               if r[0] == "overfit" and r[1] == "general")
    assert row[2] == md_escape(failing["task"])
    listed = next(r for r in table_rows(md, "| candidate | tier | task | delta | interval | policy | verdict | advice |")
                  if r[2] == md_escape(stopped["task"]))
    assert listed[4] == "not judged" and "STOPPED" in listed[6]
