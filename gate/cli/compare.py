"""`gate compare`: gate lm-eval `--log_samples` output folders, no serving."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from gate.cli.common import handle_errors
from gate.cli.summary import print_summary


def _named(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if sep and name and path:
        return name, Path(path)
    p = Path(value)
    return p.resolve().name, p


@click.command("compare")
@click.option("--base", "base_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="lm-eval output folder of the base model (written with --log_samples).")
@click.option("--candidate", "candidates", required=True, multiple=True, metavar="[NAME=]DIR",
              help="lm-eval output folder of a candidate; repeatable.")
@click.option("--suite", type=click.Path(path_type=Path, dir_okay=False),
              help="Suite YAML giving each task's tier and metric (default: every task in the general tier).")
@click.option("--thresholds", default="thresholds.yaml", show_default=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", default="gate-out", show_default=True, type=click.Path(path_type=Path))
@click.option("--release", multiple=True, metavar="NAME", help="Candidate(s) whose verdict decides the release.")
@handle_errors
def compare_cmd(base_dir: Path, candidates: tuple[str, ...], suite: Path | None, thresholds: Path,
                out: Path, release: tuple[str, ...]) -> None:
    """Compare lm-eval output folders of a base and candidates; write the verdict.

    Items that do not pair (missing, or the same doc_id with another doc_hash)
    are an input error (exit 2) that lists them.
    """
    from gate.config import load_suite, load_thresholds
    from gate.pipeline import compare

    th = load_thresholds(thresholds)
    st = load_suite(suite) if suite else None
    result = compare(base_dir, [_named(c) for c in candidates], th, out=out, suite=st,
                     suite_file=str(suite) if suite else None, release=release)
    print_summary(result.results, Console())
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")
    sys.exit(result.exit_code)
