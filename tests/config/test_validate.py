"""validate(): every problem `gate run` would stop on, in one pass, before serving.

`gate validate` and `gate run` call the same function, so both report the
same problems, all at once, exit 2, and `gate run` writes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import fake_gate_config

from gate.cli.main import cli

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tests" / "fixtures" / "fakesuite"


def _five_problems(tmp: Path) -> Path:
    """A config with five different problems, in four different places."""
    shutil.copytree(SUITE, tmp / "suite")
    suite = yaml.safe_load((tmp / "suite" / "suite.yaml").read_text(encoding="utf-8"))
    suite["tiers"]["related"].append({"task": "arc_easyy"})                      # 1 unknown task
    (tmp / "suite" / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    (tmp / "adapter").mkdir()                                                      # 2 no adapter_config.json
    (tmp / "a-file").write_text("not a folder", encoding="utf-8")
    (tmp / "gate.yaml").write_text(yaml.safe_dump({
        "base": {"path": "./missing-model-dir"},                                   # 3 base folder missing
        "candidates": [{"name": "tuned", "adapter": "adapter"}, {"name": "full", "model": "nowhere"}],  # 4
        "suite": "suite/suite.yaml", "thresholds": str(REPO / "thresholds.yaml"),
        "engine": {"kind": "fake"}, "out": "a-file/out",                           # 5 output cannot be written
        "baseline": {"store": "store"}, "cache_dir": "cache",
    }), encoding="utf-8")
    return tmp / "gate.yaml"


def _good_world(tmp: Path, base: str = "base") -> Path:
    """A config with nothing wrong (the fake engine; `base` a folder, or a hub id)."""
    return fake_gate_config(tmp, base=base)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_five_problems_reported_at_once(tmp_path: Path, command: str) -> None:
    cfg = _five_problems(tmp_path)
    res = CliRunner().invoke(cli, [command, "--config", str(cfg)])
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out
    assert "5 problems:" in out
    assert "base.path: base model directory not found" in out
    assert "candidates.0.adapter: no adapter_config.json" in out
    assert "candidates.1.model: directory not found" in out
    assert "unknown lm-eval task 'arc_easyy'" in out
    assert "out: output folder cannot be written" in out
    assert not (tmp_path / "store").exists()


def test_a_task_whose_data_is_missing_is_found_by_validate(tmp_path: Path) -> None:
    """Planning is part of validation: a task that cannot be built is a problem
    of `gate validate`, not a surprise after the server started."""
    cfg = _good_world(tmp_path)
    next((tmp_path / "suite").rglob("*.jsonl")).unlink()
    res = CliRunner().invoke(cli, ["validate", "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "data file not found" in res.output or "cannot be loaded" in res.output


def test_ok_line_counts_planned_items(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", "--config", str(_good_world(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "ok: suite" in res.output and " items)" in res.output


def _hub_cache(root: Path, repo_id: str) -> str:
    """The layout huggingface_hub's cache leaves: models--org--name/snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / ("models--" + repo_id.replace("/", "--"))
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit, encoding="utf-8")
    return commit


@pytest.mark.parametrize("hub_id", ["gpt2", "HuggingFaceTB/SmolLM2-135M"])
def test_hub_ids_with_and_without_an_org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_id: str) -> None:
    """`base: gpt2` is a hub id, not a missing folder; offline, it must be in the hub cache."""
    import huggingface_hub.constants

    from gate.config import load_setup
    from gate.config.validate import find_problems

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = _good_world(tmp_path, base=hub_id)
    setup = load_setup(cfg)
    assert setup.config.base.path == hub_id  # not turned into a path under the config's folder
    problems, _ = find_problems(setup)
    assert [p.key for p in problems] == ["base.path"]
    assert "not in the local hub cache" in problems[0].message

    _hub_cache(tmp_path / "hub", hub_id)
    setup = load_setup(cfg)
    problems, _ = find_problems(setup)
    assert problems == []
    assert any("without a revision" in n for n in setup.notes)
