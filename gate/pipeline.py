"""`gate.run`: validate -> baseline -> serve -> evaluate -> compare -> outputs.

One direction, no back and forth (DESIGN.md). The CLI's `gate run` is a thin
shell over `run()`; Python users call it directly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate import probes as probes_mod
from gate.config import RunConfig
from gate.errors import BaselineMismatch, ConfigError, InputError, Problem
from gate.evaluate import TaskPlan, evaluate_model, plan_tasks
from gate.loader import GateSetup, check_paths
from gate.records import TaskRecords, select_items
from gate.results import new_results
from gate.sequential import SequentialOutcome
from gate.serve.base import BASE_NAME, Engine, ModelSpec
from gate.tasks import include_paths, resolve_tasks, task_manager

LOGLIKELIHOOD_TYPES = {"multiple_choice", "loglikelihood", "loglikelihood_rolling"}

Progress = Callable[[str], None]


@dataclass
class GateResult:
    """What a run produced: results.json's content, the exit code, the files."""

    results: dict[str, Any]
    exit_code: int
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    evaluated: dict[str, int] = field(default_factory=dict)  # model -> tasks evaluated (0 = all reused)


def make_engine(cfg: RunConfig) -> Engine:
    """The engine the config names, with its options mapped from the config."""
    kind = cfg.engine.kind
    allow_pickle = any(c.allow_pickle for c in cfg.candidates)
    if kind == "vllm":
        from gate.serve.vllm_server import VllmEngine, VllmOptions

        v = cfg.engine.vllm
        opts = VllmOptions(
            tensor_parallel_size=v.tensor_parallel_size, data_parallel_size=v.data_parallel_size,
            pipeline_parallel_size=v.pipeline_parallel_size, gpu_memory_utilization=v.gpu_memory_utilization,
            max_model_len=v.max_model_len, dtype=None if cfg.base.dtype == "auto" else cfg.base.dtype,
            quantization=cfg.base.quantization, max_num_seqs=v.max_num_seqs,
            enforce_eager=bool(v.enforce_eager), extra_args=list(v.extra_args),
            health_timeout_s=v.health_timeout_s, request_timeout_s=v.request_timeout_s,
            num_concurrent=v.num_concurrent, batch_size=v.batch_size, max_retries=v.max_retries, port=v.port,
            trust_remote_code=cfg.base.trust_remote_code,
        )
        return VllmEngine(opts, allow_pickle=allow_pickle)
    if kind == "endpoint":
        from gate.serve.endpoint import EndpointEngine, EndpointOptions

        e = cfg.engine.endpoint
        assert e is not None  # RunConfig guarantees it
        names = {BASE_NAME: e.base_name, **{c.name: e.names.get(c.name, c.name) for c in cfg.candidates}}
        return EndpointEngine(EndpointOptions(
            base_url=e.base_url, api_key_env=e.api_key_env, served_names=names,
            request_timeout_s=e.request_timeout_s, num_concurrent=e.num_concurrent, batch_size=e.batch_size,
            max_retries=e.max_retries,
            trust_remote_code=cfg.base.trust_remote_code, version_label=e.engine_version))
    if kind == "hf":
        from gate.serve.hf import HfEngine, HfOptions

        h = cfg.engine.hf
        return HfEngine(HfOptions(dtype="float32" if cfg.base.dtype == "auto" else cfg.base.dtype, device=h.device,
                                  batch_size=h.batch_size, trust_remote_code=cfg.base.trust_remote_code,
                                  allow_pickle=allow_pickle))
    from gate.serve.fake import FakeEngine

    return FakeEngine()


def model_specs(cfg: RunConfig) -> list[ModelSpec]:
    base = ModelSpec(BASE_NAME, "base", cfg.base.path, cfg.base.path, cfg.base.revision, cfg.base.quantization)
    cands = [ModelSpec(c.name, c.kind, c.path, cfg.base.path, cfg.base.revision, cfg.base.quantization)
             for c in cfg.candidates]
    return [base, *cands]


def _check_out_dir(out: Path) -> None:
    """Fail before any work when the output folder cannot be written (exit 2)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".gate-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder cannot be written: {exc.strerror or exc}", key="out",
                         file=str(out), fix="choose a writable folder with --out") from None


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _validate_adapters(setup: GateSetup, plans: list[TaskPlan], engine_kind: str) -> list[Problem]:
    from gate.errors import GateError
    from gate.serve.adapters import refuse_lm_head_on_loglikelihood, validate_adapter

    cfg = setup.config
    if engine_kind == "fake":  # the fake engine serves no weights
        return []
    uses_ll = any(p.task.output_type in LOGLIKELIHOOD_TYPES or p.task.output_type is None for p in plans)
    problems: list[Problem] = []
    for cand in cfg.candidates:
        if cand.kind != "lora":
            continue
        try:
            info = validate_adapter(cand.path, cfg.base.path, allow_pickle=cand.allow_pickle,
                                    trust_remote_code=cfg.base.trust_remote_code,
                                    served_by_vllm=engine_kind in ("vllm", "endpoint"))
            refuse_lm_head_on_loglikelihood(info, engine_kind, uses_ll)
            for w in info.warnings:
                setup.notes.append(f"candidate {cand.name}: {w}")
        except GateError as exc:
            problems += exc.problems
    return problems


def _lock_missing_baselines(store: Any, missing: list[TaskPlan], found: dict[str, TaskRecords],
                            key_for: Callable[[str, TaskPlan], Any], held: contextlib.ExitStack,
                            say: Progress) -> None:
    """Another `gate run` may be computing the same baseline: hold each missing
    key's lock while computing, and take what the other process stored
    meanwhile (`missing` and `found` are updated in place). Taken only once the
    engine is up, so a run that fails to start leaves the store untouched."""
    for p in sorted(missing, key=lambda p: key_for(BASE_NAME, p).digest()):
        held.enter_context(store.backend.lock(f"locks/{key_for(BASE_NAME, p).digest()}.lock", None))
    for p in list(missing):
        rec = store.get(key_for(BASE_NAME, p))
        if rec is not None:
            say(f"baseline: {p.name} was computed by another gate run meanwhile; reusing it")
            found[p.name] = rec
            missing.remove(p)


def _score_candidate(name: str, lm: Any, plans: list[TaskPlan], base: dict[str, TaskRecords],
                     policies: dict[str, Any], setup: GateSetup, tm: Any, cache: Path,
                     say: Progress) -> dict[str, TaskRecords]:
    """A candidate scored in rounds (gate.rounds); each task's outcome rides
    along in its records (`extra["sequential"]`), so the records cache keeps it."""
    from gate.rounds import score_in_rounds

    recs, outcomes = score_in_rounds(
        plans, base, policies, setup.thresholds.sequential, seed=setup.thresholds.seed,
        evaluate=lambda sub: evaluate_model(lm, sub, task_manager=tm, cache_path=cache), say=say, label=name,
        family=setup.thresholds.family)
    used = sum(o.n_used for o in outcomes.values())
    total = sum(o.n_total for o in outcomes.values())
    say(f"{name}: scored {used:,} of {total:,} items")
    for task, rec in recs.items():
        rec.extra = {**rec.extra, "sequential": outcomes[task].to_dict()}
    return recs


class ProbeRun:
    """Runs the sanity probes (gate.probes) on each served group, before evaluation."""

    def __init__(self, cfg: RunConfig, texts: list[str], engine_kind: str, say: Progress) -> None:
        self.cfg, self.texts, self.engine_kind, self.say = cfg, texts, engine_kind, say
        self.results: list[probes_mod.ProbeResult] = []
        self.base_ll: list[float] | None = None

    def _small_enough(self, spec: ModelSpec) -> bool:
        path = Path(spec.path if spec.kind == "full" else spec.base_path)
        if not path.is_dir():
            return False
        size = sum(f.stat().st_size for f in path.glob("*.safetensors")) + sum(f.stat().st_size for f in path.glob("*.bin"))
        return size <= self.cfg.probes.parity_max_bytes

    def check(self, group: list[ModelSpec], lms: dict[str, Any]) -> None:
        pcfg = self.cfg.probes
        if not pcfg.enabled or not self.texts or self.engine_kind == "fake":
            return
        served = {spec.name: probes_mod.rolling_loglikelihoods(lms[spec.name], self.texts) for spec in group}
        if BASE_NAME in served:
            self.base_ll = served[BASE_NAME]
        for spec in group:
            if spec.name != BASE_NAME and self.base_ll is not None:
                result = probes_mod.adapter_applied(spec.name, self.base_ll, served[spec.name])
                self.results.append(result)
                if result.status == "noop":
                    self.say(f"probe: {result.detail}")
        if pcfg.parity and self.engine_kind in ("vllm", "endpoint") and all(self._small_enough(s) for s in group):
            self._parity(group, served)

    def _parity(self, group: list[ModelSpec], served: dict[str, list[float]]) -> None:
        from transformers import AutoTokenizer

        from gate.serve.hf import HfOptions
        from gate.serve.hf_reference import reference_loglikelihoods

        self.say(f"probe: engine parity against the hf reference ({', '.join(s.name for s in group)})")
        tok = AutoTokenizer.from_pretrained(group[0].base_path, trust_remote_code=self.cfg.base.trust_remote_code)
        n_tokens = [len(tok(t).input_ids) for t in self.texts]
        options = HfOptions(dtype="float32", trust_remote_code=self.cfg.base.trust_remote_code,
                            allow_pickle=any(c.allow_pickle for c in self.cfg.candidates))
        # In a child process: torch, PEFT and the weights never enter the gate's own memory.
        refs = reference_loglikelihoods(group, self.texts, options, Path(self.cfg.out) / "logs")
        for spec in group:
            self.results.append(probes_mod.engine_parity(spec.name, served[spec.name], refs[spec.name], n_tokens,
                                                         self.cfg.probes.parity_tolerance))
        probes_mod.raise_on_mismatch(self.results)


def run(setup: GateSetup, *, progress: Progress | None = None, engine: Engine | None = None) -> GateResult:
    """Gate the setup's candidates against the base; write results and reports.

    Raises GateError subclasses for bad input (exit 2) and infrastructure
    failures (exit 3); a regression is a result (exit code 1 in GateResult).

    Work is skipped at three levels: the base model's records come from the
    baseline store, each candidate's records from a records cache keyed by its
    fingerprint (so a rerun serves nothing at all), and within an evaluation
    lm-eval's response cache (per model fingerprint) resumes an interrupted run.
    """
    from gate import fingerprint as fp
    from gate.baseline import BaselineStore, open_store
    from gate.lmeval_io import pair_all
    from gate.verdict import judge_candidate, judge_release

    say = progress or (lambda _msg: None)
    cfg = setup.config
    out = Path(cfg.out)
    problems = check_paths(setup)
    tasks, task_problems = resolve_tasks(setup.suite, setup.suite_file)
    problems += task_problems
    if problems:
        raise ConfigError(problems=problems)
    _check_out_dir(out)

    engine = engine or make_engine(cfg)
    say(f"planning {len(tasks)} task(s) of suite {setup.suite.name}")
    tm = task_manager(include_paths(setup.suite, setup.suite_file))
    plans = plan_tasks(tasks, tm)
    problems = _validate_adapters(setup, plans, engine.kind)
    if problems:
        raise InputError(problems=problems)

    # ---- fingerprints: one key per (model, task)
    lm_eval_version = fp.installed_version("lm_eval", "lm-eval")
    engine_version = engine.version()
    base_identity = fp.model_identity(cfg.base.path, cfg.base.revision)
    model_ids: dict[str, tuple[dict[str, str], dict[str, str]]] = {BASE_NAME: (base_identity, {})}
    for c in cfg.candidates:
        if c.kind == "lora":
            model_ids[c.name] = (base_identity, fp.adapter_identity(c.path))
        else:
            model_ids[c.name] = (fp.model_identity(c.path), {})

    seq = setup.thresholds.sequential
    policies = {p.name: setup.thresholds.policy_for(p.task.tier, p.name) for p in plans}

    def key_for(model: str, plan: TaskPlan) -> Any:
        identity, adapter = model_ids[model]
        items = plan.fingerprint_parts["selection"]
        if model != BASE_NAME and seq.enabled:
            items = fp.sha256_text(f"{items}|rounds:{rounds_digest}")
        return fp.BaselineKey(
            model=identity, dtype=cfg.base.dtype, engine=engine.kind, engine_version=engine_version,
            lm_eval_version=lm_eval_version, task=plan.name,
            task_config=fp.sha256_text(plan.config_hash + "|metric=" + str(plan.metric)
                                       + (f"|cluster={plan.task.spec.cluster}" if plan.task.spec.cluster else "")),
            task_version=plan.version, data=plan.data_hash,
            quantization=cfg.base.quantization or "none", adapter=adapter,
            num_fewshot=plan.task.spec.num_fewshot, items=items, seed=plan.task.spec.seed,
        )

    # A candidate scored in rounds used only the items its verdict needed: which
    # ones depends on the base's records, the policies and the round settings, so
    # its cached records are keyed by all of them.
    rounds_digest = fp.sha256_text(fp.canonical_json({
        "settings": seq.model_dump(mode="json"), "seed": setup.thresholds.seed,
        "family": setup.thresholds.family, "outcome_format": 2,  # 2: outcomes carry the full base score
        "policies": {name: vars(pol) for name, pol in sorted(policies.items())},
        "base": {p.name: key_for(BASE_NAME, p).digest() for p in plans},
    }))

    # ---- what is already known: the baseline, and cached candidate records
    store = open_store(cfg.baseline.store)
    records_cache = BaselineStore(Path(cfg.cache_dir) / "records")
    records: dict[str, dict[str, TaskRecords]] = {name: {} for name in model_ids}
    todo: dict[str, list[TaskPlan]] = {name: [] for name in model_ids}
    misses: list[Problem] = []
    for name in model_ids:
        src = store if name == BASE_NAME else records_cache
        for p in plans:
            rec = src.get(key_for(name, p))
            if rec is not None:
                records[name][p.name] = rec
            else:
                todo[name].append(p)
    for c in cfg.candidates:
        if seq.enabled and todo[c.name]:
            # Rounds decide a candidate's tasks together (fail_fast, the tier's alpha
            # split), so a candidate is scored whole; the response cache serves what
            # an interrupted run already scored.
            todo[c.name] = list(plans)
            records[c.name] = {}
    for p in todo[BASE_NAME]:
        why = store.explain_miss(key_for(BASE_NAME, p)) or [f"no baseline stored for task {p.name}"]
        misses += [Problem(reason, file=str(cfg.baseline.store), key=p.name,
                           fix="run once without --require-baseline to compute and store it") for reason in why]
    if todo[BASE_NAME] and cfg.baseline.require:
        raise BaselineMismatch(problems=misses)
    for m in misses:
        say(f"baseline: {m.message}; computing it")
    if records[BASE_NAME]:
        say(f"baseline: reusing {len(records[BASE_NAME])} stored task(s)")
    cached = sum(len(records[c.name]) for c in cfg.candidates)
    if cached:
        say(f"cache: reusing {cached} candidate task result(s)")

    # ---- serve and evaluate what is missing
    evaluated = {name: 0 for name in todo}
    held = contextlib.ExitStack()  # baseline locks, taken just before the base is evaluated
    log_dir = out / "logs"
    specs = [s for s in model_specs(cfg) if todo[s.name]]
    if any(s.kind == "lora" for s in specs) and not todo[BASE_NAME]:
        specs.insert(0, model_specs(cfg)[0])  # LoRAs are served on the base; the probes compare with it
    probe_texts = [t for p in plans for t in p.probe_texts][:8]
    probe_run = ProbeRun(cfg, probe_texts, engine.kind, say)
    cache_root = Path(cfg.cache_dir)
    with held:
        for group in engine.groups(specs):
            log_dir.mkdir(parents=True, exist_ok=True)
            say(f"serving {', '.join(m.name for m in group)} ({engine.kind})")
            with engine.serve(group, log_dir) as lms:
                probe_run.check(group, lms)
                for spec in group:
                    if spec.name == BASE_NAME and todo[BASE_NAME]:
                        _lock_missing_baselines(store, todo[BASE_NAME], records[BASE_NAME], key_for, held, say)
                    if not todo[spec.name]:
                        continue
                    plans_left = todo[spec.name]
                    evaluated[spec.name] = len(plans_left)
                    cache = cache_root / key_for(spec.name, plans_left[0]).model_digest()[:24] / "responses"
                    say(f"evaluating {spec.name}: {sum(p.n_items for p in plans_left)} items in {len(plans_left)} task(s)")
                    if spec.name != BASE_NAME and seq.enabled:
                        recs = _score_candidate(spec.name, lms[spec.name], plans_left, records[BASE_NAME],
                                                policies, setup, tm, cache, say)
                    else:
                        recs = evaluate_model(lms[spec.name], plans_left, task_manager=tm, cache_path=cache)
                    dest = store if spec.name == BASE_NAME else records_cache
                    for p in plans_left:
                        dest.put(key_for(spec.name, p), recs[p.name])
                        records[spec.name][p.name] = recs[p.name]
    if published := store.flush():  # a wandb:// store publishes the entries added; a directory: no-op
        say(published)
    if not specs:
        say("every result is cached: nothing to serve")
        probe_run.results.append(probes_mod.ProbeResult(
            "probes", "all", "skipped", "all results came from the baseline store and the records cache; "
            "the probes ran when they were computed"))

    # ---- compare
    tiers = {p.name: p.task.tier for p in plans}
    verdicts = []
    for c in cfg.candidates:
        outcomes = {name: SequentialOutcome.from_dict(rec.extra["sequential"])  # type: ignore[arg-type]
                    for name, rec in records[c.name].items() if "sequential" in rec.extra}
        base_used = {name: select_items(rec, sorted(k.doc_id for k in records[c.name][name].keys))
                     if name in outcomes else rec for name, rec in records[BASE_NAME].items()}
        paired = pair_all(base_used, records[c.name])
        by_tier: dict[str, list[Any]] = {"target": [], "related": [], "general": []}
        for name, (b, cr) in paired.items():
            by_tier[tiers[name]].append((b, cr, policies[name]))
        verdicts.append(judge_candidate(c.name, c.kind, by_tier, sequential=outcomes or None,
                                        family=setup.thresholds.family))
    release = judge_release(verdicts, cfg.release)

    cand_fps = {name: fp.sha256_text(fp.canonical_json({"model": ident, "adapter": adapter}))
                for name, (ident, adapter) in model_ids.items()}
    results = assemble_results(setup, verdicts, release, plans, engine, base_identity,
                               reused=evaluated[BASE_NAME] == 0, fingerprints=cand_fps)
    for p in plans:
        base_rec = records[BASE_NAME][p.name]
        floor = probes_mod.chance_floor(p.name, base_rec.score, base_rec.chance, base_rec.n)
        if floor is not None:
            probe_run.results.append(floor)
    results["probes"] = [r.to_dict() for r in probe_run.results]
    files = write_outputs(results, out)
    if cfg.wandb is not None:
        log_wandb(results, out, cfg, say)
    return GateResult(results=results, exit_code=release.exit_code, out_dir=out, files=files, evaluated=evaluated)


def assemble_results(setup: GateSetup, verdicts: list[Any], release: Any, plans: list[TaskPlan], engine: Engine,
                     base_identity: dict[str, str], *, reused: bool, fingerprints: dict[str, str]) -> dict[str, Any]:
    """results.json's content: verdicts plus provenance (no statistics here)."""
    from gate import fingerprint as fp

    cfg = setup.config
    cand_by_name = {c.name: c for c in cfg.candidates}
    candidates = []
    for v in verdicts:
        d = v.to_dict()
        c = cand_by_name[d["name"]]
        d["path"] = c.path
        d["fingerprint"] = fingerprints[c.name]
        try:
            from gate.report.remedies import training_facts

            d["training"] = training_facts(Path(c.path))
        except ImportError:
            d["training"] = None
        candidates.append(d)
    root = setup.config_file.resolve().parent if setup.config_file else Path.cwd()
    engine_opts: dict[str, Any] = {"kind": engine.kind, "version": engine.version()}
    if cfg.engine.kind == "vllm":
        engine_opts["options"] = cfg.engine.vllm.model_dump()
    elif cfg.engine.kind == "hf":
        engine_opts["options"] = cfg.engine.hf.model_dump()
    elif cfg.engine.kind == "endpoint" and cfg.engine.endpoint is not None:
        engine_opts["options"] = cfg.engine.endpoint.model_dump(exclude={"api_key_env"})
    return new_results(
        release=release.to_dict(),
        candidates=candidates,
        baseline={"fingerprint": fingerprints[BASE_NAME], "reused": reused, "store": str(cfg.baseline.store)},
        provenance={
            "lm_eval_version": fp.installed_version("lm_eval", "lm-eval"),
            "engine": engine_opts,
            "base": {"path": cfg.base.path, "revision": cfg.base.revision, "dtype": cfg.base.dtype,
                     "quantization": cfg.base.quantization, "identity": base_identity},
            "suite": setup.suite.name,
            "suite_hash": fp.hash_files([setup.suite_file]),
            "thresholds_hash": fp.hash_files([setup.thresholds_file]),
            "tasks": {p.name: {"tier": p.task.tier, "items": p.n_items, "config_hash": p.config_hash,
                               "data_hash": p.data_hash, "version": p.version} for p in plans},
            "git_commit": git_commit(root),
            # Security-relevant switches, so an approver sees them (README: guarantees).
            "trust_remote_code": cfg.base.trust_remote_code,
            "allow_pickle": {c.name: c.allow_pickle for c in cfg.candidates},
        },
    )


def log_wandb(results: dict[str, Any], out: Path, cfg: RunConfig, say: Progress) -> None:
    """Log the verdict to W&B. A logging failure is reported, never turned into
    a different release verdict: the gate's answer is already in results.json."""
    from gate.errors import GateError
    from gate.integrations import log_to_wandb

    assert cfg.wandb is not None
    try:
        info = log_to_wandb(results, out, project=cfg.wandb.project, entity=cfg.wandb.entity,
                            run_id=cfg.wandb.run_id, mode=cfg.wandb.mode, config=cfg.model_dump(mode="json"))
    except GateError as exc:
        if exc.exit_code == 2:
            raise
        say(f"warning: W&B logging failed: {exc.render()}")
        return
    where = info.url or (f"offline, in {info.run_dir}; upload with `wandb sync`" if info.run_dir else "offline")
    say(f"W&B: logged to run {info.run_id} ({where})")


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json plus every rendering of it, each written atomically."""
    from gate.atomic import atomic_write_json
    from gate.results import validate_results

    validate_results(results, source=str(out / "results.json"))
    files: dict[str, Path] = {}
    path = out / "results.json"
    atomic_write_json(path, results)
    files["results"] = path
    try:
        from gate.report import write_all
    except ImportError:
        return files
    files.update(write_all(results, out))
    return files
