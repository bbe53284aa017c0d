"""`gate compare` on folders written by the real `lm_eval` CLI (--log_samples) on the toy world.

A team that already runs lm-eval elsewhere gates on its output: base vs the
`overfit` adapter (lm-eval's hf model with peft=) fails on the general tier;
base vs a copy of itself passes with deltas of exactly zero.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gate.cli.main import cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TASKS = "toy_sub,toy_sub_mc,toy_add,toy_capitals,toy_after,toy_text"


def _lm_eval(world, out: Path, peft: Path | None) -> Path:  # type: ignore[no-untyped-def]
    args = f"pretrained={world.base},dtype=float32" + (f",peft={peft}" if peft else "")
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", args,
           "--tasks", TASKS, "--include_path", str(Path(world.suite).parent / "tasks"),
           "--output_path", str(out), "--log_samples", "--batch_size", "16"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):  # type: ignore[no-untyped-def]
    from gate import toy

    world = toy.build()
    tmp = tmp_path_factory.mktemp("lmeval")
    base = _lm_eval(world, tmp / "base", None)
    overfit = _lm_eval(world, tmp / "overfit", world.candidates["overfit"])
    copy = tmp / "copy"
    shutil.copytree(base, copy)
    return world, base, overfit, copy


def _compare(world, base: Path, cand: Path, name: str, out: Path):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["compare", "--base", str(base), "--candidate", f"{name}={cand}",
                                    "--suite", str(world.suite),
                                    "--thresholds", str(REPO / "gate" / "suites" / "toy" / "thresholds.yaml"),
                                    "--out", str(out)])


def test_overfit_fails_on_the_general_tier(folders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world, base, overfit, _ = folders
    res = _compare(world, base, overfit, "overfit", tmp_path / "out")
    assert res.exit_code == 1, res.output
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    tiers = {t["tier"]: t["verdict"] for t in results["candidates"][0]["tiers"]}
    assert tiers["general"] == "FAIL"
    assert (tmp_path / "out" / "report.html").is_file()


def test_base_against_a_copy_of_itself_passes_with_zero_deltas(folders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world, base, _, copy = folders
    th = tmp_path / "th.yaml"
    # The target tier asks for a gain, which a copy cannot show: judge every tier as a no-drop check here.
    th.write_text((REPO / "gate" / "suites" / "toy" / "thresholds.yaml").read_text(encoding="utf-8").replace(
        "required_gain: {absolute: 0.10}\n    inconclusive: fail", "required_gain: {absolute: 0.0}\n    inconclusive: pass"),
        encoding="utf-8")
    res = CliRunner().invoke(cli, ["compare", "--base", str(base), "--candidate", f"same={copy}",
                                   "--suite", str(world.suite), "--thresholds", str(th), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    deltas = [t["delta"] for tier in results["candidates"][0]["tiers"] for t in tier["tasks"]]
    assert len(deltas) == 6 and all(d == 0.0 for d in deltas)
    assert results["candidates"][0]["verdict"] == "PASS"


def test_unpaired_items_are_an_input_error(folders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world, base, _, copy = folders
    broken = tmp_path / "broken"
    shutil.copytree(copy, broken)
    sample = next(broken.rglob("samples_toy_capitals_*.jsonl"))
    lines = sample.read_text(encoding="utf-8").splitlines()
    sample.write_text("\n".join(lines[:-3]) + "\n", encoding="utf-8")  # three items missing
    # lm-eval's own aggregate no longer matches the samples left: the gate refuses either way.
    res = _compare(world, base, broken, "broken", tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out" / "results.json").exists()
