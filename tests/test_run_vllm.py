"""`gate run` end to end on the toy world through a real vLLM server (CPU build).

One run gates all four toy candidates; the other tests read its results or
rerun from its stores. This is the tool's main job, on the real engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from gate.cli.demo import demo_config
from gate.cli.main import cli

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_world():  # type: ignore[no-untyped-def]
    from gate import toy

    return toy.build()


@pytest.fixture(scope="module")
def first_run(toy_world, tmp_path_factory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("vllm-run")
    cfg = demo_config(toy_world, work / "out", "vllm", REPO)
    cfg["baseline"]["store"] = str(work / "store")
    cfg["cache_dir"] = str(work / "cache")
    config = work / "gate.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = CliRunner().invoke(cli, ["run", "--config", str(config)])
    results = json.loads((work / "out" / "results.json").read_text(encoding="utf-8"))
    return config, res, results


def _verdicts(results: dict) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in results["candidates"]}


def _tier(results: dict, cand: str, tier: str) -> dict:
    c = next(c for c in results["candidates"] if c["name"] == cand)
    return next(t for t in c["tiers"] if t["tier"] == tier)


def test_verdicts_on_the_toy_world(first_run) -> None:  # type: ignore[no-untyped-def]
    _, res, results = first_run
    assert res.exit_code == 1, res.output  # overfit and full fail: the release of all fails
    v = _verdicts(results)
    assert v["careful"] == "PASS"
    assert v["overfit"] == "FAIL" and _tier(results, "overfit", "general")["verdict"] == "FAIL"
    assert v["full"] == "FAIL"
    assert "qlora" in v


def test_served_logprobs_match_the_hf_reference(first_run) -> None:  # type: ignore[no-untyped-def]
    _, _, results = first_run
    parity = [p for p in results["probes"] if p["name"] == "engine_parity"]
    assert {p["candidate"] for p in parity} >= {"base", "careful", "overfit", "full"}
    for p in parity:
        assert p["status"] == "ok", p
        assert p["max_abs_diff"] <= 1e-3, p
    applied = {p["candidate"]: p["status"] for p in results["probes"] if p["name"] == "adapter_applied"}
    assert applied["careful"] == "ok" and applied["overfit"] == "ok"


def test_release_exit_codes_and_rerun_serves_nothing(first_run) -> None:  # type: ignore[no-untyped-def]
    config, _, _ = first_run
    res = CliRunner().invoke(cli, ["run", "--config", str(config), "--release", "overfit"])
    assert res.exit_code == 1, res.output
    assert "every result is cached: nothing to serve" in res.output
    res = CliRunner().invoke(cli, ["run", "--config", str(config), "--release", "careful"])
    assert res.exit_code == 0, res.output


def test_zero_lora_b_gives_exactly_zero_deltas(first_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, _, _ = first_run
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    careful = Path(next(c["adapter"] for c in cfg["candidates"] if c["name"] == "careful"))
    zero = tmp_path / "zero"
    shutil.copytree(careful, zero, ignore=shutil.ignore_patterns("checkpoint-*"))
    tensors = load_file(str(zero / "adapter_model.safetensors"))
    save_file({k: (v * 0 if "lora_B" in k else v) for k, v in tensors.items()}, str(zero / "adapter_model.safetensors"))
    th = yaml.safe_load((REPO / "thresholds.yaml").read_text(encoding="utf-8"))
    th["tiers"]["target"] = {"required_gain": {"absolute": 0.0}, "inconclusive": "warn"}
    (tmp_path / "th.yaml").write_text(yaml.safe_dump(th), encoding="utf-8")
    cfg.update(candidates=[{"name": "zero", "adapter": str(zero)}], thresholds=str(tmp_path / "th.yaml"),
               out=str(tmp_path / "out"))
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "gate.yaml")])
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    deltas = [t["delta"] for tier in results["candidates"][0]["tiers"] for t in tier["tasks"]]
    assert deltas and all(d == 0.0 for d in deltas), deltas
    assert results["candidates"][0]["verdict"] == "PASS"
    assert res.exit_code == 0, res.output
    noop = [p for p in results["probes"] if p["name"] == "adapter_applied" and p["candidate"] == "zero"]
    assert noop and noop[0]["status"] == "noop"
