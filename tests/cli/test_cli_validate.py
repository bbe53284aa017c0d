"""`gate validate`: all problems at once, exit 2, no traceback; exit 0 when fine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gate.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def _broken(tmp: Path) -> Path:
    (tmp / "suite.yaml").write_text(yaml.safe_dump({
        "name": "s", "tiers": {"target": [{"task": "arc_easyy"}], "related": [{"task": "hellaswag"}],
                               "general": [{"task": "winogrande"}]}}), encoding="utf-8")
    (tmp / "adapter").mkdir()
    cfg = tmp / "gate.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": {"path": "missing-model-dir"},
        "candidates": [{"name": "tuned", "adapter": "adapter"}, {"name": "full", "model": "nowhere"}],
        "suite": "suite.yaml", "thresholds": str(REPO / "thresholds.yaml"),
    }), encoding="utf-8")
    return cfg


@pytest.mark.heavy
def test_broken_config_lists_every_problem(tmp_path: Path) -> None:
    cfg = _broken(tmp_path)
    res = CliRunner().invoke(cli, ["validate", "--config", str(cfg)])
    assert res.exit_code == 2
    out = res.output
    assert "Traceback" not in out
    # planning is part of validation: the real lm-eval tasks whose data is not on this machine are problems too
    assert "6 problems:" in out
    assert "base.path: missing-model-dir is not a local folder, and as a hub id it is not in the local hub cache" in out
    assert "task hellaswag cannot be loaded" in out and "task winogrande cannot be loaded" in out
    assert "candidates.0.adapter: no adapter_config.json" in out
    assert "candidates.1.model: directory not found" in out
    assert "unknown lm-eval task 'arc_easyy' (fix: did you mean arc_easy" in out


def test_flags_alone_without_config(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", "--base", str(tmp_path / "nope"), "--adapter", "bad"])
    assert res.exit_code == 2
    assert "--adapter: expected NAME=PATH, got 'bad'" in res.output


def test_no_config_at_all() -> None:
    res = CliRunner().invoke(cli, ["validate"])
    assert res.exit_code == 2
    assert "no run config given" in res.output


@pytest.mark.heavy
def test_validate_leaves_no_output_folder_behind(tmp_path: Path) -> None:
    from fakeworld import fake_gate_config

    config = fake_gate_config(tmp_path, out="deep/out")
    res = CliRunner().invoke(cli, ["validate", "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "deep").exists()  # checked writable through its nearest parent, not created
    assert not list(tmp_path.glob(".gate-write-test-*"))
