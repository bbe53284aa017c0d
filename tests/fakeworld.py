"""Model and adapter folders for fake-engine tests: they pass the gate's path
checks and fingerprinting, and the fake engine loads no weights from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gate.serve.fake import FakeSkill


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


#: the fake suite's tasks as the fake base model and two fine-tunes answer them:
#: one learns the target and keeps the rest, one learns it and forgets the general task
BASE = FakeSkill(accuracy={"fk_target": 0.40, "fk_related": 0.6, "fk_general": 0.8})
GOOD = FakeSkill(accuracy={"fk_target": 0.90, "fk_related": 0.6, "fk_general": 0.8})
FORGETFUL = FakeSkill(accuracy={"fk_target": 0.90, "fk_related": 0.6, "fk_general": 0.3})


def fake_gate_config(root: Path, *, base: str = "base", suite: Path | None = None,
                     adapters: Sequence[str] = ("good",), **config: Any) -> Path:
    """A runnable gate.yaml for the fake engine in `root`: the fake suite, a base
    (a fake model folder, or `base` as a hub id) and an adapter folder per name in
    `adapters` (its weights: the name), each a candidate; `config` replaces
    top-level keys (`candidates`, `thresholds`, `wandb`, ...). Calling it again
    in the same root rewrites gate.yaml and keeps the folders already made."""
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    if not (root / "suite").exists():
        shutil.copytree(suite or repo / "tests" / "fixtures" / "fakesuite", root / "suite")
    if base == "base" and not (root / "base").exists():
        fake_model_dir(root / "base", b"base-weights")
    for name in adapters:
        if not (root / name).exists():
            fake_adapter_dir(root / name, name.encode())
    (root / "gate.yaml").write_text(yaml.safe_dump({
        "base": {"path": base}, "candidates": [{"name": name, "adapter": name} for name in adapters],
        "suite": "suite/suite.yaml", "thresholds": str(repo / "thresholds.yaml"), "engine": {"kind": "fake"},
        "baseline": {"store": "store"}, "cache_dir": "cache", "out": "out", **config,
    }), encoding="utf-8")
    return root / "gate.yaml"
