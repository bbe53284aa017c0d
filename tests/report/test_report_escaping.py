"""Hostile text in model outputs, prompts, task names and reasons stays text
in every output: HTML (parsed with the standard library's html.parser),
JUnit XML (parsed with junitparser), Markdown and GitHub workflow commands."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from gate.report import render_html, render_junit, render_summary
from gate.report.github import annotation_lines, publish

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
TEXTAREA = "</textarea>"
PLANTED = (SCRIPT, IMG, TEXTAREA)
HOSTILE = SCRIPT + IMG + TEXTAREA


def hostile_results() -> dict[str, Any]:
    """The main fixture with the planted strings wherever foreign text goes."""
    results = json.loads((FIXTURES / "three_candidates.json").read_text(encoding="utf-8"))
    results["release"]["reason"] = "release " + HOSTILE
    overfit = results["candidates"][1]
    overfit["reason"] = "reason " + HOSTILE + " \x00\x1b[31m"
    task = overfit["tiers"][1]["tasks"][0]
    task["task"] = "task " + HOSTILE
    overfit["tiers"][1]["worst_task"] = task["task"]
    task["advice"] = {"items_needed": 10, "message": "advice " + HOSTILE}
    task["flags"] = ["flag " + HOSTILE]
    item = task["flipped"][0]
    item["prompt"] = "prompt " + HOSTILE + "\x00\x1b[31m"
    item["target"] = "target " + HOSTILE
    item["base_response"] = "base " + HOSTILE
    item["candidate_response"] = "candidate " + HOSTILE + "\ud800"
    results["probes"][0]["message"] = "probe " + HOSTILE
    return results


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_keeps_hostile_text_as_text() -> None:
    parser = Collector()
    parser.feed(render_html(hostile_results()))
    parser.close()
    assert "script" not in parser.tags
    assert "img" not in parser.tags
    assert "textarea" not in parser.tags
    text = "".join(parser.text)
    for where in ("release", "reason", "task", "advice", "flag", "prompt", "target",
                  "base", "candidate", "probe"):
        assert f"{where} {HOSTILE}" in text, where


def test_junit_parses_and_keeps_hostile_text() -> None:
    xml = JUnitXml.fromstring(render_junit(hostile_results()).encode("utf-8"))
    cases = {(case.classname, case.name): case for suite in xml for case in suite}
    case = cases[("gate.overfit.related", "task " + HOSTILE)]
    failure = case.result[0]
    assert failure.type == "FAIL"
    assert "advice " + HOSTILE in failure.text
    assert "prompt " not in failure.message
    assert HOSTILE in case.system_out
    assert "\x00" not in case.system_out and "\ufffd" in case.system_out


def test_markdown_escapes_tables_and_html() -> None:
    md = render_summary(hostile_results())
    assert "<script>" not in md and "<img" not in md and "</textarea>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    for line in md.splitlines():
        if line.startswith("| overfit | related | task "):
            # the cell text's own `|` are escaped: the row keeps its columns
            assert line.replace("\\|", "").count("|") in (6, 9)


@pytest.mark.parametrize("planted", PLANTED)
def test_annotations_cannot_forge_workflow_commands(planted: str) -> None:
    results = hostile_results()
    results["candidates"][1]["tiers"][1]["tasks"][0]["task"] = f"a::warning::b\n::error::{planted}%,:"
    lines = annotation_lines(results)
    assert all(line.startswith(("::error title=", "::warning title=")) for line in lines)
    forged = next(line for line in lines if "a%3A%3Awarning" in line)
    assert "\n" not in forged and "%0A%3A%3Aerror%3A%3A" in forged and "%25%2C%3A" in forged


def test_publish_appends_summary_and_prints_annotations(tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    out = io.StringIO()
    results = hostile_results()
    md = render_summary(results)
    publish(results, md, environ={"GITHUB_STEP_SUMMARY": str(summary),
                                  "GITHUB_ACTIONS": "true"}, stream=out)
    assert summary.read_text() == "earlier step\n" + md
    printed = out.getvalue().splitlines()
    assert len([p for p in printed if p.startswith("::error ")]) == 4
    assert len([p for p in printed if p.startswith("::warning ")]) == 3


def test_publish_outside_actions_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    publish(hostile_results(), "x", environ={}, stream=out)
    assert out.getvalue() == ""
