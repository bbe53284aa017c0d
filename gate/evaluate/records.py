"""Typed per-item records: what every stage after evaluation works on.

lm-eval speaks in strings (`"acc,none"` keys, `"N/A"` stderrs, per-sample
values that are floats for some metrics and `[loglikelihood, words]` pairs for
others). `gate.evaluate.lmeval_io` parses that once, at the boundary, into the types
below; nothing downstream ever sees an lm-eval dict.

Every task metric is represented as a ratio of per-item sums,

    score = transform(sum(num) / sum(den))

which covers the three aggregations the gate needs while keeping items
resampleable (a paired bootstrap resamples items and recomputes the score):

    MEAN                  num = value, den = 1            -> mean of items
    WEIGHTED_PERPLEXITY   num = loglikelihood, den = words|bytes|tokens
                          -> exp(-sum(ll) / sum(words))
    BITS_PER_BYTE         num = loglikelihood, den = bytes
                          -> -sum(ll) / sum(bytes) / ln 2
    CORPUS                an aggregate that cannot be written as a ratio
                          (corpus BLEU/ROUGE): no item resampling, the gate
                          falls back to lm-eval's unpaired stderr and says so.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Aggregation(str, enum.Enum):
    """How a task's per-item values become its score."""

    MEAN = "mean"
    WEIGHTED_PERPLEXITY = "weighted_perplexity"
    BITS_PER_BYTE = "bits_per_byte"
    CORPUS = "corpus"

    def score(self, num: FloatArray, den: FloatArray) -> float:
        """The aggregate of items with sums `num` and `den`."""
        total_den = float(np.sum(den))
        if total_den == 0:
            return float("nan")
        ratio = float(np.sum(num)) / total_den
        return float(self.transform(ratio))

    def transform(self, ratio: float | FloatArray) -> float | FloatArray:
        """Map sum(num)/sum(den) to the score; vectorised for bootstraps."""
        if self is Aggregation.WEIGHTED_PERPLEXITY:
            return np.exp(-np.asarray(ratio)) if isinstance(ratio, np.ndarray) else math.exp(-ratio)
        if self is Aggregation.BITS_PER_BYTE:
            return -ratio / math.log(2)
        return ratio

    def inverse(self, score: float) -> float:
        """The ratio sum(num)/sum(den) that gives `score` (NaN outside the domain)."""
        if self is Aggregation.WEIGHTED_PERPLEXITY:
            return -math.log(score) if score > 0 else math.nan
        if self is Aggregation.BITS_PER_BYTE:
            return -score * math.log(2)
        return score

    @property
    def direction(self) -> float:
        """+1 when the score grows with the ratio (MEAN), -1 when it falls."""
        return -1.0 if self in (Aggregation.WEIGHTED_PERPLEXITY, Aggregation.BITS_PER_BYTE) else 1.0


@dataclass(frozen=True)
class ItemKey:
    """The identity of one item: lm-eval's doc_id plus its content hashes.

    Two records pair only when the doc_id AND doc_hash agree; prompt and
    target hashes are kept to explain a mismatch (same doc, other prompt).
    """

    doc_id: int
    doc_hash: str
    prompt_hash: str = ""
    target_hash: str = ""


@dataclass
class ItemText:
    """What a person needs to judge a flipped item (shown escaped in reports)."""

    prompt: str
    target: str
    response: str


@dataclass
class TaskRecords:
    """All items of one task for one model, with the metric the gate judges.

    `num` and `den` are aligned with `keys` (see module docstring). `values`
    is the per-item metric a person would read (num/den per item).
    """

    task: str
    metric: str
    higher_is_better: bool
    aggregation: Aggregation
    keys: list[ItemKey]
    num: FloatArray
    den: FloatArray
    #: lm-eval's own aggregate and stderr, kept for the unpaired fallback and
    #: as a cross-check of our recomputation.
    reported_score: float | None = None
    reported_stderr: float | None = None
    #: number of answer choices for multiple-choice tasks (chance = 1/k).
    n_choices: int | None = None
    #: True when every per-item value is 0 or 1 (acc, exact_match): McNemar applies.
    binary: bool = False
    texts: list[ItemText] | None = None
    #: lm-eval task version and a hash of the task config (for fingerprints).
    version: str | None = None
    config_hash: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: per item, the cluster it belongs to (a passage, a document, a subject, a
    #: group member): items of one cluster are not independent, so intervals
    #: treat clusters as the sampling unit (None: items are independent)
    clusters: list[str] | None = None

    def __post_init__(self) -> None:
        self.num = np.asarray(self.num, dtype=np.float64)
        self.den = np.asarray(self.den, dtype=np.float64)

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def score(self) -> float:
        if self.aggregation is Aggregation.CORPUS:
            return float(self.reported_score) if self.reported_score is not None else float("nan")
        return self.aggregation.score(self.num, self.den)

    @property
    def values(self) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.num / self.den

    @property
    def chance(self) -> float | None:
        """Chance-level score for multiple-choice accuracy, else None."""
        if self.n_choices and self.aggregation is Aggregation.MEAN and self.higher_is_better:
            return 1.0 / self.n_choices
        return None


def select_items(rec: TaskRecords, doc_ids: Sequence[int]) -> TaskRecords:
    """The items with these doc ids, in this order (a task scored in rounds
    is paired with the base on the items scored so far)."""
    from dataclasses import replace

    where = {k.doc_id: i for i, k in enumerate(rec.keys)}
    idx = [where[d] for d in doc_ids]
    return replace(rec, keys=[rec.keys[i] for i in idx], num=rec.num[idx], den=rec.den[idx],
                   texts=None if rec.texts is None else [rec.texts[i] for i in idx],
                   clusters=None if rec.clusters is None else [rec.clusters[i] for i in idx],
                   reported_score=None if len(idx) != rec.n else rec.reported_score,
                   reported_stderr=None if len(idx) != rec.n else rec.reported_stderr)


def concat_records(parts: Sequence[TaskRecords]) -> TaskRecords:
    """One task's records from the rounds it was scored in (items in round order).

    lm-eval's own aggregate is kept only for a single part: a mean of rounds is
    not lm-eval's number, and corpus metrics are never split into rounds.
    """
    from dataclasses import replace

    if not parts:
        raise ValueError("concat_records needs at least one part")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    texts = None
    if all(p.texts is not None for p in parts):
        texts = [t for p in parts for t in (p.texts or [])]
    clusters = None
    if all(p.clusters is not None for p in parts):
        clusters = [c for p in parts for c in (p.clusters or [])]
    return replace(first, keys=[k for p in parts for k in p.keys],
                   num=np.concatenate([p.num for p in parts]),
                   den=np.concatenate([p.den for p in parts]), texts=texts, clusters=clusters,
                   binary=all(p.binary for p in parts), reported_score=None,
                   reported_stderr=None, extra={})


def records_to_dict(rec: TaskRecords) -> dict[str, object]:
    """A JSON-ready dict of `rec` (the baseline store and caches use it)."""
    return {
        "task": rec.task,
        "metric": rec.metric,
        "higher_is_better": rec.higher_is_better,
        "aggregation": rec.aggregation.value,
        "keys": [[k.doc_id, k.doc_hash, k.prompt_hash, k.target_hash] for k in rec.keys],
        "num": [float(x) for x in rec.num],
        "den": [float(x) for x in rec.den],
        "reported_score": rec.reported_score,
        "reported_stderr": rec.reported_stderr,
        "n_choices": rec.n_choices,
        "binary": rec.binary,
        "texts": None if rec.texts is None else [[t.prompt, t.target, t.response] for t in rec.texts],
        "version": rec.version,
        "config_hash": rec.config_hash,
        "extra": rec.extra,
        "clusters": rec.clusters,
    }


def records_from_dict(data: dict[str, object]) -> TaskRecords:
    """Inverse of `records_to_dict`; raises KeyError/TypeError/ValueError on bad data."""
    keys_raw = data["keys"]
    texts_raw = data.get("texts")
    return TaskRecords(
        task=str(data["task"]),
        metric=str(data["metric"]),
        higher_is_better=bool(data["higher_is_better"]),
        aggregation=Aggregation(data["aggregation"]),
        keys=[ItemKey(int(k[0]), str(k[1]), str(k[2]), str(k[3])) for k in keys_raw],  # type: ignore[attr-defined]
        num=np.asarray(data["num"], dtype=np.float64),
        den=np.asarray(data["den"], dtype=np.float64),
        reported_score=data.get("reported_score"),  # type: ignore[arg-type]
        reported_stderr=data.get("reported_stderr"),  # type: ignore[arg-type]
        n_choices=data.get("n_choices"),  # type: ignore[arg-type]
        binary=bool(data.get("binary", False)),
        texts=None if texts_raw is None else [ItemText(*t) for t in texts_raw],  # type: ignore[attr-defined]
        version=data.get("version"),  # type: ignore[arg-type]
        config_hash=data.get("config_hash"),  # type: ignore[arg-type]
        extra=dict(data.get("extra") or {}),  # type: ignore[call-overload]
        clusters=None if data.get("clusters") is None else [str(c) for c in data["clusters"]],  # type: ignore[attr-defined]
    )
