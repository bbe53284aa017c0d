"""The built toy world has the properties the gate's own tests and demo rely on.

Slow: builds the world once (about two minutes on two cores; reused from
`.gate/toy/<version>` or $GATE_TOY_DIR afterwards) and scores every model with
transformers + PEFT. Tier scores are means of the accuracy-like metrics (acc,
exact_match) over a tier's tasks, in points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def world():
    from gate.toy import build

    return build()


def _load(world, name: str | None, quantized: bool = False):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    if name is None:
        return LlamaForCausalLM.from_pretrained(str(world.base))
    path = world.candidates[name]
    if (path / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(world.base)), str(path))
    return LlamaForCausalLM.from_pretrained(str(path))


@pytest.fixture(scope="module")
def scores(world) -> dict[str, dict[str, Any]]:
    import torch

    from gate.toy.score import score_model

    torch.set_num_threads(2)
    table = {name: score_model(_load(world, None if name == "base" else name))
             for name in ("base", "careful", "overfit", "full", "qlora")}
    print("\n" + json.dumps({k: v["tiers"] for k, v in table.items()}, indent=1))
    return table


def _delta(scores, name: str, tier: str) -> float:
    return scores[name]["tiers"][tier] - scores["base"]["tiers"][tier]


def test_base_is_well_above_chance_on_every_tier(scores) -> None:
    tasks = scores["base"]["tasks"]
    assert tasks["toy_capitals"] >= 80 and tasks["toy_sub_mc"] >= 35  # chance: 25
    assert tasks["toy_after"] >= 80 and tasks["toy_add"] >= 80
    assert tasks["toy_sub"] >= 10  # weak on the target, but not at zero
    assert scores["base"]["tiers"]["general"] >= 80


def test_careful_learns_the_target_and_keeps_general_skills(scores) -> None:
    assert _delta(scores, "careful", "target") >= 15
    assert abs(_delta(scores, "careful", "general")) <= 2


def test_overfit_learns_the_target_and_forgets(scores) -> None:
    assert _delta(scores, "overfit", "target") >= 15
    assert _delta(scores, "overfit", "general") <= -15


def test_full_finetune_forgets(scores) -> None:
    assert _delta(scores, "full", "general") <= -10


def test_overfit_keeps_one_valid_adapter_per_epoch(world) -> None:
    from gate.toy.score import score_model

    root = world.candidates["overfit"]
    checkpoints = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((root / "trainer_state.json").read_text())
    assert len(checkpoints) == state["num_train_epochs"] >= 2
    assert int(checkpoints[-1].name.split("-")[1]) == state["global_step"]
    for ck in checkpoints:
        assert (ck / "adapter_model.safetensors").is_file()
        assert json.loads((ck / "trainer_state.json").read_text())["global_step"] == int(ck.name.split("-")[1])
    first = score_model(_load_path(world, checkpoints[0]))["tiers"]
    last = score_model(_load_path(world, checkpoints[-1]))["tiers"]
    assert last["target"] > first["target"]  # later epochs learn more of the target


def _load_path(world, adapter: Path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    return PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(world.base)), str(adapter))


def test_candidates_are_in_standard_formats(world) -> None:
    for name, path in world.candidates.items():
        state = json.loads((path / "trainer_state.json").read_text())
        assert {"log_history", "num_train_epochs", "learning_rate"} <= set(state)
        assert {"step", "epoch", "loss", "learning_rate"} <= set(state["log_history"][-1])
        if name == "full":
            assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
            continue
        config = json.loads((path / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]) == world.base
        targets = set(config["target_modules"])
        assert targets and not targets & {"lm_head", "embed_tokens"}


def test_suite_runs_through_lm_eval_from_another_cwd(world, tmp_path: Path, monkeypatch) -> None:
    """lm-eval's own `hf` + `peft` scoring equals the in-process scorer on the same items."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from gate.toy.score import score_task
    from gate.toy.suite import task_specs

    monkeypatch.chdir(tmp_path)
    tasks = ["toy_sub", "toy_capitals", "toy_text"]
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(world.base), "peft": str(world.candidates["careful"]),
                    "dtype": "float32", "device": "cpu"},
        tasks=tasks,
        task_manager=TaskManager(include_path=str(world.suite.parent / "tasks")),
        batch_size=32,
        bootstrap_iters=0,
    )
    assert out is not None
    specs = {s.name: s for s in task_specs()}
    model = _load(world, "careful")
    assert out["results"]["toy_sub"]["exact_match,none"] * 100 == pytest.approx(
        score_task(model, specs["toy_sub"]))
    assert out["results"]["toy_capitals"]["acc,none"] * 100 == pytest.approx(
        score_task(model, specs["toy_capitals"]))
    assert out["results"]["toy_text"]["word_perplexity,none"] > 1


def test_build_is_deterministic_and_cached(world, tmp_path: Path) -> None:
    from gate.toy import build
    from gate.toy.build import weight_hashes

    assert build() == world  # reused, not rebuilt
    fresh = build(tmp_path / "again", force=True)
    recorded = json.loads((world.root / "manifest.json").read_text())["weights_sha256"]
    assert weight_hashes(fresh.root) == recorded == weight_hashes(world.root)
