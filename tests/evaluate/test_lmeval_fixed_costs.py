"""lm-eval's fixed costs paid once per process (gate.config.tasks.task_manager,
gate.evaluate.lmeval_fixed_costs).

What a user relies on: a run in a process that already ran one (the Python
front door, a notebook, the tests) finds the same tasks and scores the same
requests as lm-eval would on its own; only the repeated work is gone.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

from gate.config.tasks import task_manager
from gate.evaluate import lmeval_fixed_costs
from gate.serve.fake import FakeLM, FakeSkill

pytestmark = pytest.mark.heavy  # imports lm-eval, indexes its 14,700 tasks

SUITE = Path(__file__).resolve().parents[1] / "fixtures" / "fakesuite"


def _index(tm: Any) -> dict[str, tuple[Any, Any, frozenset[str]]]:
    return {name: (e.kind, e.yaml_path, frozenset(e.tags)) for name, e in tm.task_index.items()}


def test_the_shared_index_is_the_one_lm_eval_builds(tmp_path: Path) -> None:
    """The built-in index is shared between managers; each manager's include
    paths are indexed after it and override it, as in lm-eval's own build."""
    from lm_eval.tasks import TaskManager

    # a suite task that takes a built-in task's name and joins a built-in tag
    (tmp_path / "arc_easy.yaml").write_text(
        "task: arc_easy\ntag: ai2_arc\ndataset_path: json\noutput_type: loglikelihood\n"
        "doc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n", encoding="utf-8")
    for paths in [(str(SUITE / "tasks"),), (str(SUITE / "tasks"), str(tmp_path))]:
        ours, theirs = task_manager(paths), TaskManager(include_path=list(paths))
        assert _index(ours) == _index(theirs)
        for attr in ("all_tasks", "all_subtasks", "all_groups", "all_tags"):
            assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert task_manager((str(tmp_path),)).task_index["arc_easy"].yaml_path == tmp_path / "arc_easy.yaml"
    assert "fk_target" in task_manager((str(SUITE / "tasks"),)).all_subtasks
    assert "fk_target" not in task_manager((str(tmp_path),)).all_tasks  # include paths do not leak between managers


def test_the_index_kept_on_disk_is_the_one_built_and_follows_edits(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A `gate run` process loads lm-eval's index from the user's cache instead of
    parsing every YAML again; what it loads must be what a build gives, and an
    edited, added or unreadable file must mean a fresh build, never a stale index."""
    from lm_eval.tasks._index import TaskIndex

    from gate.config.tasks import cached_index

    root, cache = tmp_path / "tasks", tmp_path / "cache"
    root.mkdir()
    task = "dataset_path: json\noutput_type: loglikelihood\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
    (root / "one.yaml").write_text(f"task: one\ntag: both\n{task}", encoding="utf-8")
    (root / "two.yaml").write_text(f"task: two\ntag: both\n{task}", encoding="utf-8")
    builds = []
    real_build = TaskIndex.build
    monkeypatch.setattr(TaskIndex, "build", staticmethod(lambda paths: builds.append(1) or real_build(paths)))

    def entries(index: dict[str, Any]) -> dict[str, Any]:
        return {name: (e.kind, e.yaml_path, e.cfg, e.tags) for name, e in index.items()}

    first = cached_index(root, cache)
    assert entries(first) == entries(real_build([root])) and set(first) == {"one", "two", "both"}
    (kept,) = cache.glob("index-*.pickle")
    again = cached_index(root, cache)
    assert len(builds) == 1 and entries(again) == entries(first)  # loaded, not built
    (root / "two.yaml").write_text(f"task: two_renamed\n{task}", encoding="utf-8")  # an edit
    assert set(cached_index(root, cache)) == {"one", "two_renamed", "both"} and len(builds) == 2
    (root / "sub").mkdir()
    (root / "sub" / "three.yaml").write_text(f"task: three\n{task}", encoding="utf-8")  # an added file
    assert "three" in cached_index(root, cache) and len(builds) == 3
    for f in cache.glob("index-*.pickle"):
        f.write_bytes(b"truncated")
    assert "three" in cached_index(root, cache) and len(builds) == 4  # unreadable: built again
    assert kept.exists() and len(list(cache.glob("index-*.pickle"))) == 3  # one per signature seen


def _evaluate(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import lm_eval

    monkeypatch.chdir(SUITE / "tasks")  # the fake tasks name their data relative to it
    return lm_eval.simple_evaluate(  # type: ignore[no-any-return]
        model=FakeLM("m", FakeSkill(default_accuracy=0.6)), tasks=["fk_target", "fk_related", "fk_general"],
        samples={"fk_target": list(range(0, 40, 3)), "fk_related": [1, 2, 5], "fk_general": list(range(20))},
        log_samples=True, task_manager=task_manager((str(SUITE / "tasks"),)), bootstrap_iters=0,
        random_seed=1, numpy_random_seed=1, torch_random_seed=None, fewshot_random_seed=1)


def _scored(results: dict[str, Any]) -> tuple[Any, Any]:
    samples = {task: [(s["doc_id"], s["arguments"], s["resps"], s["filtered_resps"], s["target"]) for s in rows]
               for task, rows in results["samples"].items()}
    return samples, results["results"]


def test_requests_and_results_are_lm_evals_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval.evaluator
    import lm_eval.utils

    shipped = lmeval_fixed_costs.shipped()
    assert shipped["apply_template"] is not lmeval_fixed_costs.apply_template
    assert shipped["add_env_info"] is not lmeval_fixed_costs.add_env_info_once
    with monkeypatch.context() as own:  # lm-eval as it ships
        own.setattr(lm_eval.evaluator, "add_env_info", shipped["add_env_info"])
        own.setattr(lm_eval.utils, "apply_template", shipped["apply_template"])
        theirs = _evaluate(own)
    lmeval_fixed_costs.install()
    assert lm_eval.utils.apply_template is lmeval_fixed_costs.apply_template
    ours = _evaluate(monkeypatch)
    assert _scored(ours) == _scored(theirs)
    assert ours["lm_eval_version"] == theirs["lm_eval_version"] == importlib.metadata.version("lm_eval")
    assert ours["pretty_env_info"] == theirs["pretty_env_info"]


def test_the_environment_is_described_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.collect_env

    calls = []
    real = torch.utils.collect_env.get_pretty_env_info
    monkeypatch.setattr(torch.utils.collect_env, "get_pretty_env_info", lambda: calls.append(1) or real())
    lmeval_fixed_costs._environment.cache_clear()
    lmeval_fixed_costs.install()
    for _ in range(3):  # three rounds
        assert "pretty_env_info" in _evaluate(monkeypatch)
    assert len(calls) == 1
