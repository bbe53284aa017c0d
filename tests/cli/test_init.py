"""`gate init`: files to start from that `gate validate` accepts, never overwriting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import fake_adapter_dir, fake_model_dir

from gate.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "fixtures" / "fakesuite" / "tasks"


def _init(folder: Path, *extra: str) -> list[str]:
    tasks = folder / "tasks"
    if not tasks.exists():
        shutil.copytree(TASKS, tasks)
        shutil.copytree(TASKS.parent / "data", folder / "data")
        fake_model_dir(folder / "base", b"w")
        fake_adapter_dir(folder / "tuned", b"a")
    return ["init", "--dir", str(folder), "--yes", "--engine", "fake",
            "--base", str(folder / "base"), "--adapter", f"tuned={folder / 'tuned'}",
            "--target", str(tasks / "fk_target.yaml"), "--related", str(tasks / "fk_related.yaml"),
            "--general", str(tasks / "fk_general.yaml"), *extra]


@pytest.mark.heavy
def test_init_then_validate_in_a_fresh_folder(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, _init(tmp_path))
    assert res.exit_code == 0, res.output
    for name in ("gate.yaml", "suite.yaml", "thresholds.yaml", ".github/workflows/release-gate.yml"):
        assert (tmp_path / name).is_file(), name
    suite = yaml.safe_load((tmp_path / "suite.yaml").read_text(encoding="utf-8"))
    assert [t["task"] for t in suite["tiers"]["general"]] == [str(tmp_path / "tasks" / "fk_general.yaml")]
    checked = CliRunner().invoke(cli, ["validate", "--config", str(tmp_path / "gate.yaml")])
    assert checked.exit_code == 0, checked.output
    assert "ok: suite my-suite (1 target, 1 related, 1 general tasks" in checked.output


def test_shipped_thresholds_template_is_the_default_policy() -> None:
    """The policy `gate init` writes is the repository's thresholds.yaml, comments included."""
    template = REPO / "gate" / "cli" / "templates" / "thresholds.yaml"
    assert template.read_text(encoding="utf-8") == (REPO / "thresholds.yaml").read_text(encoding="utf-8")


def test_init_twice_without_force_changes_nothing(tmp_path: Path) -> None:
    assert CliRunner().invoke(cli, _init(tmp_path)).exit_code == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / "gate.yaml").write_text("# my edits\n" + (tmp_path / "gate.yaml").read_text(), encoding="utf-8")
    edited = (tmp_path / "gate.yaml").read_bytes()
    res = CliRunner().invoke(cli, _init(tmp_path))
    assert res.exit_code == 2
    assert "gate.yaml: already exists (fix: pass --force to overwrite" in res.output
    assert "4 problems:" in res.output  # every file that would be overwritten is named
    assert (tmp_path / "gate.yaml").read_bytes() == edited
    assert {p: p.read_bytes() for p in before if p.name != "gate.yaml"} == \
           {p: b for p, b in before.items() if p.name != "gate.yaml"}
    forced = CliRunner().invoke(cli, [*_init(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (tmp_path / "gate.yaml").read_text(encoding="utf-8").startswith("# my edits")


def test_yes_without_the_answers_names_the_flags(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path), "--yes"])
    assert res.exit_code == 2
    for flag in ("--base", "--adapter", "--target", "--related"):
        assert f"{flag}: {flag} is required with --yes" in res.output
    assert not any(tmp_path.iterdir())


def test_questions_when_interactive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gate.cli.init._interactive", lambda: True)
    answers = "org/base-model\ntuned=./runs/tuned\npubmedqa\nmedmcqa\n"
    res = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path)], input=answers)
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((tmp_path / "gate.yaml").read_text(encoding="utf-8"))
    assert cfg["base"]["path"] == "org/base-model"
    assert cfg["candidates"] == [{"name": "tuned", "adapter": "./runs/tuned"}]
    suite = yaml.safe_load((tmp_path / "suite.yaml").read_text(encoding="utf-8"))
    assert suite["tiers"]["target"] == [{"task": "pubmedqa"}]
    assert [t["task"] for t in suite["tiers"]["general"]] == ["mmlu", "hellaswag", "arc_easy", "arc_challenge",
                                                              "winogrande"]
