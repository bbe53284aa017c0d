"""Candidates scored at the same time (engine.concurrent_candidates), with the fake engine.

What a user relies on: scoring the candidates of one server at the same time
changes how long a run takes, never its numbers; and when one candidate's
scoring fails, the run fails as it would serially, without leaving worker
threads behind. The same through real vLLM: tests/test_run_vllm.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakeworld import BASE, FORGETFUL, GOOD, fake_gate_config

from gate.config.load import load_setup
from gate.errors import EngineError
from gate.pipeline import run
from gate.serve.base import ModelSpec
from gate.serve.fake import FakeEngine, FakeLM, FakeSkill

pytestmark = pytest.mark.heavy

SKILLS = {"base": BASE, "good": GOOD, "forgetful": FORGETFUL,
          "meh": FakeSkill(accuracy={"fk_target": 0.6, "fk_related": 0.55, "fk_general": 0.7})}
NAMES = ("good", "forgetful", "meh")


class _TimedLM(FakeLM):
    """A FakeLM that takes a little time per call and logs when it was busy."""

    def __init__(self, *args: Any, log: list[tuple[str, float, float]], fail_after: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log, self.fail_after = log, fail_after

    def _timed(self, method: Any, requests: list[Any]) -> Any:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise EngineError(f"{self.name}: the engine went away")
        start = time.monotonic()
        time.sleep(0.05)
        out = method(requests)
        self.log.append((self.name, start, time.monotonic()))
        return out

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        return self._timed(super().loglikelihood, requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        return self._timed(super().generate_until, requests)


class _TimedEngine(FakeEngine):
    def __init__(self, fail: dict[str, int] | None = None) -> None:
        super().__init__(SKILLS)
        self.log: list[tuple[str, float, float]] = []
        self.fail = fail or {}
        self.lms: dict[str, _TimedLM] = {}

    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Any:
        import contextlib

        @contextlib.contextmanager
        def served() -> Iterator[dict[str, Any]]:
            self.served.append([m.name for m in group])
            self.lms = {m.name: _TimedLM(m.name, self.skills.get(m.name), self.gold_fields, log=self.log,
                                         fail_after=self.fail.get(m.name)) for m in group}
            yield dict(self.lms)
        return served()


def _numbers(results: dict[str, Any]) -> list[Any]:
    return [(c["name"], c["verdict"], [(t["task"], t["n"], t["delta"], t["ci_low"], t["ci_high"], t["verdict"])
                                       for tier in c["tiers"] for t in tier["tasks"]])
            for c in results["candidates"]]


def _overlapping(log: list[tuple[str, float, float]]) -> bool:
    cands = [e for e in log if e[0] != "base"]
    return any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in cands for b in cands)


def test_concurrent_scoring_gives_the_numbers_serial_scoring_gives(tmp_path: Path) -> None:
    runs = {}
    for workers in (1, 4):
        root = tmp_path / f"w{workers}"
        fake_gate_config(root, adapters=NAMES, engine={"kind": "fake", "concurrent_candidates": workers})
        engine = _TimedEngine()
        said: list[str] = []
        runs[workers] = (run(load_setup(root / "gate.yaml"), engine=engine, progress=said.append), engine, said)
    serial, concurrent = runs[1][0], runs[4][0]
    assert _numbers(serial.results) == _numbers(concurrent.results)
    assert [c["verdict"] for c in concurrent.results["candidates"]] == ["PASS", "FAIL", "FAIL"]
    assert serial.exit_code == concurrent.exit_code == 1
    assert not _overlapping(runs[1][1].log)  # one after another ...
    assert _overlapping(runs[4][1].log)  # ... and at the same time
    assert "scoring 3 candidates, 3 at a time" in runs[4][2]
    assert runs[1][1].lms["good"].calls == runs[4][1].lms["good"].calls  # the same requests, no more


def test_a_failing_candidate_fails_the_run_and_stops_the_others(tmp_path: Path) -> None:
    """One candidate's engine error is the run's error (exit 3), as serially; the
    others start no new round and no scoring thread outlives the run; a rerun
    resumes from what was recorded."""
    fake_gate_config(tmp_path, adapters=NAMES, engine={"kind": "fake", "concurrent_candidates": 4})
    engine = _TimedEngine(fail={"forgetful": 1})
    with pytest.raises(EngineError, match="forgetful: the engine went away") as caught:
        run(load_setup(tmp_path / "gate.yaml"), engine=engine)
    assert caught.value.exit_code == 3
    deadline = time.monotonic() + 10
    while any(t.name.startswith("gate-score") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("gate-score") for t in threading.enumerate())
    calls = {name: lm.calls for name, lm in engine.lms.items()}
    time.sleep(0.3)
    assert {name: lm.calls for name, lm in engine.lms.items()} == calls  # nothing still scoring

    again = run(load_setup(tmp_path / "gate.yaml"), engine=_TimedEngine())
    assert again.evaluated["base"] == 0  # the base's baseline was stored before the failure
    assert [c["verdict"] for c in again.results["candidates"]] == ["PASS", "FAIL", "FAIL"]
