"""Serve what is missing and score it: the serve and evaluate stages of a run.

Models are served in the engine's groups (one vLLM server for the base and
every LoRA, then each full fine-tune alone). On each group the probes run
first, then each model's missing tasks: the base in full (it becomes the
stored baseline), a candidate in rounds when early stopping is on. Every
task's records are stored as soon as they exist (the baseline store for the
base, the records cache for candidates), so an interrupted run loses nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gate.baseline.keys import RunKeys
from gate.baseline.lookup import Known, claim_missing_baselines
from gate.baseline.store import BaselineStore
from gate.config.load import GateSetup
from gate.config.policy import TaskPolicy
from gate.evaluate.harness import evaluate_model
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import TaskRecords
from gate.evaluate.rounds import score_in_rounds, with_outcome
from gate.serve.base import BASE_NAME, Engine, ModelSpec
from gate.serve.probes import ProbeResult, ProbeRun

Say = Callable[[str], None]


def score_missing(setup: GateSetup, engine: Engine, known: Known, keys: RunKeys, *, specs: list[ModelSpec],
                  plans: list[TaskPlan],
                  policies: Mapping[str, Mapping[str, TaskPolicy]], task_manager: Any, store: BaselineStore,
                  records_cache: BaselineStore, say: Say,
                  skip_after: Callable[[str], Sequence[str]] | None = None,
                  ) -> tuple[dict[str, int], list[ProbeResult]]:
    """Fill `known` with every missing task's records. Returns the number of tasks
    evaluated per model (0 = all reused) and the probes' results. `policies`:
    per candidate, the task policies its rounds look with. `skip_after(name)`,
    asked once a candidate's records are all known (cached ones first, in the
    config's order): candidates not to score after it (`Known.skip`)."""
    cfg = setup.config

    def settled(name: str) -> None:
        if skip_after is None or known.todo[BASE_NAME] or name in known.skipped:
            return
        for later in skip_after(name):
            if later not in known.skipped:
                known.skip(later)
                say(f"{later}: not scored (an earlier checkpoint failed; sweep.stop_after_fail)")

    for spec in specs[1:]:
        if not known.todo[spec.name]:
            settled(spec.name)
    rounds = setup.thresholds.sequential.enabled
    evaluated = {name: 0 for name in known.todo}
    log_dir = Path(cfg.out) / "logs"
    to_serve = [s for s in specs if known.todo[s.name]]
    if any(s.kind == "lora" for s in to_serve) and not known.todo[BASE_NAME]:
        to_serve.insert(0, specs[0])  # LoRAs are served on the base; the probes compare with it
    probe_run = ProbeRun(cfg, [t for p in plans for t in p.probe_texts][:8], engine.kind, say)
    with contextlib.ExitStack() as held:  # baseline locks, taken just before the base is evaluated
        for group in engine.groups(to_serve):
            if all(s.name != BASE_NAME and not known.todo[s.name] for s in group):
                continue  # every model of the group was skipped meanwhile
            log_dir.mkdir(parents=True, exist_ok=True)
            say(f"serving {', '.join(m.name for m in group)} ({engine.kind})")
            with engine.serve(group, log_dir) as lms:
                probe_run.check(group, lms)
                for spec in group:
                    if spec.name == BASE_NAME and known.todo[BASE_NAME]:
                        claim_missing_baselines(store, known, keys, held, say)
                    plans_left = known.todo[spec.name]
                    if not plans_left:
                        continue
                    evaluated[spec.name] = len(plans_left)
                    cache = Path(cfg.cache_dir) / keys.key(spec.name, plans_left[0]).model_digest()[:24] / "responses"
                    say(f"evaluating {spec.name}: {sum(p.n_items for p in plans_left)} items in {len(plans_left)} task(s)")

                    def evaluate(sub: list[TaskPlan], lm: Any = lms[spec.name], cache: Path = cache,
                                 ) -> dict[str, TaskRecords]:
                        return evaluate_model(lm, sub, task_manager=task_manager, cache_path=cache)

                    if spec.name != BASE_NAME and rounds:
                        recs = _in_rounds(spec.name, plans_left, known.records[BASE_NAME], policies[spec.name], setup,
                                          evaluate, say)
                    else:
                        recs = evaluate(plans_left)
                    dest = store if spec.name == BASE_NAME else records_cache
                    for p in list(plans_left):
                        dest.put(keys.key(spec.name, p), recs[p.name])
                        known.add(spec.name, p, recs[p.name])
                    if spec.name != BASE_NAME:
                        settled(spec.name)
    if published := store.flush():  # a wandb:// store publishes the entries added; a directory: no-op
        say(published)
    if not to_serve:
        say("every result is cached: nothing to serve")
        probe_run.results.append(ProbeResult(
            "probes", "all", "skipped", "all results came from the baseline store and the records cache; "
            "the probes ran when they were computed"))
    return evaluated, probe_run.results


def _in_rounds(name: str, plans: list[TaskPlan], base: dict[str, TaskRecords], policies: Mapping[str, TaskPolicy],
               setup: GateSetup, evaluate: Callable[[list[TaskPlan]], dict[str, TaskRecords]],
               say: Say) -> dict[str, TaskRecords]:
    """A candidate scored in rounds (gate.evaluate.rounds), each task carrying its outcome."""
    th = setup.thresholds
    recs, outcomes = score_in_rounds(plans, base, policies, th.sequential, seed=th.seed, evaluate=evaluate,
                                     say=say, label=name, family=th.family)
    used = sum(o.n_used for o in outcomes.values())
    total = sum(o.n_total for o in outcomes.values())
    say(f"{name}: scored {used:,} of {total:,} items")
    return {task: with_outcome(rec, outcomes[task]) for task, rec in recs.items()}
