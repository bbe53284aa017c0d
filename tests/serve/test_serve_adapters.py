"""Adapter validation: every way an adapter can fail to fit is one clear AdapterError."""

from __future__ import annotations

import json
import shutil

import pytest
from test_serve_tiny import tiny_world

from gate.errors import AdapterError
from gate.serve.adapters import (
    max_lora_rank,
    refuse_lm_head_on_loglikelihood,
    round_lora_rank,
    validate_adapter,
)

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp() / "tiny")


@pytest.fixture
def lora_copy(tiny, tmp_path):
    dst = tmp_path / "adapter"
    shutil.copytree(tiny["lora"], dst)
    return dst


def _edit_config(adapter, **changes):
    cfg = adapter / "adapter_config.json"
    data = json.loads(cfg.read_text())
    data.update(changes)
    cfg.write_text(json.dumps(data))


def test_valid_adapter_reports_rank_targets_and_no_lm_head(tiny):
    info = validate_adapter(tiny["lora"], tiny["base"])
    assert info.rank == 8 and info.alpha == 16
    assert "q_proj" in info.target_modules
    assert info.trains_lm_head is False
    assert info.warnings == ()
    assert info.vllm_max_lora_rank == 8


def test_lm_head_adapter_is_detected_and_refused_on_vllm_for_loglikelihood(tiny):
    info = validate_adapter(tiny["lora_head"], tiny["base"])
    assert info.trains_lm_head is True
    for engine in ("vllm", "endpoint"):
        with pytest.raises(AdapterError, match="51594") as err:
            refuse_lm_head_on_loglikelihood(info, engine, uses_loglikelihood=True)
        assert "hf engine" in str(err.value)
    refuse_lm_head_on_loglikelihood(info, "hf", uses_loglikelihood=True)
    refuse_lm_head_on_loglikelihood(info, "vllm", uses_loglikelihood=False)


def test_modules_to_save_lm_head_counts_as_training_lm_head(tiny, lora_copy):
    _edit_config(lora_copy, modules_to_save=["lm_head"])
    assert validate_adapter(lora_copy, tiny["base"]).trains_lm_head is True


def test_missing_config_names_the_file(tiny, lora_copy):
    (lora_copy / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="adapter_config.json is missing") as err:
        validate_adapter(lora_copy, tiny["base"])
    assert str(lora_copy / "adapter_config.json") in str(err.value)


def test_pickle_weights_refused_unless_allowed(tiny, lora_copy):
    import torch
    from safetensors.torch import load_file

    state = load_file(lora_copy / "adapter_model.safetensors")
    (lora_copy / "adapter_model.safetensors").unlink()
    torch.save(state, lora_copy / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        validate_adapter(lora_copy, tiny["base"])
    assert validate_adapter(lora_copy, tiny["base"], allow_pickle=True).rank == 8


def test_missing_weights(tiny, lora_copy):
    (lora_copy / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="weights are missing"):
        validate_adapter(lora_copy, tiny["base"])


def test_truncated_safetensors_detected(tiny, lora_copy):
    weights = lora_copy / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(AdapterError, match="truncated"):
        validate_adapter(lora_copy, tiny["base"])


def test_garbage_safetensors_detected(tiny, lora_copy):
    (lora_copy / "adapter_model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(AdapterError, match="truncated or corrupt"):
        validate_adapter(lora_copy, tiny["base"])


def test_hidden_size_mismatch_is_an_adapter_error(tiny, tmp_path):
    other = tmp_path / "wider_base"
    other.mkdir()
    cfg = json.loads((tiny["base"] / "config.json").read_text())
    cfg.update(hidden_size=256, intermediate_size=512)
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="input size 128") as err:
        validate_adapter(tiny["lora"], other)
    assert "problems" in str(err.value)  # all mismatching tensors reported at once


def test_unknown_target_modules(tiny, lora_copy):
    _edit_config(lora_copy, target_modules=["c_attn"])
    with pytest.raises(AdapterError, match="match no module"):
        validate_adapter(lora_copy, tiny["base"])


def test_rank_above_vllm_maximum(tiny, lora_copy):
    _edit_config(lora_copy, r=1024)
    with pytest.raises(AdapterError, match="above vLLM's maximum 512"):
        validate_adapter(lora_copy, tiny["base"])


def test_base_name_mismatch_is_a_warning(tiny, lora_copy):
    _edit_config(lora_copy, base_model_name_or_path="meta-llama/Llama-3.2-1B")
    info = validate_adapter(lora_copy, tiny["base"])
    assert len(info.warnings) == 1 and "Llama-3.2-1B" in info.warnings[0]


@pytest.mark.parametrize(("rank", "allowed"), [(1, 1), (2, 8), (8, 8), (9, 16), (33, 64),
                                               (300, 320), (321, 512), (512, 512)])
def test_rank_rounds_up_to_vllm_allowed_set(rank, allowed):
    assert round_lora_rank(rank) == allowed


def test_rank_above_512_cannot_round():
    with pytest.raises(AdapterError):
        round_lora_rank(513)


def test_max_lora_rank_over_adapters(tiny):
    infos = [validate_adapter(tiny["lora"], tiny["base"])]
    assert max_lora_rank(infos) == 8


def test_base_shapes_from_safetensors_headers_equal_the_model_class(tiny):
    """Validation reads the base's shapes from its safetensors headers (no torch in
    the gate's process); they must be the shapes transformers' own model has."""
    from pathlib import Path

    from gate.serve.adapters import _base_modules_from_headers, _base_modules_meta

    headers = _base_modules_from_headers(Path(tiny["base"]))
    meta = _base_modules_meta(str(tiny["base"]), False)
    assert headers and all(meta[name] == shape for name, shape in headers.items())
    assert {n for n in meta if n.endswith("q_proj")} <= headers.keys()
