"""`gate.run` end to end with the fake engine: everything around the engines.

The fake engine (gate.serve.fake) answers each item right with a chosen
probability per task, reproducibly, so these tests choose which candidate
forgets and which learns. The real-engine tests live in test_run_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeworld import BASE, FORGETFUL, GOOD, fake_gate_config

from gate.config.load import load_setup
from gate.pipeline import run
from gate.serve.fake import FakeEngine, FakeSkill

pytestmark = pytest.mark.heavy

@pytest.fixture
def world(tmp_path: Path) -> Path:
    fake_gate_config(tmp_path, adapters=("good", "forgetful"))
    return tmp_path


def _engine() -> FakeEngine:
    return FakeEngine({"base": BASE, "good": GOOD, "forgetful": FORGETFUL})


def _verdicts(results: dict) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in results["candidates"]}


def test_verdicts_outputs_and_exit_code(world: Path) -> None:
    setup = load_setup(world / "gate.yaml")
    result = run(setup, engine=_engine())
    assert _verdicts(result.results) == {"good": "PASS", "forgetful": "FAIL"}
    assert result.exit_code == 1
    forgetful = next(c for c in result.results["candidates"] if c["name"] == "forgetful")
    general = next(t for t in forgetful["tiers"] if t["tier"] == "general")
    assert general["verdict"] == "FAIL" and general["worst_task"] == "fk_general"
    task = general["tasks"][0]
    assert task["n"] == 300  # the seeded subset, not all 400 documents
    assert task["delta"] < -0.3 and task["ci_high"] < task["threshold"]
    out = world / "out"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["junit.xml", "report.html", "results.json", "summary.md"]
    on_disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert _verdicts(on_disk) == _verdicts(result.results)
    # security switches are recorded where an approver sees them
    assert on_disk["provenance"]["allow_pickle"] == {"good": False, "forgetful": False}
    assert on_disk["provenance"]["trust_remote_code"] is False
    assert "allow_pickle" in (out / "report.html").read_text(encoding="utf-8")


def test_release_of_one_candidate(world: Path) -> None:
    from gate.config.load import Overrides

    setup = load_setup(world / "gate.yaml", Overrides(release=["good"]))
    assert run(setup, engine=_engine()).exit_code == 0


def test_second_run_reuses_baseline_and_caches(world: Path) -> None:
    first = run(load_setup(world / "gate.yaml"), engine=_engine())
    assert first.evaluated["base"] == 3
    assert first.results["baseline"]["reused"] is False
    engine = _engine()
    second = run(load_setup(world / "gate.yaml"), engine=engine)
    assert second.evaluated == {"base": 0, "good": 0, "forgetful": 0}
    assert engine.served == []  # nothing was even served
    assert second.results["baseline"]["reused"] is True
    strip = lambda r: [(c["name"], [(t["task"], t["delta"], t["ci_low"]) for tier in c["tiers"] for t in tier["tasks"]]) for c in r["candidates"]]  # noqa: E731
    assert strip(first.results) == strip(second.results)


def test_require_baseline_without_one_is_input_error(world: Path) -> None:
    from gate.config.load import Overrides
    from gate.errors import BaselineMismatch

    setup = load_setup(world / "gate.yaml", Overrides(require_baseline=True))
    with pytest.raises(BaselineMismatch) as err:
        run(setup, engine=_engine())
    assert err.value.exit_code == 2
    assert "no baseline" in str(err.value) or "baseline" in str(err.value)
    assert not (world / "out" / "results.json").exists()


def test_changed_task_data_invalidates_only_that_task(world: Path) -> None:
    run(load_setup(world / "gate.yaml"), engine=_engine())
    data = world / "suite" / "data" / "fk_related.jsonl"
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("say 0", "say zero")
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    messages: list[str] = []
    again = run(load_setup(world / "gate.yaml"), engine=_engine(), progress=messages.append)
    # The baseline recomputes only the changed task. Candidates are scored in rounds,
    # which decide their tasks together (fail_fast, the tier's alpha split), so each
    # candidate is scored whole again; lm-eval's response cache serves the unchanged items.
    assert again.evaluated == {"base": 1, "good": 3, "forgetful": 3}
    assert any("fk_related" in m and "data changed" in m for m in messages), messages


def test_base_at_chance_is_flagged_not_compared(world: Path) -> None:
    """A base that cannot beat guessing means broken plumbing: probe entry + INCONCLUSIVE, never PASS/FAIL."""
    at_chance = FakeSkill(accuracy={"fk_target": 0.40, "fk_related": 0.6, "fk_general": 0.22})
    engine = FakeEngine({"base": at_chance, "good": GOOD, "forgetful": FORGETFUL})
    result = run(load_setup(world / "gate.yaml"), engine=engine)
    floor = [p for p in result.results["probes"] if p["name"] == "chance_floor"]
    assert [p["task"] for p in floor] == ["fk_general"]
    assert floor[0]["severity"] == "warning"
    for cand in result.results["candidates"]:
        general = next(t for t in cand["tiers"] if t["tier"] == "general")["tasks"][0]
        assert general["verdict"] == "INCONCLUSIVE" and "base_at_chance" in general["flags"]


def test_progress_events_follow_each_model_to_its_verdict(world: Path) -> None:
    """The live display's feed: every model is announced with the items it
    plans, moves forward round by round without going back, and ends with its
    verdict line, the same verdict results.json gives. A rerun announces every
    model as cached, each candidate with its verdict (nothing scored)."""
    from gate.evaluate.progress import ModelProgress

    events: list[ModelProgress] = []
    result = run(load_setup(world / "gate.yaml"), engine=_engine(), track=events.append)

    by_model: dict[str, list[ModelProgress]] = {}
    for e in events:
        by_model.setdefault(e.model, []).append(e)
    assert list(by_model) == ["base", "good", "forgetful"]
    for name, seen in by_model.items():
        assert seen[0].state == "queued" and seen[0].planned > 0, name
        assert seen[-1].state == "done", name
        scoring = [e for e in seen if e.state == "scoring"]
        assert scoring and [e.done for e in scoring] == sorted(e.done for e in scoring), name
        assert all(e.planned == seen[0].planned for e in seen), name
    assert by_model["base"][-1].done == by_model["base"][-1].planned and by_model["base"][-1].verdict is None
    rounds = [e.round for e in by_model["good"] if e.state == "scoring"]
    assert rounds[0] == 1 and len(set(rounds)) > 1  # early stopping: its rounds are shown
    verdicts = {c["name"]: c for c in result.results["candidates"]}
    for name in ("good", "forgetful"):
        last = by_model[name][-1]
        assert last.verdict == f"{verdicts[name]['label']}: {verdicts[name]['reason']}"
        assert 0 < last.done <= last.planned
    assert by_model["forgetful"][-1].done < by_model["forgetful"][-1].planned  # stopped early: it failed

    events.clear()
    run(load_setup(world / "gate.yaml"), engine=_engine(), track=events.append)
    assert [(e.model, e.state) for e in events] == [("base", "cached"), ("good", "cached"), ("forgetful", "cached"),
                                                    ("good", "cached"), ("forgetful", "cached")]
    assert events[-1].verdict.startswith("FAIL: ")
