"""The two flows, one call per stage, in order (DESIGN.md: no back and forth).

    run():     config -> serve + evaluate -> baseline -> verdict -> report
    compare(): lm-eval output folders -> verdict -> report   (nothing served)

The CLI's `gate run` and `gate compare` are thin shells over these; Python
users call them through the front door (`gate.run`, `gate.compare`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config.load import GateSetup
from gate.config.models import Suite, Thresholds
from gate.evaluate.progress import Track, no_track
from gate.serve.base import BASE_NAME, Engine

Progress = Callable[[str], None]


@dataclass
class GateResult:
    """What a run produced: results.json's content, the exit code, the files."""

    results: dict[str, Any]
    exit_code: int
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    evaluated: dict[str, int] = field(default_factory=dict)  # model -> tasks evaluated (0 = all reused)

    @property
    def verdict(self) -> str:
        """The release verdict: PASS or FAIL."""
        return str(self.results["release"]["verdict"])


def run(setup: GateSetup, *, progress: Progress | None = None, engine: Engine | None = None,
        track: Track | None = None) -> GateResult:
    """Gate the setup's candidates against the base; write results and reports.

    `progress` gets the stages as lines; `track` each model's scoring as it
    goes (gate.evaluate.progress), for a live display.

    Raises GateError subclasses for bad input (exit 2, every problem at once,
    before anything is served) and infrastructure failures (exit 3); a
    regression is a result (exit code 1 in GateResult).

    Work is skipped at three levels: the base's records come from the
    baseline store, each candidate's from a records cache keyed by its
    fingerprint (a rerun serves nothing), and within an evaluation lm-eval's
    response cache (per model fingerprint) resumes an interrupted run.
    """
    from gate.evaluate.mirror import dataset_mirror

    mirror = Path(setup.config.dataset_mirror) if setup.config.dataset_mirror else None
    with dataset_mirror(mirror if mirror is not None and mirror.is_dir() else None):
        return _run(setup, progress=progress, engine=engine, track=track)


def _run(setup: GateSetup, *, progress: Progress | None, engine: Engine | None, track: Track | None) -> GateResult:
    from gate.baseline.keys import ModelIdentities, RunKeys
    from gate.baseline.lookup import lookup, records_cache_for
    from gate.baseline.store import open_store
    from gate.config.validate import validate
    from gate.config.waivers import match_waivers, utc_today
    from gate.evaluate.qlora_split import score_split
    from gate.evaluate.score import score_missing
    from gate.integrations.wandb_log import log_verdict
    from gate.report import write_outputs
    from gate.report.assemble import run_results
    from gate.serve.factory import make_engine, model_specs
    from gate.serve.probes import chance_floors
    from gate.verdict.run import CandidateRecords, judge_run
    from gate.verdict.sweep import policies_for

    say = progress or (lambda _msg: None)
    cfg, th = setup.config, setup.thresholds
    checked = validate(setup, engine_kind=engine.kind if engine else None)          # config
    plans = checked.plans
    for note in [*setup.notes, *(n for t in checked.tasks for n in t.notes)]:
        say(f"note: {note}")
    engine = engine or make_engine(cfg)
    say(f"planned {len(plans)} task(s) of suite {setup.suite.name}")
    policies = {p.name: th.policy_for(p.task.tier, p.name) for p in plans}
    identities = ModelIdentities(setup)
    waivers, waiver_checks = match_waivers(setup.waivers, identities.fingerprints(), utc_today())
    for check in waiver_checks:
        say(check.note)
    by_candidate = {c.name: policies_for(c.name, policies, setup.sweeps, waivers.get(c.name, ()))
                    for c in cfg.candidates}
    keys = RunKeys(setup, plans, engine_kind=engine.kind, engine_version=engine.version(), policies=by_candidate,
                   identities=identities)
    store, records_cache = open_store(cfg.baseline.store), records_cache_for(cfg.cache_dir)   # baseline
    known = lookup(store, records_cache, keys, plans, store_label=str(cfg.baseline.store),
                   require=cfg.baseline.require, rounds=th.sequential.enabled, say=say)
    settle, settled = _settle(setup, known, plans, policies, waivers)
    evaluated, probes = score_missing(setup, engine, known, keys, specs=model_specs(cfg, checked.adapters),  # serve,
                                      plans=plans, policies=by_candidate,                           # evaluate
                                      task_manager=checked.task_manager, store=store,
                                      records_cache=records_cache, say=say,
                                      settle=settle, track=track or no_track)
    split = None if engine.kind == "fake" else score_split(                       # serve, evaluate: QLoRA split
        setup, plans, keys, base_records=known.records[BASE_NAME], run_engine=engine.kind,
        task_manager=checked.task_manager, records_cache=records_cache, adapters=checked.adapters, say=say,
        skipped=known.skipped)
    verdict = judge_run(known.records[BASE_NAME],                                   # verdict
                        [CandidateRecords(c.name, c.kind, known.records[c.name]) for c in cfg.candidates
                         if c.name not in known.skipped],
                        tiers={p.name: p.task.tier for p in plans}, policies=policies, family=th.family,
                        release=cfg.release, sweeps=setup.sweeps, pick=th.sweep.pick, waivers=waivers,
                        judged=settled)
    splits = _qlora_splits(split, plans, policies, th.family)
    results = run_results(setup, verdict, plans, engine_kind=engine.kind, engine_version=keys.engine_version,  # report
                          base_identity=keys.base_identity, reused=evaluated[BASE_NAME] == 0,
                          fingerprints=keys.fingerprints(), waivers=waiver_checks, qlora_splits=splits,
                          probes=[*probes, *chance_floors({p.name: known.records[BASE_NAME][p.name] for p in plans})],
                          ).to_dict()
    files = write_outputs(results, Path(cfg.out))
    unit_runs = {c.name: c.wandb_run for c in cfg.candidates if c.wandb_run}
    unit_runs.update({s.name: s.wandb_run for s in setup.sweeps if s.wandb_run})
    log_verdict(results, Path(cfg.out), cfg, say, unit_runs)
    return GateResult(results=results, exit_code=verdict.release.exit_code, out_dir=Path(cfg.out), files=files,
                      evaluated=evaluated)


def _qlora_splits(split: Any, plans: Sequence[Any], policies: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Each QLoRA candidate's quantization and tuning effects (gate.verdict.qlora_split)."""
    from gate.verdict.qlora_split import split_candidate

    if split is None:
        return {}
    tiers = {p.name: p.task.tier for p in plans}
    return {name: split_candidate(name, base16=split.base16, base4=split.base4, trained=trained, tiers=tiers,
                                  policies=policies, family=family, engine=split.engine_version,
                                  order=[p.name for p in plans])
            for name, trained in split.trained.items()}


def _settle(setup: GateSetup, known: Any, plans: Sequence[Any], policies: Mapping[str, Any],
            waivers: Mapping[str, Sequence[Any]]) -> tuple[Callable[[str], Any], dict[str, Any]]:
    """Judge one candidate as soon as its records are in, as the verdict stage
    would (a sweep's checkpoint at alpha/K, its waivers applied): its verdict
    line for the progress display and, with sweep.stop_after_fail, the sweep's
    later checkpoints to skip when it FAILs. Returns the function and the
    verdicts it reached, which the verdict stage takes as they are (the
    records do not change once complete)."""
    from gate.evaluate.score import Settled
    from gate.verdict.judge import Verdict
    from gate.verdict.run import CandidateRecords, judge_one

    tiers = {p.name: p.task.tier for p in plans}
    kinds = {c.name: c.kind for c in setup.config.candidates}
    judged: dict[str, Any] = {}

    def settle(name: str) -> Settled:
        sweeps = [s for s in setup.sweeps if name in s.candidates]
        verdict = judge_one(known.records[BASE_NAME], CandidateRecords(name, kinds[name], known.records[name]),
                            tiers=tiers, policies=policies, family=setup.thresholds.family, sweeps=sweeps,
                            waivers=waivers.get(name, ()))
        judged[name] = verdict
        line = f"{verdict.label}: {verdict.reason}"
        if not (sweeps and setup.thresholds.sweep.stop_after_fail and verdict.verdict is Verdict.FAIL):
            return Settled(line)
        return Settled(line, sweeps[0].candidates[sweeps[0].candidates.index(name) + 1:])

    return settle, judged


def compare(base_dir: Path, candidates: Sequence[tuple[str, Path]], thresholds: Thresholds, *, out: Path,
            suite: Suite | None = None, suite_file: str | None = None,
            release: Sequence[str] | None = None) -> GateResult:
    """Gate lm-eval `--log_samples` output folders written elsewhere: the same
    pairing, statistics and outputs as `run`, from results_*.json and
    samples_*.jsonl, with nothing served."""
    from gate.config.tasks import suite_tiers
    from gate.config.validate import check_out_dir
    from gate.evaluate.lmeval_io import candidate_kind, records_from_output_dir
    from gate.report import write_outputs
    from gate.report.assemble import compare_results
    from gate.verdict.run import CandidateRecords, judge_run

    check_out_dir(out)                                                              # config
    metrics = {spec.task: spec.metric for _, spec in suite.tasks() if spec.metric} if suite else None
    clusters = {spec.task: spec.cluster_field for _, spec in suite.tasks() if spec.cluster_field} if suite else None
    base, base_meta = records_from_output_dir(base_dir, metrics=metrics, clusters=clusters)   # evaluate (read)
    base = _pool_groups(base, base_meta, suite, str(base_dir))
    tiers = suite_tiers(suite, list(base), suite_file)
    base = {k: v for k, v in base.items() if k in tiers}
    cands = []
    for name, cdir in candidates:
        recs, meta = records_from_output_dir(cdir, metrics=metrics, clusters=clusters)
        recs = _pool_groups(recs, meta, suite, str(cdir))
        cands.append(CandidateRecords(name, candidate_kind(meta), {k: v for k, v in recs.items() if k in tiers}))
    policies = {task: thresholds.policy_for(tier, task) for task, tier in tiers.items()}
    verdict = judge_run(base, cands, tiers=tiers, policies=policies, family=thresholds.family,   # verdict
                        release=list(release) if release else None)
    results = compare_results(verdict, candidates, base_dir=base_dir, base=base, base_meta=base_meta,   # report
                              tiers=tiers, suite_name=suite.name if suite else None).to_dict()
    files = write_outputs(results, out)
    return GateResult(results=results, exit_code=verdict.release.exit_code, out_dir=out, files=files)


def _pool_groups(records: dict[str, Any], meta: Mapping[str, Any], suite: Suite | None, source: str) -> dict[str, Any]:
    """A suite task that is an lm-eval group (mmlu, mmlu_stem) pooled from its leaf
    tasks' records, as `gate run` pools it: the pooled mean is lm-eval's
    size-weighted group score, and ids are offset by each member's document
    count, so base and candidate pair item by item."""
    from gate.errors import InputError
    from gate.evaluate.harness import pool_records
    from gate.evaluate.lmeval_io import group_leaves

    if suite is None:
        return records
    groups = group_leaves(meta)
    counts = meta.get("n-samples") or {}
    out = dict(records)
    for _, spec in suite.tasks():
        if spec.task in records or spec.task not in groups:
            continue
        leaves = groups[spec.task]
        missing = [leaf for leaf in leaves if leaf not in records]
        if missing:
            raise InputError(f"group {spec.task}: no samples for {', '.join(missing[:5])}", file=source,
                             fix="run lm_eval with --log_samples on the whole group")
        sizes = [int((counts.get(leaf) or {}).get("original", 0)) or records[leaf].n for leaf in leaves]
        out[spec.task] = pool_records(spec.task, [records[leaf] for leaf in leaves], sizes=sizes,
                                      by_member=spec.cluster == "member")
    return out

