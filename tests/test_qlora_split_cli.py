"""The QLoRA split through `gate run` on the toy world (issue 14).

The toy `qlora` adapter was trained on the base loaded in 4 bits (nf4,
bitsandbytes on CPU). Marked `quantization: bitsandbytes`, it is also scored
as trained, on a 4-bit base, beside the 4-bit base itself, all through the hf
engine (transformers + PEFT + bitsandbytes): results.json, report.html and
summary.md show its quantization and tuning effects side by side, each with
its interval. The run here uses the hf engine, so the run's own base records
are the split's 16-bit base (tests/test_run_vllm.py covers a vLLM run, where
the split scores its own 16-bit base through hf).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gate.cli.demo import demo_config
from gate.cli.main import cli

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def split_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    from gate import toy

    work = tmp_path_factory.mktemp("qlora-split")
    cfg = demo_config(toy.build(), work / "out", "hf")
    cfg["candidates"] = [c for c in cfg["candidates"] if c["name"] == "qlora"]
    assert cfg["candidates"][0]["quantization"] == "bitsandbytes"  # the demo marks the toy's QLoRA adapter
    cfg.update(baseline={"store": str(work / "store")}, cache_dir=str(work / "cache"))
    cfg.pop("wandb", None)
    config = work / "gate.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    done = CliRunner().invoke(cli, ["run", "--config", str(config)], catch_exceptions=False)
    assert done.exit_code in (0, 1), done.output
    results = json.loads((work / "out" / "results.json").read_text(encoding="utf-8"))
    return config, done.output, results


def test_the_qlora_candidate_shows_its_quantization_and_tuning_effects(split_run) -> None:  # type: ignore[no-untyped-def]
    config, output, results = split_run
    cand = results["candidates"][0]
    split = cand["qlora_split"]
    assert split["engine"].startswith("hf-transformers-")
    tasks = {t["task"]: t for t in split["tasks"]}
    verdict_tasks = {t["task"]: t for tier in cand["tiers"] for t in tier["tasks"]}
    assert set(tasks) == set(verdict_tasks)
    compared = 0
    for name, row in tasks.items():
        q, tune, total = row["quantization"], row["tuning"], row["as_trained"]
        # one chain of models: 16-bit base -> 4-bit base -> adapter on it
        assert q["candidate_score"] == pytest.approx(tune["base_score"])
        assert total["base_score"] == pytest.approx(q["base_score"])
        assert total["candidate_score"] == pytest.approx(tune["candidate_score"])
        # the hf run's own base is the split's 16-bit base: the same score over
        # the same items (a task the rounds stopped early is judged on its
        # first n_used items, the split on all of them)
        if verdict_tasks[name]["n_used"] == total["n"]:
            assert total["base_score"] == pytest.approx(verdict_tasks[name]["base_score"])
            compared += 1
        for effect in (q, tune, total):
            assert effect["ci_low"] <= effect["delta"] <= effect["ci_high"], (name, effect)
        if row["aggregation"] == "mean":
            assert total["delta"] == pytest.approx(q["delta"] + tune["delta"], abs=1e-9)
    assert compared >= len(tasks) // 2  # most tasks run to their last item
    # the target skill comes from the tuning, not from quantizing the base
    assert tasks["toy_sub"]["tuning"]["ci_low"] > 0
    assert split["larger"] in ("quantization", "tuning", None)
    assert "QLoRA split: serving base#nf4, qlora#nf4" in output
    assert "serving base#16bit" not in output  # an hf run's base is reused, not scored twice
    assert "is a QLoRA adapter" in output  # the terminal's sentence
    out = config.parent / "out"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "QLoRA split: quantization and tuning" in html and "base 4-bit" in html
    assert "### QLoRA split: qlora" in (out / "summary.md").read_text(encoding="utf-8")


def test_a_rerun_scores_nothing_for_the_split(split_run) -> None:  # type: ignore[no-untyped-def]
    config, _, first = split_run
    done = CliRunner().invoke(cli, ["run", "--config", str(config)], catch_exceptions=False)
    assert "every result is cached: nothing to serve" in done.output
    assert "QLoRA split: evaluating" not in done.output
    again = json.loads((config.parent / "out" / "results.json").read_text(encoding="utf-8"))
    assert again["candidates"][0]["qlora_split"] == first["candidates"][0]["qlora_split"]


@pytest.mark.parametrize(("change", "words"), [
    (lambda cfg: cfg["candidates"].append({"name": "fullq", "model": cfg["base"]["path"],
                                           "quantization": "bitsandbytes"}),
     "a full fine-tune has no base to split from"),
    (lambda cfg: cfg["base"].update(quantization="bitsandbytes"), "remove one of the two"),
])
def test_a_qlora_mark_that_cannot_be_split_is_exit_2(split_run, tmp_path: Path, change, words) -> None:  # type: ignore[no-untyped-def]
    config, _, _ = split_run
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    change(cfg)
    cfg["out"] = str(tmp_path / "out")
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    done = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "gate.yaml")])
    assert done.exit_code == 2, done.output
    assert words in done.output and "gate.yaml" in done.output
    assert not (tmp_path / "out" / "results.json").exists()
