"""Gate lm-eval output folders written elsewhere (`gate compare`).

A team that already runs `lm_eval --log_samples` can gate on those files
without this tool serving anything: the same pairing, statistics and
outputs as `gate run`, from results_*.json and samples_*.jsonl.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gate.config import Suite, Thresholds
from gate.errors import InputError, Problem
from gate.policy import Tier
from gate.results import new_results


def tier_map(suite: Suite | None, tasks: Sequence[str], suite_file: str | None) -> dict[str, Tier]:
    """Which tier each task is judged in: the suite's, or `general` without a suite."""
    if suite is None:
        return {t: "general" for t in tasks}
    by_task = {spec.task: tier for tier, spec in suite.tasks()}
    missing = [t for t in by_task if t not in tasks]
    if missing:
        raise InputError(problems=[Problem(f"suite task {t} is not in the lm-eval output", file=suite_file,
                                           key="tiers", fix="evaluate it with lm_eval, or remove it from the suite")
                                   for t in missing])
    return dict(by_task)


def compare_dirs(base_dir: Path, candidates: Sequence[tuple[str, Path]], thresholds: Thresholds, *,
                 suite: Suite | None = None, suite_file: str | None = None,
                 release: Sequence[str] | None = None) -> dict[str, Any]:
    """results.json content for lm-eval output folders of a base and candidates."""
    from gate.lmeval_io import pair_all, records_from_output_dir
    from gate.verdict import judge_candidate, judge_release

    metrics = {spec.task: spec.metric for _, spec in suite.tasks() if spec.metric} if suite else None
    clusters = {spec.task: spec.cluster_field for _, spec in suite.tasks() if spec.cluster_field} if suite else None
    base, base_meta = records_from_output_dir(base_dir, metrics=metrics, clusters=clusters)
    tiers = tier_map(suite, list(base), suite_file)
    base = {k: v for k, v in base.items() if k in tiers}
    verdicts = []
    for name, cdir in candidates:
        cand, _ = records_from_output_dir(cdir, metrics=metrics, clusters=clusters)
        cand = {k: v for k, v in cand.items() if k in tiers}
        paired = pair_all(base, cand)
        by_tier: dict[str, list[Any]] = {"target": [], "related": [], "general": []}
        for task, (b, c) in paired.items():
            by_tier[tiers[task]].append((b, c, thresholds.policy_for(tiers[task], task)))
        kind = "lora"
        verdicts.append(judge_candidate(name, kind, by_tier, family=thresholds.family))
    rel = judge_release(verdicts, list(release) if release else None)
    cands = []
    for v, (_, cdir) in zip(verdicts, candidates, strict=True):
        d = v.to_dict()
        d["path"] = str(cdir)
        d["fingerprint"] = ""
        d["training"] = None
        cands.append(d)
    return new_results(
        release=rel.to_dict(),
        candidates=cands,
        baseline={"fingerprint": "", "reused": False, "store": str(base_dir)},
        provenance={
            "lm_eval_version": str(base_meta.get("lm_eval_version") or base_meta.get("git_hash") or "unknown"),
            "engine": {"kind": "lm_eval output", "version": str(base_meta.get("model_name", "")),
                       "options": {"model_args": str((base_meta.get("config") or {}).get("model_args", ""))}},
            "base": {"path": str(base_dir), "revision": None, "dtype": "unknown", "quantization": None, "identity": {}},
            "suite": suite.name if suite else "(none)",
            "suite_hash": "",
            "thresholds_hash": "",
            "tasks": {t: {"tier": tiers[t], "items": base[t].n, "config_hash": str(base[t].config_hash),
                          "data_hash": "", "version": str(base[t].version)} for t in base},
            "git_commit": None,
        },
    )
