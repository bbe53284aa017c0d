"""Tasks built once per run (gate.evaluate.built_tasks).

What a user relies on: the requests a copy of a built task makes are the
requests lm-eval makes from a task it builds itself, few-shot examples
included, however many evaluations (rounds, candidates, threads) used the
build before; and the build happens once.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import pytest

from gate.evaluate.built_tasks import BuiltTasks

pytestmark = pytest.mark.heavy  # imports lm-eval and builds its tasks

SUITE = Path(__file__).resolve().parents[1] / "fixtures" / "fakesuite"


@pytest.fixture(autouse=True)
def _in_tasks_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SUITE / "tasks")  # the fake tasks name their data relative to it, as a suite run does


@functools.cache
def _manager() -> Any:
    """One TaskManager (lm-eval's index, shared by the process); its `load` builds new tasks on every call."""
    from gate.config.tasks import task_manager

    return task_manager((str(SUITE / "tasks"),))


def _fewshot_spec() -> dict[str, Any]:
    return {
        "task": "fk_fewshot", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(SUITE / "data" / "fk_target.jsonl")}},
        "test_split": "test", "fewshot_split": "test", "num_fewshot": 3, "output_type": "multiple_choice",
        "doc_to_text": "{{question}}", "doc_to_target": "{{gold}}", "doc_to_choice": "{{choices}}",
        "metric_list": [{"metric": "acc"}], "metadata": {"version": 1},
    }


SPECS: list[str | dict[str, Any]] = ["fk_target", "fk_related", _fewshot_spec()]


def _requests(loaded: dict[str, Any], samples: dict[str, list[int]], seed: int = 1234) -> dict[str, list[Any]]:
    """What simple_evaluate does to a task before it is scored, then the requests it holds."""
    out = {}
    for name, task in sorted(loaded["tasks"].items()):
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)
        task.build_all_requests(samples=samples.get(name), rank=0, world_size=1)
        out[name] = [(i.request_type, i.doc_id, i.idx, i.arguments) for i in task.instances]
    return out


def test_copies_make_the_requests_a_fresh_build_makes() -> None:
    built = BuiltTasks(_manager())
    rounds = [{"fk_target": [0, 5, 9], "fk_related": [1, 2], "fk_fewshot": [3, 4]},
              {"fk_target": [17, 2], "fk_related": [40], "fk_fewshot": [3, 30, 31]}]
    for samples in rounds * 2:  # the same round again: no state left over from the last
        assert _requests(built.load(SPECS), samples) == _requests(_manager().load(SPECS), samples)
    assert built.builds == {"fk_target": 1, "fk_related": 1, "fk_fewshot": 1}


def test_few_shot_examples_do_not_depend_on_what_other_copies_did() -> None:
    """The few-shot sampler's RNG is per copy: a copy that drew examples under
    another seed, or drew many, does not change what the next copy draws."""
    built = BuiltTasks(_manager())
    first = _requests(built.load([_fewshot_spec()]), {"fk_fewshot": [1, 2, 3]})
    _requests(built.load([_fewshot_spec()]), {"fk_fewshot": list(range(40))}, seed=99)
    again = _requests(built.load([_fewshot_spec()]), {"fk_fewshot": [1, 2, 3]})
    assert first == again
    assert all(args[0].count("\n\n") == 3 for *_, args in first["fk_fewshot"])  # three examples before each


def test_threads_building_requests_at_once_get_their_own() -> None:
    """Candidates scored at the same time each get the requests serial scoring makes."""
    built = BuiltTasks(_manager())
    samples = [{"fk_target": list(range(k, k + 20)), "fk_related": [k], "fk_fewshot": [k, k + 1]} for k in range(6)]
    expected = [_requests(_manager().load(SPECS), s) for s in samples]
    got: list[Any] = [None] * len(samples)
    barrier = threading.Barrier(len(samples))

    def work(i: int) -> None:
        loaded = built.load(SPECS)
        barrier.wait()
        got[i] = _requests(loaded, samples[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(samples))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
    assert set(built.builds.values()) == {1}
