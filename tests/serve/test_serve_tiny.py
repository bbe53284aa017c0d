"""The tiny random Llama used by the engine tests, and helpers other serve tests import.

Why a test module: the helpers live beside the tests that use them (no shared
conftest), and the checks here pin what those tests rely on.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "tiny_model.py"
TASK = "gate_tiny_mc"


def tiny_world(root: Path) -> dict[str, Path]:
    """Build (once per root) the tiny base and its adapters; see scripts/tiny_model.py."""
    spec = importlib.util.spec_from_file_location("tiny_model", _SCRIPT)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_all(root)


def write_tiny_task(root: Path, n: int = 12) -> Path:
    """An offline multiple-choice lm-eval task; returns the include path."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        {"question": f"{i} plus {i} is", "choices": [str(2 * i), str(2 * i + 1), "the fox"],
         "gold": i % 3}
        for i in range(n)
    ]
    data = root / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n"
        "metadata:\n  version: 1\n"
    )
    return root


@pytest.mark.heavy
def test_tiny_world_builds_base_and_adapters(tmp_path_factory):
    paths = tiny_world(tmp_path_factory.getbasetemp() / "tiny")
    assert (paths["base"] / "model.safetensors").is_file()
    for name in ("lora", "lora_zero", "lora_head"):
        assert (paths[name] / "adapter_model.safetensors").is_file()


@pytest.mark.heavy
def test_tiny_tokenizer_prepends_bos_like_llama(tmp_path_factory):
    from gate.serve.completions import bos_by_default

    paths = tiny_world(tmp_path_factory.getbasetemp() / "tiny")
    assert bos_by_default(str(paths["base"])) is True
