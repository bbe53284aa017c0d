"""`gate report`: re-render the outputs from a results.json, nothing else.

Useful after changing the report templates, or to get report.html for a
results.json downloaded from a CI artifact; no model is served and no number
is recomputed.
"""

from __future__ import annotations

from pathlib import Path

import click

from gate.atomic import atomic_write_text
from gate.cli.common import handle_errors
from gate.errors import InfraError
from gate.report import render_html, render_junit, render_summary
from gate.report.github import publish
from gate.report.results import load_results


@click.command("report")
@click.argument("results_json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the HTML report [default: report.html next to RESULTS_JSON].")
@click.option("--junit", "junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write JUnit XML here.")
@click.option("--summary", "summary", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the Markdown summary here.")
@click.option("--github/--no-github", default=False,
              help="Append the summary to $GITHUB_STEP_SUMMARY and print annotations.")
@handle_errors
def report_cmd(results_json: Path, out: Path | None, junit: Path | None, summary: Path | None,
           github: bool) -> None:
    """Render report.html (and optionally junit.xml, summary.md) from RESULTS_JSON."""
    results = load_results(results_json)
    targets = {out or results_json.parent / "report.html": render_html(results)}
    if junit:
        targets[junit] = render_junit(results)
    summary_md = render_summary(results)
    if summary:
        targets[summary] = summary_md
    for path, text in targets.items():
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise InfraError(f"cannot write: {exc.strerror}", file=str(path),
                             fix="choose a writable path") from None
        click.echo(f"wrote {path}")
    if github:
        publish(results, summary_md)
