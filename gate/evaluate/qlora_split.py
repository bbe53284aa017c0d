"""The QLoRA split's models, served and scored: a second, smaller serve-and-evaluate pass.

A candidate marked `quantization: bitsandbytes` (a QLoRA adapter) is also
scored as it was trained, on the base loaded in 4 bits, so its change can be
split into the quantization effect and the tuning effect
(gate.verdict.qlora_split). Three models, all on the same planned items:

    base#16bit   the base in the run's dtype
    base#nf4     the base in 4 bits (nf4, bitsandbytes)
    NAME#nf4     each QLoRA adapter on the 4-bit base

All three go through the hf engine (transformers + PEFT + bitsandbytes), so
no difference between engines can pose as either effect: vLLM's CPU build
has no bitsandbytes, and an hf-scored 16-bit base is the reference the vLLM
engine is itself checked against. When the run's engine is hf the run's own
base records are that 16-bit base. Records are kept in the records cache
under keys that carry the hf engine and the quantization, so a rerun scores
nothing. (`#` cannot appear in a candidate's name, so these names never
collide with one.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gate.baseline.fingerprint import BaselineKey
from gate.baseline.keys import RunKeys
from gate.baseline.store import BaselineStore
from gate.config.load import GateSetup
from gate.evaluate.harness import evaluate_model
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import TaskRecords
from gate.serve.base import BASE_NAME, ModelSpec

BASE_16BIT = "base#16bit"
BASE_4BIT = "base#nf4"
QUANTIZATION = "bitsandbytes"


def as_trained(candidate: str) -> str:
    """The served name of a QLoRA candidate on the 4-bit base."""
    return f"{candidate}#nf4"


@dataclass
class SplitRecords:
    """Per model of the split, its records per task."""

    engine_version: str
    base16: dict[str, TaskRecords] = field(default_factory=dict)
    base4: dict[str, TaskRecords] = field(default_factory=dict)
    #: QLoRA candidate -> its records on the 4-bit base
    trained: dict[str, dict[str, TaskRecords]] = field(default_factory=dict)


def qlora_candidates(setup: GateSetup, skipped: Collection[str] = ()) -> list[Any]:
    """The candidates marked QLoRA, in the config's order (those not scored left out)."""
    return [c for c in setup.config.candidates if c.quantization and c.name not in skipped]


def score_split(setup: GateSetup, plans: Sequence[TaskPlan], keys: RunKeys, *, base_records: dict[str, TaskRecords],
                run_engine: str, task_manager: Any, records_cache: BaselineStore, adapters: dict[str, Any],
                say: Callable[[str], None], skipped: Collection[str] = ()) -> SplitRecords | None:
    """Score what the split needs and is not cached; None when no candidate is marked QLoRA."""
    from gate.serve.hf import HfEngine, HfOptions

    cfg = setup.config
    marked = qlora_candidates(setup, skipped)
    if not marked:
        return None
    h = cfg.engine.hf
    engine = HfEngine(HfOptions(dtype="float32" if cfg.base.dtype == "auto" else cfg.base.dtype, device=h.device,
                                batch_size=h.batch_size, trust_remote_code=cfg.base.trust_remote_code,
                                allow_pickle=any(c.allow_pickle for c in marked)))
    version = engine.version()
    out = SplitRecords(version)
    adapter_ids = {as_trained(c.name): keys.model_ids[c.name][1] for c in marked}

    def key(model: str, plan: TaskPlan) -> BaselineKey:
        """The base's key for `plan`, with this engine, quantization and adapter."""
        return replace(keys.key(BASE_NAME, plan), engine="hf", engine_version=version, dtype=engine.options.dtype,
                       quantization="none" if model == BASE_16BIT else QUANTIZATION,
                       adapter=adapter_ids.get(model, {}))

    base = ModelSpec(BASE_4BIT, "base", cfg.base.path, cfg.base.path, cfg.base.revision, QUANTIZATION)
    groups: list[list[ModelSpec]] = [
        [base, *(ModelSpec(as_trained(c.name), "lora", c.path, cfg.base.path, cfg.base.revision, QUANTIZATION,
                           adapter=adapters.get(c.name)) for c in marked)]]
    if run_engine == "hf":
        out.base16 = dict(base_records)  # the run's own base, scored by this same engine
    else:
        groups.insert(0, [ModelSpec(BASE_16BIT, "base", cfg.base.path, cfg.base.path, cfg.base.revision)])
    if run_engine != "hf":
        say(f"QLoRA split: scored by the hf engine (transformers + bitsandbytes), not by the run's {run_engine} "
            "engine: vLLM's CPU build has no bitsandbytes, and one engine for all three models keeps engine "
            "differences out of both effects")
    found: dict[str, dict[str, TaskRecords]] = {m.name: {} for g in groups for m in g}
    for name in found:
        for plan in plans:
            if (rec := records_cache.get(key(name, plan))) is not None:
                found[name][plan.name] = rec
    todo = [[m for m in g if len(found[m.name]) < len(plans)] for g in groups]
    log_dir = Path(cfg.out) / "logs"
    for group, missing in zip(groups, todo, strict=True):
        if not missing:
            continue
        log_dir.mkdir(parents=True, exist_ok=True)
        say(f"QLoRA split: serving {', '.join(m.name for m in group)} (hf, 4-bit base through bitsandbytes)"
            if group[0].quantization else f"QLoRA split: serving {group[0].name} (hf)")
        with engine.serve(group, log_dir) as lms:
            for spec in missing:
                left = [p for p in plans if p.name not in found[spec.name]]
                say(f"QLoRA split: evaluating {spec.name}: {sum(p.n_items for p in left)} items")
                cache = Path(cfg.cache_dir) / key(spec.name, left[0]).model_digest()[:24] / "responses"
                recs = evaluate_model(lms[spec.name], left, task_manager=task_manager, cache_path=cache)
                for p in left:
                    records_cache.put(key(spec.name, p), recs[p.name])
                    found[spec.name][p.name] = recs[p.name]
    if run_engine != "hf":
        out.base16 = found[BASE_16BIT]
    out.base4 = found[BASE_4BIT]
    out.trained = {c.name: found[as_trained(c.name)] for c in marked}
    return out
