"""Serve what is missing and score it: the serve and evaluate stages of a run.

Models are served in the engine's groups (one vLLM server for the base and
every LoRA, then each full fine-tune alone). On each group the probes run
first, then each model's missing tasks: the base in full (it becomes the
stored baseline), a candidate in rounds when early stopping is on. Every
task's records are stored as soon as they exist (the baseline store for the
base, the records cache for candidates), so an interrupted run loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

from gate.baseline.keys import RunKeys
from gate.baseline.lookup import Known, claim_missing_baselines
from gate.baseline.store import BaselineStore
from gate.config.load import GateSetup
from gate.config.policy import TaskPolicy
from gate.evaluate.built_tasks import BuiltTasks
from gate.evaluate.harness import evaluate_model
from gate.evaluate.plan import TaskPlan
from gate.evaluate.progress import ModelProgress, Track, no_track
from gate.evaluate.records import TaskRecords
from gate.evaluate.rounds import RoundTrack, score_in_rounds, with_outcome
from gate.serve.base import BASE_NAME, Engine, ModelSpec
from gate.serve.probes import ProbeResult, ProbeRun

Say = Callable[[str], None]

#: how long a failed or interrupted run waits, once its server is gone, for the
#: candidates' scoring threads to end (each ends at its next request)
STRAGGLERS_WAIT_S = 30.0


class Settled(NamedTuple):
    """What the pipeline makes of a candidate once all its records are known."""

    #: its verdict in one line, for the progress display
    verdict: str
    #: candidates not to score after it (a sweep's later checkpoints under
    #: sweep.stop_after_fail)
    skip: Sequence[str] = ()


def score_missing(setup: GateSetup, engine: Engine, known: Known, keys: RunKeys, *, specs: list[ModelSpec],
                  plans: list[TaskPlan],
                  policies: Mapping[str, Mapping[str, TaskPolicy]], task_manager: Any, store: BaselineStore,
                  records_cache: BaselineStore, say: Say,
                  settle: Callable[[str], Settled] | None = None, track: Track = no_track,
                  ) -> tuple[dict[str, int], list[ProbeResult]]:
    """Fill `known` with every missing task's records. Returns the number of tasks
    evaluated per model (0 = all reused) and the probes' results. `policies`:
    per candidate, the task policies its rounds look with. `settle(name)`, asked
    once a candidate's records and the base's are all known (cached ones first,
    in the config's order): its verdict line and the candidates not to score
    after it (`Known.skip`). `track` follows each model's scoring."""
    cfg = setup.config
    done_settling: set[str] = set()
    # Candidates scored at the same time report from worker threads: the
    # bookkeeping (stores, `known`, the display) is done under one lock.
    lock = threading.RLock()
    stop = threading.Event()
    say, track = _locked(lock, say), _locked(lock, track)
    workers_per_server = cfg.engine.concurrent_candidates

    def settled(name: str) -> None:
        if settle is None or known.todo[BASE_NAME] or known.todo[name] or name in known.skipped | done_settling:
            return
        done_settling.add(name)
        outcome = settle(name)
        track(ModelProgress(name, "cached" if not evaluated[name] else "done", done=scored[name],
                            planned=planned[name], verdict=outcome.verdict))
        for later in outcome.skip:
            if later not in known.skipped:
                known.skip(later)
                track(ModelProgress(later, "skipped", planned=planned[later]))
                say(f"{later}: not scored (an earlier checkpoint failed; sweep.stop_after_fail)")

    evaluated = {name: 0 for name in known.todo}
    scored = {name: 0 for name in known.todo}
    planned = {name: sum(p.n_items for p in known.todo[name]) for name in known.todo}
    for spec in specs:
        track(ModelProgress(spec.name, "queued" if known.todo[spec.name] else "cached", planned=planned[spec.name]))
    for spec in specs[1:]:
        settled(spec.name)
    rounds = setup.thresholds.sequential.enabled
    log_dir = Path(cfg.out) / "logs"
    to_serve = [s for s in specs if known.todo[s.name]]
    if any(s.kind == "lora" for s in to_serve) and not known.todo[BASE_NAME]:
        to_serve.insert(0, specs[0])  # LoRAs are served on the base; the probes compare with it
    probe_run = ProbeRun(cfg, [t for p in plans for t in p.probe_texts][:8], engine.kind, say,
                         fingerprints=keys.identities.fingerprints())
    built = BuiltTasks(task_manager)  # each task built once per run, whichever model asks first

    def score_model(spec: ModelSpec, lm: Any) -> None:
        """Score one model's missing tasks and record them (runs in a worker
        thread when candidates are scored at the same time)."""
        with lock:
            plans_left = list(known.todo[spec.name])
            if not plans_left or spec.name in known.skipped:
                return
            evaluated[spec.name] = len(plans_left)
            say(f"evaluating {spec.name}: {sum(p.n_items for p in plans_left)} items in {len(plans_left)} task(s)")
        cache = Path(cfg.cache_dir) / keys.key(spec.name, plans_left[0]).model_digest()[:24] / "responses"

        def evaluate(sub: list[TaskPlan]) -> dict[str, TaskRecords]:
            if stop.is_set() or spec.name in known.skipped:
                raise _Dropped(spec.name)  # a sibling failed, or an earlier checkpoint FAILed
            return evaluate_model(lm, sub, task_manager=built, cache_path=cache)

        def at(round_no: int | None, done: int, tasks: Sequence[str]) -> None:
            scored[spec.name] = done
            track(ModelProgress(spec.name, "scoring", done=done, planned=planned[spec.name], tasks=tuple(tasks),
                                round=round_no))

        try:
            if spec.name != BASE_NAME and rounds:
                recs = _in_rounds(spec.name, plans_left, known.records[BASE_NAME], policies[spec.name], setup,
                                  evaluate, say, at)
            else:
                at(None, 0, [p.name for p in plans_left])
                recs = evaluate(plans_left)
                scored[spec.name] = planned[spec.name]
        except _Dropped:
            return
        with lock:
            if spec.name in known.skipped:
                return  # an earlier checkpoint FAILed while this one was scored: as if never scored
            dest = store if spec.name == BASE_NAME else records_cache
            for p in plans_left:
                dest.put(keys.key(spec.name, p), recs[p.name])
                known.add(spec.name, p, recs[p.name])
            if spec.name == BASE_NAME:
                track(ModelProgress(BASE_NAME, "done", done=scored[BASE_NAME], planned=planned[BASE_NAME]))
            for other in specs[1:]:  # this one, or those cached before the base was known
                settled(other.name)

    stragglers: list[Future[None]] = []
    with contextlib.ExitStack() as held:  # baseline locks, taken just before the base is evaluated
        held.callback(_wait_for_stragglers, stragglers)  # after the server is torn down
        for group in engine.groups(to_serve):
            if all(s.name != BASE_NAME and not known.todo[s.name] for s in group):
                continue  # every model of the group was skipped meanwhile
            log_dir.mkdir(parents=True, exist_ok=True)
            say(f"serving {', '.join(m.name for m in group)} ({engine.kind})")
            with engine.serve(group, log_dir) as lms:
                probe_run.check(group, lms)
                if any(s.name == BASE_NAME for s in group):  # first: every candidate is paired with it
                    if known.todo[BASE_NAME]:
                        claim_missing_baselines(store, known, keys, held, say)
                    score_model(specs[0], lms[BASE_NAME])
                lanes = _lanes([s for s in group if s.name != BASE_NAME], setup)
                workers = min(workers_per_server, len(lanes)) if engine.concurrent else 1
                if workers > 1:
                    say(f"scoring {sum(map(len, lanes))} candidates, {workers} at a time")
                _score_all(lanes, lms, score_model, workers, stop, stragglers)
    if published := store.flush():  # a wandb:// store publishes the entries added; a directory: no-op
        say(published)
    if not to_serve:
        say("every result is cached: nothing to serve")
        probe_run.results.append(ProbeResult(
            "probes", "all", "skipped", "all results came from the baseline store and the records cache; "
            "the probes ran when they were computed"))
    return evaluated, probe_run.results


class _Dropped(Exception):
    """A candidate's scoring stopped between rounds: it is not needed any more."""


def _locked(lock: threading.RLock, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        with lock:
            return fn(*args)
    return call


def _lanes(candidates: Sequence[ModelSpec], setup: GateSetup) -> list[list[ModelSpec]]:
    """The candidates in lanes that may be scored at the same time, each lane in order.

    Every candidate is a lane of its own, except under sweep.stop_after_fail:
    then a sweep's checkpoints are one lane, scored one after another in
    training order, so that the checkpoints after the first FAIL are never
    served (the compute the setting is there to save)."""
    if not setup.thresholds.sweep.stop_after_fail:
        return [[c] for c in candidates]
    lanes: list[list[ModelSpec]] = []
    of_sweep: dict[str, list[ModelSpec]] = {}
    for c in candidates:
        sweep = next((s.name for s in setup.sweeps if c.name in s.candidates), None)
        if sweep is None:
            lanes.append([c])
        elif sweep in of_sweep:
            of_sweep[sweep].append(c)
        else:
            of_sweep[sweep] = [c]
            lanes.append(of_sweep[sweep])
    return lanes


def _score_all(lanes: Sequence[Sequence[ModelSpec]], lms: Mapping[str, Any],
               score_model: Callable[[ModelSpec, Any], None], workers: int, stop: threading.Event,
               stragglers: list[Future[None]]) -> None:
    """Score a server's candidates, `workers` lanes at a time (`_lanes`), in the config's order.

    At the same time, their requests reach the server together and share its
    batches (the reason the base and every LoRA share one server). Each
    candidate runs in its own thread with its own LM and response cache; the
    tasks are built once and copied (gate.evaluate.built_tasks), so the
    requests and the records are the ones serial scoring makes.

    When one fails (the server died, bad input) or the run is interrupted
    (Ctrl-C), the others are stopped rather than waited for: no new round
    starts, every LM refuses its next request, and the error propagates, so
    `serve()` tears the server down and the exit code is the one serial
    scoring gives. What was scored is in the response caches; a rerun resumes."""
    def score_lane(lane: Sequence[ModelSpec]) -> None:
        for spec in lane:
            score_model(spec, lms[spec.name])

    if workers <= 1:
        for lane in lanes:
            score_lane(lane)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gate-score")
    futures = [pool.submit(score_lane, lane) for lane in lanes]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
    except BaseException:
        stop.set()
        for lm in lms.values():
            abandon = getattr(lm, "abandon", None)  # a server's LMs (gate.serve.completions)
            if callable(abandon):
                abandon()
        pool.shutdown(wait=False, cancel_futures=True)
        stragglers.extend(futures)
        raise
    pool.shutdown(wait=True)


def _wait_for_stragglers(stragglers: Sequence[Future[None]]) -> None:
    """Let the scoring threads of a failed or interrupted run end before the run does.

    Their requests in flight fail once the server is torn down; lm-eval logs
    each failure ("retrying"), and asyncio reports each failed request task
    that nobody awaited ("Task exception was never retrieved") when it is
    collected, which was after the run had given the streams back: measured
    on the real world at Ctrl-C, 10,000 lines of tracebacks on the terminal.
    Waited for here, while the run's output still goes to its log, lm-eval's
    lines stay there; the tasks' errors, which lm-eval has logged, are then
    marked as seen. (The tasks outlive the run: clearing the failed threads'
    frames and collecting garbage here was tried, and they were still
    reported after it.)"""
    if not stragglers:
        return
    wait(stragglers, timeout=STRAGGLERS_WAIT_S)
    with warnings.catch_warnings():  # isinstance() on some objects warns (torch's deprecated module aliases)
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled() and obj.get_loop().is_closed():
                obj.exception()  # seen: asyncio reports it no more


def _in_rounds(name: str, plans: list[TaskPlan], base: dict[str, TaskRecords], policies: Mapping[str, TaskPolicy],
               setup: GateSetup, evaluate: Callable[[list[TaskPlan]], dict[str, TaskRecords]],
               say: Say, at: RoundTrack) -> dict[str, TaskRecords]:
    """A candidate scored in rounds (gate.evaluate.rounds), each task carrying its outcome."""
    th = setup.thresholds
    recs, outcomes = score_in_rounds(plans, base, policies, th.sequential, seed=th.seed, evaluate=evaluate,
                                     say=say, label=name, family=th.family, at=at)
    used = sum(o.n_used for o in outcomes.values())
    total = sum(o.n_total for o in outcomes.values())
    say(f"{name}: scored {used:,} of {total:,} items")
    return {task: with_outcome(rec, outcomes[task]) for task, rec in recs.items()}
