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


def fake_gate_config(root: Path, *, base: str = "base", suite: Path | None = None) -> Path:
    """A runnable gate.yaml for the fake engine in `root`: the fake suite, a base
    (a fake model folder, or `base` as a hub id) and one adapter `good`."""
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(suite or repo / "tests" / "fixtures" / "fakesuite", root / "suite")
    if base == "base":
        fake_model_dir(root / "base", b"base-weights")
    fake_adapter_dir(root / "good", b"good")
    (root / "gate.yaml").write_text(yaml.safe_dump({
        "base": {"path": base}, "candidates": [{"name": "good", "adapter": "good"}],
        "suite": "suite/suite.yaml", "thresholds": str(repo / "thresholds.yaml"), "engine": {"kind": "fake"},
        "baseline": {"store": "store"}, "cache_dir": "cache", "out": "out",
    }), encoding="utf-8")
    return root / "gate.yaml"
