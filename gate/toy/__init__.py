"""The embedded toy world: a tiny Llama family that shows real catastrophic forgetting.

`build()` trains (or reuses) a character-level base model, four fine-tuned
candidates and writes the offline three-tier toy suite; see `gate.toy.build`.
"""

from gate.toy.build import BUILDER_VERSION, CANDIDATES, ToyWorld, build, default_root, load

__all__ = ["BUILDER_VERSION", "CANDIDATES", "ToyWorld", "build", "default_root", "load"]
