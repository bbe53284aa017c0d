"""The engine interface: what every way of serving models gives the evaluator.

An engine turns model specs (the base and its candidates) into lm-eval `LM`
objects, one per model name, for the duration of a `with engine.serve(...)`
block. Engines differ in how (one vLLM server for base + all LoRAs, an existing
endpoint, transformers in process, a deterministic fake) but the evaluator
never needs to know which.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from lm_eval.api.model import LM

    from gate.serve.adapters import AdapterInfo

ModelKind = Literal["base", "lora", "full"]
BASE_NAME = "base"


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve.

    name: "base" or the candidate's unique name (the served model name).
    kind: "base", "lora" (an adapter on the base) or "full" (a full fine-tune).
    path: base model dir / hub id; adapter dir; full model dir.
    base_path: the base model, the tokenizer source for lm-eval.
    revision: a hub revision, when path is a hub id.
    quantization: "bitsandbytes"/"nf4" to load the base in 4 bits (QLoRA).
    adapter: a LoRA's checked shapes and rank (gate.config.validate checked it
      against the base once); None: the engine checks it itself.
    """

    name: str
    kind: ModelKind
    path: str
    base_path: str
    revision: str | None = None
    quantization: str | None = None
    adapter: AdapterInfo | None = field(default=None, compare=False)


class Engine(abc.ABC):
    """Serves groups of models and hands lm-eval one LM per model name."""

    kind: ClassVar[str]
    #: can a group's models be scored at the same time (each through its own LM)?
    #: True where the LMs are clients of one server, which batches their
    #: requests together; False where they share one in-process model (hf).
    concurrent: ClassVar[bool] = False

    @abc.abstractmethod
    def version(self) -> str:
        """Engine kind and version, for fingerprints (a new engine -> new baseline)."""

    def groups(self, models: Sequence[ModelSpec]) -> list[list[ModelSpec]]:
        """Which models can be served together.

        Default: the base and every LoRA in one group (one server, adapters
        share the base weights); each full fine-tune in a group of its own.
        """
        shared = [m for m in models if m.kind in ("base", "lora")]
        out: list[list[ModelSpec]] = [shared] if shared else []
        out += [[m] for m in models if m.kind == "full"]
        return out

    @abc.abstractmethod
    def serve(
        self, group: Sequence[ModelSpec], log_dir: Path
    ) -> contextlib.AbstractContextManager[dict[str, LM]]:
        """Start what the group needs; yield {model name: LM}; always tear down."""


def check_unique_names(group: Sequence[ModelSpec]) -> None:
    """Served names must be unique: vLLM caches adapters by id/name (ENGINE_NOTES)."""
    from gate.errors import InputError

    seen: dict[str, str] = {}
    for spec in group:
        if spec.name in seen:
            raise InputError(
                f"two models are named {spec.name!r} ({seen[spec.name]} and {spec.path})",
                key="candidates", fix="give every candidate a unique name",
            )
        seen[spec.name] = spec.path


def served_model(group: Sequence[ModelSpec]) -> ModelSpec | None:
    """The model a group's server loads (the base, or a full fine-tune); None
    for a group of adapters alone. Its adapters ride on it."""
    return next((m for m in group if m.kind in ("base", "full")), None)


def weight_bytes(model: str) -> int | None:
    """Bytes of a local model folder's weight files; None for a hub id not on disk."""
    path = Path(model)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in path.glob(pattern))


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
