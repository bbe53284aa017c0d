"""Build (or reuse) the toy world: base model, four candidates and the toy suite.

Layout of a built world::

    <root>/
      base/                 LlamaForCausalLM + tokenizer (safetensors, float32)
      candidates/careful/   LoRA adapter
      candidates/overfit/   LoRA adapter + checkpoint-N/ per epoch
      candidates/full/      full model + tokenizer
      candidates/qlora/     LoRA adapter trained on the nf4 base
      suite/toy.yaml        the three-tier suite, tasks/ and data/
      manifest.json         written last: its presence marks a complete build

By default the world lives in the user's cache (`gate.toy.cache`), in a
folder named by a digest of everything that builds it (`world_key()`), so
every checkout on a machine shares one build and a change to the recipes,
the data or torch names a new one. It is built in a sibling temp folder and
renamed into place, so an interrupted build leaves nothing half-written
where a reader would look; a file lock keeps two processes from building the
same world at once; every use checks each file's sha256 (once per process)
and rebuilds a world that fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILDER_VERSION = "toy-v3"
"""Bump when anything that changes the built bytes changes (data, recipes, code)."""

CANDIDATES = ("careful", "overfit", "full", "qlora")
MANIFEST = "manifest.json"
BUILD_THREADS = 2


@dataclass(frozen=True)
class ToyWorld:
    """A complete toy world on disk."""

    root: Path
    base: Path
    """The base model folder (weights + tokenizer)."""
    candidates: dict[str, Path]
    """Candidate name -> adapter folder (LoRA) or model folder (full)."""
    suite: Path
    """The suite file `toy.yaml` (its `tasks/` and `data/` sit beside it)."""


_BUILDER_FILES = ("build.py", "models.py", "train.py", "corpus.py", "tokenizer.py", "suite.py")


def world_key() -> str:
    """Digest of what the built bytes depend on: the builder's version and source,
    the suite it writes, and the libraries whose arithmetic or formats reach the files."""
    from gate.suites import ROOT as SUITES
    from gate.toy.cache import digest, versions

    here = Path(__file__).parent
    return digest(BUILDER_VERSION, versions("torch", "transformers", "peft", "safetensors", "bitsandbytes"),
                  platform.python_version(), *(here / f for f in _BUILDER_FILES), SUITES / "toy")


def default_root() -> Path:
    """`$GATE_TOY_DIR/<BUILDER_VERSION>` if GATE_TOY_DIR is set, else the user's cache:
    `<cache_root>/worlds/toy-<world_key()>` (see gate.toy.cache)."""
    from gate.toy.cache import worlds_root

    parent = os.environ.get("GATE_TOY_DIR")
    if parent:
        return (Path(parent) / BUILDER_VERSION).absolute()
    return worlds_root() / f"toy-{world_key()}"


def _world(root: Path) -> ToyWorld:
    return ToyWorld(
        root=root,
        base=root / "base",
        candidates={name: root / "candidates" / name for name in CANDIDATES},
        suite=root / "suite" / "toy.yaml",
    )


def load(root: Path) -> ToyWorld | None:
    """The complete, intact world at `root` built from today's inputs, or None."""
    from gate.toy.cache import check

    if check(root.absolute(), world_key()) is not None:
        return None
    return _world(root.absolute())


def weight_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every safetensors file (the determinism fingerprint)."""
    from gate.toy.cache import sha256_file

    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*.safetensors"))}


@contextlib.contextmanager
def _deterministic_torch() -> Iterator[None]:
    """Two threads and deterministic kernels for the build; the caller's settings come back."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(BUILD_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _build_into(tmp: Path, final: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Train everything into `tmp`; adapters record `final/base` as their base.
    `say` gets one line per model: its steps, its time, and the time left."""
    import torch

    from gate.toy import models
    from gate.toy.suite import write_suite

    recipes = {"base": models.BASE_RECIPE, **{n: models.CANDIDATE_RECIPES[n] for n in CANDIDATES}}
    total_steps = sum(r.total_steps for r in recipes.values())
    timings: dict[str, float] = {}
    start = time.perf_counter()
    done_steps = 0
    for i, (name, recipe) in enumerate(recipes.items(), start=1):
        say(f"toy world: training {name} ({recipe.total_steps:,} steps; model {i} of {len(recipes)})")
        t0 = time.perf_counter()
        if name == "base":
            models.train_base(tmp / "base")
        else:
            models.train_candidate(name, tmp / "base", tmp / "candidates" / name, final / "base")
        timings[name] = time.perf_counter() - t0
        done_steps += recipe.total_steps
        elapsed = time.perf_counter() - start
        left = elapsed / done_steps * (total_steps - done_steps)
        say(f"toy world: {name} trained in {timings[name]:.0f} s; {done_steps:,} of {total_steps:,} steps, "
            f"about {left:.0f} s left")
    write_suite(tmp / "suite")
    timings["total"] = time.perf_counter() - start
    return {
        "builder_version": BUILDER_VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": BUILD_THREADS,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "recipes": {"base": models.BASE_RECIPE.name, **{n: n for n in CANDIDATES}},
        "weights_sha256": weight_hashes(tmp),
    }


def build(out_dir: Path | None = None, force: bool = False, say: Callable[[str], None] | None = None) -> ToyWorld:
    """Build the toy world at `out_dir` (default: `default_root()`), or reuse a complete one.

    Training uses BUILD_THREADS (2) torch threads whatever the machine, so a
    second torch process on a small machine does not oversubscribe the cores
    (10x slower when it does); `say` receives one progress line per model.

    A folder holding an intact world built from today's inputs is reused
    unless `force`; one that fails its digest check is rebuilt. A non-empty
    folder that is not a toy world is never overwritten without `force`.
    """
    from gate.toy.cache import ensure_built

    root = (out_dir if out_dir is not None else default_root()).absolute()
    tell = say or (lambda _msg: None)

    def train_into(tmp: Path) -> None:
        with _deterministic_torch():
            manifest = _build_into(tmp, root, tell)
        _write_json_atomic(tmp / MANIFEST, manifest)

    ensure_built(root, world_key(), train_into, what="toy world", force=force, ours=(MANIFEST,), say=tell)
    return _world(root)
