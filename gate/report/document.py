"""results.json, typed: what the verdict stage decided plus where it came from.

The document is built from typed parts (the verdict stage's dataclasses,
the probes' results, the provenance) and serialized once, by
`ResultsDocument.to_dict`; `gate.report.write_outputs` validates that dict
against the shipped JSON Schema once, then writes it and every rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gate.config.waivers import WaiverCheck
from gate.report.results import new_results
from gate.serve.probes import ProbeResult
from gate.verdict.judge import CandidateVerdict, ReleaseVerdict
from gate.verdict.qlora_split import QloraSplit
from gate.verdict.sweep import SweepVerdict


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's verdict (its path and fingerprint filled in) and what its
    training files say (for the remedies; None when there are none)."""

    verdict: CandidateVerdict
    training: Mapping[str, Any] | None = None
    #: a QLoRA candidate's quantization and tuning effects (None: not marked QLoRA)
    qlora_split: QloraSplit | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {**self.verdict.to_dict(), "training": dict(self.training) if self.training is not None else None}
        if self.qlora_split is not None:
            d["qlora_split"] = self.qlora_split.to_dict()
        return d


@dataclass(frozen=True)
class BaselineInfo:
    """Which baseline the candidates were compared with."""

    fingerprint: str
    reused: bool
    store: str


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say where the numbers came from (schema `provenance`)."""

    lm_eval_version: str
    engine: Mapping[str, Any]
    base: Mapping[str, Any]
    suite: str
    suite_hash: str
    thresholds_hash: str
    tasks: Mapping[str, Mapping[str, Any]]
    git_commit: str | None
    #: security-relevant switches, shown to an approver (`gate run` only)
    trust_remote_code: bool | None = None
    allow_pickle: Mapping[str, bool] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for optional in ("trust_remote_code", "allow_pickle"):
            if d[optional] is None:
                del d[optional]
        return d


@dataclass(frozen=True)
class ResultsDocument:
    release: ReleaseVerdict
    candidates: list[CandidateResult]
    baseline: BaselineInfo
    provenance: Provenance
    probes: list[ProbeResult] = field(default_factory=list)
    sweeps: list[SweepVerdict] = field(default_factory=list)
    #: every waiver of the waivers file and what became of it (gate.config.waivers)
    waivers: list[WaiverCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (stamped with the schema and gate versions and the time)."""
        return new_results(release=self.release.to_dict(), candidates=[c.to_dict() for c in self.candidates],
                           baseline=asdict(self.baseline), provenance=self.provenance.to_dict(),
                           probes=[p.to_dict() for p in self.probes],
                           sweeps=[s.to_dict() for s in self.sweeps],
                           waivers=[w.to_dict() for w in self.waivers])
