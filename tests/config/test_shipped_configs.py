"""Every YAML the repo ships validates, and `gate validate` accepts the shipped suites."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gate.cli.main import cli
from gate.config.yaml_io import load_suite, load_thresholds

REPO = Path(__file__).resolve().parents[2]
SUITES = sorted(p for p in (REPO / "gate" / "suites").rglob("*.yaml") if "tasks" not in p.relative_to(REPO / "gate" / "suites").parts
                and p.name not in ("gate.yaml", "thresholds.yaml"))
THRESHOLDS = [REPO / "thresholds.yaml", *sorted((REPO / "gate" / "suites").rglob("thresholds.yaml"))]


def test_there_are_shipped_suites() -> None:
    names = {p.relative_to(REPO / "gate" / "suites").as_posix() for p in SUITES}
    assert {"default.yaml", "toy/toy.yaml", "real/real.yaml"} <= names


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_suite_validates(path: Path) -> None:
    suite = load_suite(path)
    assert suite.tiers.target and suite.tiers.related and suite.tiers.general
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Runs with: gate "), "each suite opens with the command that runs it"


@pytest.mark.parametrize("path", THRESHOLDS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_thresholds_validate(path: Path) -> None:
    th = load_thresholds(path)
    assert th.policy_for("target", "x").kind == "gain"
    assert path.read_text(encoding="utf-8").startswith("# "), "each policy opens with the command that uses it"


def test_validate_cli_on_shipped_files() -> None:
    files = [str(p) for p in SUITES] + [str(p) for p in THRESHOLDS]
    args = ["validate"] + [a for f in files for a in ("--file", f)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert f"ok: {len(files)} file(s) valid" in res.output


@pytest.mark.heavy
def test_default_suite_tasks_resolve_in_lm_eval() -> None:
    """The real-world suite names real lm-eval tasks (looked up, not downloaded)."""
    from gate.config.tasks import resolve_tasks

    suite_file = REPO / "gate" / "suites" / "default.yaml"
    tasks, problems = resolve_tasks(load_suite(suite_file), suite_file)
    assert problems == []
    names = {t.name for t in tasks}
    assert {"mmlu", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "scrolls_govreport"} <= names
    assert next(t for t in tasks if t.name == "mmlu").is_group
