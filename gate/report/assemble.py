"""results.json assembled from the verdicts and the run's provenance (no statistics here).

    run_results(...)      -> the document `gate run` writes
    compare_results(...)  -> the document `gate compare` writes (lm-eval folders)

Both return a typed `ResultsDocument`, serialized once by its `to_dict`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gate.baseline import fingerprint as fp
from gate.config.load import GateSetup
from gate.config.policy import Tier
from gate.config.waivers import WaiverCheck
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import TaskRecords
from gate.report.document import BaselineInfo, CandidateResult, Provenance, ResultsDocument
from gate.report.remedies import training_facts
from gate.serve.base import BASE_NAME
from gate.serve.probes import ProbeResult
from gate.verdict.qlora_split import QloraSplit
from gate.verdict.run import RunVerdict


def git_commit(cwd: Path) -> str | None:
    """The commit of the checkout holding the run config (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_results(setup: GateSetup, verdict: RunVerdict, plans: Sequence[TaskPlan], *, engine_kind: str,
                engine_version: str, base_identity: dict[str, str], reused: bool,
                fingerprints: Mapping[str, str], probes: Sequence[ProbeResult],
                waivers: Sequence[WaiverCheck] = (),
                qlora_splits: Mapping[str, QloraSplit] | None = None) -> ResultsDocument:
    """results.json for `gate run`: verdicts plus provenance (and each QLoRA candidate's split)."""
    cfg = setup.config
    paths = {c.name: c.path for c in cfg.candidates}
    candidates = [CandidateResult(replace(v, path=paths[v.name], fingerprint=fingerprints[v.name]),
                                  training_facts(Path(paths[v.name])), (qlora_splits or {}).get(v.name))
                  for v in verdict.candidates]
    root = setup.config_file.resolve().parent if setup.config_file else Path.cwd()
    engine_opts: dict[str, Any] = {"kind": engine_kind, "version": engine_version}
    if cfg.engine.kind == "vllm":
        engine_opts["options"] = cfg.engine.vllm.model_dump()
    elif cfg.engine.kind == "hf":
        engine_opts["options"] = cfg.engine.hf.model_dump()
    elif cfg.engine.kind == "endpoint" and cfg.engine.endpoint is not None:
        engine_opts["options"] = cfg.engine.endpoint.model_dump(exclude={"api_key_env"})
    return ResultsDocument(
        release=verdict.release,
        candidates=candidates,
        baseline=BaselineInfo(fingerprints[BASE_NAME], reused, str(cfg.baseline.store)),
        probes=list(probes),
        sweeps=list(verdict.sweeps),
        waivers=list(waivers),
        provenance=Provenance(
            lm_eval_version=fp.installed_version("lm_eval", "lm-eval"),
            engine=engine_opts,
            base={"path": cfg.base.path, "revision": cfg.base.revision, "dtype": cfg.base.dtype,
                  "quantization": cfg.base.quantization, "identity": base_identity},
            suite=setup.suite.name,
            suite_hash=fp.hash_files([setup.suite_file]),
            thresholds_hash=fp.hash_files([setup.thresholds_file]),
            tasks={p.name: {"tier": p.task.tier, "items": p.n_items, "config_hash": p.config_hash,
                            "data_hash": p.data_hash, "version": p.version} for p in plans},
            git_commit=git_commit(root),
            trust_remote_code=cfg.base.trust_remote_code,
            allow_pickle={c.name: c.allow_pickle for c in cfg.candidates},
        ),
    )


def compare_results(verdict: RunVerdict, candidates: Sequence[tuple[str, Path]], *, base_dir: Path,
                    base: Mapping[str, TaskRecords], base_meta: Mapping[str, Any], tiers: Mapping[str, Tier],
                    suite_name: str | None) -> ResultsDocument:
    """results.json for `gate compare`: the provenance lm-eval's files give."""
    return ResultsDocument(
        release=verdict.release,
        candidates=[CandidateResult(replace(v, path=str(cdir), fingerprint=""))
                    for v, (_, cdir) in zip(verdict.candidates, candidates, strict=True)],
        baseline=BaselineInfo("", False, str(base_dir)),
        provenance=Provenance(
            lm_eval_version=str(base_meta.get("lm_eval_version") or base_meta.get("git_hash") or "unknown"),
            engine={"kind": "lm_eval output", "version": str(base_meta.get("model_name", "")),
                    "options": {"model_args": str((base_meta.get("config") or {}).get("model_args", ""))}},
            base={"path": str(base_dir), "revision": None, "dtype": "unknown", "quantization": None, "identity": {}},
            suite=suite_name or "(none)",
            suite_hash="",
            thresholds_hash="",
            tasks={t: {"tier": tiers[t], "items": base[t].n, "config_hash": str(base[t].config_hash),
                       "data_hash": "", "version": str(base[t].version)} for t in base},
            git_commit=None,
        ),
    )
