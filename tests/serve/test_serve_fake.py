"""The fake engine: chosen per-task accuracy, deterministic, through lm-eval's real path."""

from __future__ import annotations

import pytest
from test_serve_tiny import TASK, write_tiny_task

from gate.serve.base import ModelSpec
from gate.serve.fake import FakeEngine, FakeSkill

pytestmark = pytest.mark.heavy

BASE = ModelSpec("base", "base", "/m", "/m")
CAND = ModelSpec("cand", "lora", "/a", "/m")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_tiny_task(tmp_path_factory.mktemp("task"), n=100)



def _evaluate(lm, task_dir):
    import lm_eval

    from gate.config.tasks import task_manager

    manager = task_manager((str(task_dir),))  # lm-eval's own index, shared by the process
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], log_samples=True, bootstrap_iters=0,
                                  task_manager=manager)
    per_item = {s["doc_id"]: s["acc"] for s in out["samples"][TASK]}
    return out["results"][TASK]["acc,none"], per_item


def test_accuracy_follows_the_skill(task_dir, tmp_path):
    engine = FakeEngine({"base": FakeSkill(accuracy={TASK: 0.8}),
                         "cand": FakeSkill(accuracy={TASK: 0.3})})
    with engine.serve([BASE, CAND], tmp_path) as lms:
        base_acc, _ = _evaluate(lms["base"], task_dir)
        cand_acc, _ = _evaluate(lms["cand"], task_dir)
    assert base_acc == pytest.approx(0.8, abs=0.12)
    assert cand_acc == pytest.approx(0.3, abs=0.12)


def test_extremes_are_exact_and_runs_are_deterministic(task_dir, tmp_path):
    engine = FakeEngine({"base": FakeSkill(accuracy={TASK: 1.0}),
                         "cand": FakeSkill(accuracy={TASK: 0.0})})
    with engine.serve([BASE, CAND], tmp_path) as lms:
        assert _evaluate(lms["base"], task_dir)[0] == 1.0
        assert _evaluate(lms["cand"], task_dir)[0] == 0.0
    mid = FakeEngine({"base": FakeSkill(accuracy={TASK: 0.5})})
    with mid.serve([BASE], tmp_path) as a, mid.serve([BASE], tmp_path) as b:
        assert _evaluate(a["base"], task_dir)[1] == _evaluate(b["base"], task_dir)[1]


def test_raising_accuracy_only_flips_wrong_items_to_right(task_dir, tmp_path):
    """Same seed: a better model is right on a superset of items (clean paired tests)."""
    engine = FakeEngine({"base": FakeSkill(accuracy={TASK: 0.5}),
                         "cand": FakeSkill(accuracy={TASK: 0.7})})
    with engine.serve([BASE, CAND], tmp_path) as lms:
        _, base_items = _evaluate(lms["base"], task_dir)
        _, cand_items = _evaluate(lms["cand"], task_dir)
    assert all(cand_items[d] >= base_items[d] for d in base_items)
    assert sum(cand_items.values()) > sum(base_items.values())


def test_unknown_task_uses_default_accuracy(tmp_path):
    assert FakeSkill(default_accuracy=0.25).accuracy_for("anything") == 0.25


def test_engine_kind_version_and_groups():
    engine = FakeEngine()
    assert engine.kind == "fake" and engine.version() == "fake-1"
    full = ModelSpec("full", "full", "/f", "/m")
    assert [[m.name for m in g] for g in engine.groups([BASE, CAND, full])] == [
        ["base", "cand"], ["full"]]


def test_duplicate_names_refused(tmp_path):
    from gate.errors import InputError

    with pytest.raises(InputError, match="unique name"), FakeEngine().serve([BASE, BASE], tmp_path):
        pass
