"""The hf reference engine: one base, several adapters, each LM scoring as its own model."""

from __future__ import annotations

import math

import pytest
from lm_eval.api.instance import Instance
from test_serve_tiny import tiny_world

from gate.serve.base import ModelSpec
from gate.serve.hf import HfEngine

REQS = [("The capital of France is", " Paris."), ("Two plus two is", " four."),
        ("after a is b, after b is", " c")]


def _ll(lm) -> list[float]:
    insts = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in REQS]
    return [x[0] for x in lm.loglikelihood(insts, disable_tqdm=True)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp() / "tiny")


@pytest.mark.heavy
def test_each_lm_scores_with_its_own_adapter_in_any_order(tiny, tmp_path):
    base = str(tiny["base"])
    group = [ModelSpec("base", "base", base, base),
             ModelSpec("lora", "lora", str(tiny["lora"]), base),
             ModelSpec("lora_zero", "lora", str(tiny["lora_zero"]), base)]
    engine = HfEngine()
    with engine.serve(group, tmp_path) as lms:
        first_base = _ll(lms["base"])
        lora = _ll(lms["lora"])
        zero = _ll(lms["lora_zero"])
        again_base = _ll(lms["base"])
        again_lora = _ll(lms["lora"])
    assert first_base == again_base and lora == again_lora
    assert zero == pytest.approx(first_base, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(lora, first_base, strict=True)) > 0.1
    assert engine.version().startswith("hf-transformers-")


@pytest.mark.heavy
def test_nf4_base_loads_in_4bit_and_scores_close_to_float32(tiny, tmp_path):
    pytest.importorskip("bitsandbytes")
    base = str(tiny["base"])
    with HfEngine().serve([ModelSpec("base", "base", base, base)], tmp_path) as lms:
        full = _ll(lms["base"])
    q = ModelSpec("base", "base", base, base, quantization="nf4")
    with HfEngine().serve([q], tmp_path) as lms:
        layer = lms["base"].inner.model.model.layers[0].self_attn.q_proj
        assert type(layer).__name__ == "Linear4bit"
        quant = _ll(lms["base"])
    assert all(math.isfinite(x) for x in quant)
    assert max(abs(a - b) for a, b in zip(quant, full, strict=True)) < 2.0
