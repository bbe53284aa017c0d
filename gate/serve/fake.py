"""A deterministic fake engine, shipped for fast tests of everything around engines.

Why: the evaluate, baseline, compare and report stages need a model whose
per-task accuracy a test can choose (a candidate that forgets the general tier,
one that learns the target) without a server or weights. Like inspect_ai's
`mockllm`, it is used as any real engine, through `Engine.serve`.

Correctness per item is pseudo-random but reproducible: a hash of
(model, task, doc_id, seed) gives u in [0, 1); the item is answered right when
u < the task's accuracy. Two models with the same seed and accuracy answer the
same items right; raising one task's accuracy flips only items of that task.

The gold answer is read from the document: the first of `gold_fields` present
(an int is a choice index, a string the right continuation/answer, a list of
strings the references of a summary, of which the first is answered).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lm_eval.api.model import LM

from gate.serve.base import Engine, ModelSpec, check_unique_names

GOLD_FIELDS = ("gold", "label", "answer", "target", "outputs")


@dataclass(frozen=True)
class FakeSkill:
    """How good one fake model is: an accuracy per task, a default for the rest."""

    accuracy: Mapping[str, float] = field(default_factory=dict)
    default_accuracy: float = 0.5
    seed: int = 0
    nats_per_char: float = 1.0  # for loglikelihood_rolling (perplexity tasks)

    def accuracy_for(self, task: str | None) -> float:
        return self.accuracy.get(task or "", self.default_accuracy)


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _gold(doc: Any, gold_fields: Sequence[str]) -> int | str | None:
    if isinstance(doc, Mapping):
        for name in gold_fields:
            if name in doc:
                value = doc[name]
                if isinstance(value, bool):
                    return int(value)
                if isinstance(value, int | str):
                    return value
                if isinstance(value, list | tuple) and value and isinstance(value[0], str):
                    return value[0]  # several references (SCROLLS' `outputs`): the first
    return None


class FakeLM(LM):
    """An lm-eval LM whose answers are right with a chosen probability per task."""

    def __init__(self, name: str, skill: FakeSkill | None = None,
                 gold_fields: Sequence[str] = GOLD_FIELDS) -> None:
        super().__init__()
        self.name = name
        self.skill = skill or FakeSkill()
        self.gold_fields = tuple(gold_fields)
        self.calls = 0  # requests answered; tests use it to check caching/resume

    def _correct(self, task: str | None, doc_id: Any) -> bool:
        u = _unit(self.skill.seed, task, doc_id)
        return u < self.skill.accuracy_for(task)

    def _is_gold(self, inst: Any, gold: int | str | None) -> bool | None:
        if isinstance(gold, int):
            return bool(inst.idx == gold)
        if isinstance(gold, str):
            return bool(inst.args[1].strip() == gold.strip())
        return None

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for inst in requests:
            self.calls += 1
            task, doc_id = getattr(inst, "task_name", None), getattr(inst, "doc_id", None)
            right = self._correct(task, doc_id)
            is_gold = self._is_gold(inst, _gold(getattr(inst, "doc", None), self.gold_fields))
            jitter = _unit(self.name, task, doc_id, inst.idx) * 0.1
            if is_gold is None:  # no known gold: a stable score, greedy when "right"
                out.append((-1.0 - jitter if right else -3.0 - jitter, right))
            elif is_gold:
                out.append((-1.0 if right else -3.0, right))
            else:
                # A wrong choice beats the gold one only when the item is answered wrong;
                # one wrong choice (the first after gold) wins so the outcome is unique.
                out.append((-2.0 - jitter, False))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out: list[float] = []
        for inst in requests:
            self.calls += 1
            text = inst.args[0]
            factor = 1.0 + 0.2 * (_unit(self.skill.seed, inst.task_name, inst.doc_id) - 0.5)
            out.append(-self.skill.nats_per_char * len(text) * factor)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out: list[str] = []
        for inst in requests:
            self.calls += 1
            doc = getattr(inst, "doc", None)
            gold = _gold(doc, self.gold_fields)
            if isinstance(gold, int) and isinstance(doc, Mapping) and "choices" in doc:
                gold = str(doc["choices"][gold])
            right = self._correct(inst.task_name, inst.doc_id)
            out.append(str(gold) if right and gold is not None else "<wrong>")
        return out


class FakeEngine(Engine):
    """Serves FakeLMs: nothing starts, nothing to tear down."""

    kind: ClassVar[str] = "fake"
    concurrent: ClassVar[bool] = True  # stateless LMs: exercises concurrent scoring in fast tests

    def __init__(self, skills: Mapping[str, FakeSkill] | None = None,
                 gold_fields: Sequence[str] = GOLD_FIELDS) -> None:
        self.skills = dict(skills or {})
        self.gold_fields = tuple(gold_fields)
        self.served: list[list[str]] = []  # groups served, for tests

    def version(self) -> str:
        return "fake-1"

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, LM]]:
        check_unique_names(group)
        self.served.append([m.name for m in group])
        yield {m.name: FakeLM(m.name, self.skills.get(m.name), self.gold_fields) for m in group}
