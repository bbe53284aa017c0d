"""`gate report RESULTS_JSON`: re-renders from results.json alone."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gate.cli.report import report_cmd

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def test_report_writes_html_next_to_results(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text((FIXTURES / "passing.json").read_text())
    outcome = CliRunner().invoke(report_cmd, [str(results), "--junit", str(tmp_path / "j.xml"),
                                              "--summary", str(tmp_path / "s.md")])
    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "j.xml").exists() and (tmp_path / "s.md").exists()
    assert f"wrote {tmp_path / 'report.html'}" in outcome.output


def test_report_out_option(tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    outcome = CliRunner().invoke(report_cmd, [str(FIXTURES / "passing.json"), "--out", str(out)])
    assert outcome.exit_code == 0 and out.exists()


def test_invalid_results_exit_2_naming_file_and_path(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "passing.json").read_text())
    data["release"]["verdict"] = "SHIP IT"
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(data))
    outcome = CliRunner().invoke(report_cmd, [str(bad)])
    assert outcome.exit_code == 2
    assert f"{bad}: $.release.verdict: 'SHIP IT' is not one of" in outcome.output
    assert not (tmp_path / "report.html").exists()
