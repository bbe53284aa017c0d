"""Each lm-eval task built once per run, handed out as a fresh copy per evaluation.

Why. `simple_evaluate` builds its tasks from the TaskManager on every call:
loading the dataset, processing documents, setting up filters and metrics.
The gate calls it once per round and per candidate, so a suite was built
rounds x candidates times (MMLU's 57 subject tasks made that most of a CPU
run). The prompts do not depend on the model, so one build serves every
call of a run.

How. `BuiltTasks` stands in for the TaskManager that `simple_evaluate` is
given: its `load` builds a suite task the first time it is asked for and
afterwards returns copies. What one evaluation changes on a task is its own
state: the instances `build_all_requests` makes, the few-shot seed
(`set_fewshot_seed` replaces the sampler's RNG) and config values
(`set_config`). A copy gets its own config and sampler and no instances,
while the dataset, documents and metric functions, which no evaluation
writes, are shared. Candidates scored at the same time (gate.evaluate.score)
therefore never see each other's requests, and every call starts from the
state a fresh build would have, so the requests are the ones lm-eval would
have built itself (tests/evaluate/test_built_tasks.py compares them).

The cache lives for one run, not in the process-wide TaskManager, because a
run's dataset mirror decides where a task's documents come from.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any


def _spec_name(spec: str | dict[str, Any]) -> str:
    return spec if isinstance(spec, str) else str(spec["task"])


def fresh_task(task: Any) -> Any:
    """A copy of a built task that one evaluation may change without touching the original."""
    out = copy.copy(task)
    if "_config" in vars(task):
        out._config = copy.copy(task._config)
        if isinstance(getattr(task._config, "generation_kwargs", None), dict):
            out._config.generation_kwargs = dict(task._config.generation_kwargs)
    if "sampler" in vars(task):
        out.sampler = copy.copy(task.sampler)
    out._instances = None
    return out


class BuiltTasks:
    """A TaskManager that builds each suite task once; every `load` returns fresh copies.

    Thread-safe: candidates evaluated at the same time share one. Anything
    else `simple_evaluate` asks of a TaskManager goes to the wrapped one."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._built: dict[str, dict[str, Any]] = {}
        #: how many times each suite task was built (tests read it)
        self.builds: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def _get(self, spec: str | dict[str, Any]) -> dict[str, Any]:
        name = _spec_name(spec)
        with self._lock:  # one build per task, even when two candidates ask at once
            if name not in self._built:
                self._built[name] = self._manager.load([spec])
                self.builds[name] = self.builds.get(name, 0) + 1
            return self._built[name]

    def load(self, task_list: Sequence[str | dict[str, Any]] | str | dict[str, Any]) -> dict[str, Any]:
        specs: Sequence[str | dict[str, Any]] = (
            task_list if isinstance(task_list, list | tuple) else [task_list])  # type: ignore[list-item]
        tasks: dict[str, Any] = {}
        groups: dict[str, Any] = {}
        group_map: dict[str, Any] = {}
        for spec in specs:
            loaded = self._get(spec)
            tasks.update({name: fresh_task(t) for name, t in loaded["tasks"].items()})
            groups.update(loaded["groups"])  # read by name only (lm-eval's aggregation)
            group_map.update(loaded.get("group_map") or {})
        return {"tasks": tasks, "groups": groups, "group_map": group_map}
