"""Sweep input (gate.config.sweep): a training run's folder laid out as
transformers' Trainer leaves it, turned into one candidate per checkpoint;
bad folders stop `gate validate` / `gate run` with exit 2 naming the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import fake_adapter_dir, fake_gate_config, fake_model_dir

from gate.cli.main import cli
from gate.config.load import load_setup
from gate.config.sweep import find_checkpoints
from gate.errors import ConfigError


def trainer_run(root: Path, steps: list[int], *, per_epoch: int = 10, final: bytes | None = None,
                state: bool = True) -> Path:
    """Trainer's output_dir: checkpoint-<step>/ (adapter, trainer_state.json and the
    optimizer's pickles a real checkpoint holds), the final adapter in the folder."""
    for step in steps:
        ckpt = fake_adapter_dir(root / f"checkpoint-{step}", f"weights-{step}".encode())
        for pickle in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (ckpt / pickle).write_bytes(b"not loaded")
        if state:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / per_epoch}))
    if final is not None:
        (root / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"]}))
        (root / "adapter_model.safetensors").write_bytes(final)
        if state and steps:
            (root / "trainer_state.json").write_text(json.dumps({"global_step": max(steps), "epoch": 3.0}))
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_every_checkpoint_becomes_a_candidate_in_step_order(tmp_path: Path) -> None:
    run = trainer_run(tmp_path / "run", [100, 20, 3], final=b"weights-100")
    sweep = find_checkpoints("lora", run)
    assert [c.candidate for c in sweep.checkpoints] == ["lora@3", "lora@20", "lora@100"]
    assert [c.epoch for c in sweep.checkpoints] == [0.3, 2.0, 10.0]
    assert sweep.kind == "lora"
    # the final adapter is checkpoint-100 saved again: listed once


def test_a_final_model_no_checkpoint_holds_is_gated_too(tmp_path: Path) -> None:
    run = trainer_run(tmp_path / "run", [10, 20], final=b"merged-later", state=False)
    sweep = find_checkpoints("r", run)
    assert [(c.candidate, c.label, c.step, c.epoch) for c in sweep.checkpoints] == [
        ("r@10", "checkpoint-10", 10, None), ("r@20", "checkpoint-20", 20, None), ("r@final", "final", None, None)]


def test_thinning_keeps_the_first_every_nth_and_the_last(tmp_path: Path) -> None:
    run = trainer_run(tmp_path / "run", [10, 20, 30, 40, 50, 60])
    assert [c.step for c in find_checkpoints("r", run, every=2).checkpoints] == [10, 30, 50, 60]
    assert [c.step for c in find_checkpoints("r", run, steps=[60, 20]).checkpoints] == [20, 60]
    with pytest.raises(ConfigError) as err:
        find_checkpoints("r", run, steps=[25])
    assert "no checkpoint at step 25; the run has steps 10, 20, 30, 40, 50, 60" in err.value.render()


def test_the_run_config_and_the_flag_expand_a_sweep(tmp_path: Path) -> None:
    config = fake_gate_config(tmp_path)
    trainer_run(tmp_path / "run", [10, 20])
    data = yaml.safe_load(config.read_text())
    data["candidates"].append({"name": "run", "sweep": "run", "every": 1})
    config.write_text(yaml.safe_dump(data))
    setup = load_setup(config)
    assert [c.name for c in setup.config.candidates] == ["good", "run@10", "run@20"]
    assert [c.adapter for c in setup.config.candidates][1:] == [str(tmp_path / "run" / "checkpoint-10"),
                                                                 str(tmp_path / "run" / "checkpoint-20")]
    assert [s.name for s in setup.sweeps] == ["run"]
    res = CliRunner().invoke(cli, ["validate", "--config", str(config), "--sweep", f"only={tmp_path / 'run'}"])
    assert res.exit_code == 0, res.output


def _bad(root: Path, case: str) -> Path:
    run = root / "run"
    if case == "empty":
        run.mkdir()
    elif case == "no_adapter_files":
        trainer_run(run, [10, 20])
        shutil.rmtree(run / "checkpoint-20")
        (run / "checkpoint-20").mkdir()
        (run / "checkpoint-20" / "optimizer.pt").write_bytes(b"x")
    elif case == "no_weights":
        trainer_run(run, [10, 20])
        (run / "checkpoint-20" / "adapter_model.safetensors").unlink()
    elif case == "same_step":
        trainer_run(run, [10, 20])
        shutil.copytree(run / "checkpoint-20", run / "checkpoint-020")
    elif case == "mixed":
        trainer_run(run, [10])
        fake_model_dir(run / "checkpoint-20")
    elif case == "missing":
        pass
    return run


@pytest.mark.parametrize(("case", "says", "fix"), [
    ("empty", "no checkpoint-<step>/ folders (and no final model)", "save_strategy"),
    ("no_adapter_files", "holds neither an adapter (adapter_config.json) nor a model", "remove the incomplete"),
    ("no_weights", "has no adapter_model.safetensors", "copy the checkpoint's weights again"),
    ("same_step", "checkpoint-020 and checkpoint-20 are both at step 20", "keep one folder per step"),
    ("mixed", "mixes LoRA checkpoints (checkpoint-10) with full-model ones (checkpoint-20)", "one training run"),
    ("missing", "folder not found", "training run's output folder"),
])
def test_bad_sweep_folders_exit_2_naming_the_folder_and_the_fix(tmp_path: Path, case: str, says: str,
                                                                fix: str) -> None:
    config = fake_gate_config(tmp_path)
    run = _bad(tmp_path, case)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--config", str(config), "--sweep", f"run={run}", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "sweep run:" in res.output and says in res.output and fix in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_thinning_without_a_sweep_is_a_config_error(tmp_path: Path) -> None:
    config = fake_gate_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["candidates"][0]["every"] = 2
    config.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(cli, ["validate", "--config", str(config)])
    assert res.exit_code == 2 and "`every` and `steps` thin a sweep" in res.output
