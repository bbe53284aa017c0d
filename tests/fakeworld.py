"""Model and adapter folders for fake-engine tests: they pass the gate's path
checks and fingerprinting, and the fake engine loads no weights from them."""

from __future__ import annotations

import json
from pathlib import Path


def fake_model_dir(path: Path, payload: bytes = b"base-weights") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 128}), encoding="utf-8")
    (path / "model.safetensors").write_bytes(payload)
    return path


def fake_adapter_dir(path: Path, payload: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"]}), encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(payload)
    return path
