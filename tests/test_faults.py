"""Faults during a run: Ctrl-C, an engine that dies, two gates sharing one store.

What a CI user relies on (DESIGN.md): Ctrl-C exits 130 and leaves nothing
half-written; an engine that dies is exit 3 and a rerun resumes from the
per-model response cache, with the same numbers as an uninterrupted run; two
`gate run`s that need the same baseline compute it once and leave the store
valid.

The fake engine answers instantly, so the subprocess tests run a small helper
script that swaps `gate.serve.factory.make_engine` for a fake engine whose LMs sleep
per request and drop a marker file (model name + pid) when they start
answering, then calls the real CLI entry point.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_bad_input import World, make_world, write_yaml

from gate.cli.main import cli
from gate.config.load import load_setup
from gate.errors import EngineError, exit_code_for
from gate.pipeline import run
from gate.serve.base import ModelSpec
from gate.serve.fake import FakeEngine, FakeLM, FakeSkill

REPO = Path(__file__).resolve().parent.parent
SKILLS = {
    "base": FakeSkill(accuracy={"fk_target": 0.4, "fk_related": 0.6, "fk_general": 0.8}),
    "good": FakeSkill(accuracy={"fk_target": 0.9, "fk_related": 0.6, "fk_general": 0.8}),
    "other": FakeSkill(accuracy={"fk_target": 0.9, "fk_related": 0.6, "fk_general": 0.3}),
}

HELPER = '''
"""Run the gate CLI with a slow fake engine (a test helper written by tests/test_faults.py)."""
import contextlib, os, sys, time
from pathlib import Path

import gate.serve.factory as factory
from gate.serve.fake import FakeEngine, FakeLM

DELAY = float(os.environ["GATE_TEST_DELAY"])
MARKS = Path(os.environ["GATE_TEST_MARKS"])


class SlowLM(FakeLM):
    def _one(self, method, request):
        if self.calls == 0:
            MARKS.mkdir(parents=True, exist_ok=True)
            (MARKS / f"{self.name}-{os.getpid()}").write_text("")
        time.sleep(DELAY)
        return getattr(FakeLM, method)(self, [request])[0]

    def loglikelihood(self, requests, disable_tqdm=False):
        return [self._one("loglikelihood", r) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        return [self._one("loglikelihood_rolling", r) for r in requests]

    def generate_until(self, requests, disable_tqdm=False):
        return [self._one("generate_until", r) for r in requests]


class SlowEngine(FakeEngine):
    @contextlib.contextmanager
    def serve(self, group, log_dir):
        yield {m.name: SlowLM(m.name) for m in group}


factory.make_engine = lambda cfg: SlowEngine()
from gate.cli.main import cli

cli(sys.argv[1:], prog_name="gate")
'''


pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


def _config(world: World, case: Path, **changes: Any) -> Path:
    return write_yaml(case / "gate.yaml", world.config(case, **changes))


def _helper(tmp: Path) -> Path:
    path = tmp / "slow_gate.py"
    path.write_text(HELPER, encoding="utf-8")
    return path


def _env(delay: float, marks: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "GATE_TEST_DELAY": str(delay), "GATE_TEST_MARKS": str(marks),
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (the helper runs in a session of its own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid pgrp session ...; zombies are already dead
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave."""
    return [str(p) for p in folder.rglob("*.tmp")] if folder.exists() else []


def _wait_for(marks: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not list(marks.glob(pattern)):
        if proc.poll() is not None:
            raise AssertionError(f"the gate exited early ({proc.returncode}):\n{proc.stdout.read().decode() if proc.stdout else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern} marker after {timeout} s")
        time.sleep(0.05)


def _verify_store(store: Path) -> str:
    res = CliRunner().invoke(cli, ["baseline", "verify", "--store", str(store)])
    assert res.exit_code == 0, res.output
    return res.output


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_exits_130_and_leaves_nothing_half_written(world: World, tmp_path: Path) -> None:
    case = tmp_path / "case"
    cfg = _config(world, case)
    marks = tmp_path / "marks"
    proc = subprocess.Popen([sys.executable, str(_helper(tmp_path)), "run", "--config", str(cfg)],
                            env=_env(0.02, marks), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for(marks, "base-*", proc, timeout=120)
        time.sleep(0.5)  # well inside the base model's evaluation
        os.kill(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    assert "interrupted" in output
    assert _session_members(proc.pid) == [], "processes of the interrupted gate are still running"
    for folder in (case / "out", case / "store", case / "cache"):
        assert _leftovers(folder) == [], f"half-written files in {folder}"
    results = case / "out" / "results.json"
    if results.exists():
        json.loads(results.read_text(encoding="utf-8"))  # complete, never a torn write
    _verify_store(case / "store")
    # The interrupted run's work is not lost and not trusted blindly: a rerun completes.
    again = CliRunner().invoke(cli, ["run", "--config", str(cfg)])
    assert again.exit_code in (0, 1), again.output
    assert json.loads(results.read_text(encoding="utf-8"))["release"]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")


# --------------------------------------------------------------------------- a dying engine


class _Budget:
    def __init__(self, left: int) -> None:
        self.left = left


class DyingLM(FakeLM):
    """Answers like FakeLM, writes each answer to lm-eval's cache as it arrives (as the
    API models behind the vllm and endpoint engines do), and raises a connection error
    once the engine's request budget is spent: a server that dies mid-evaluation."""

    def __init__(self, name: str, skill: FakeSkill | None, budget: _Budget) -> None:
        super().__init__(name, skill)
        self.budget = budget

    def _answer(self, method: str, requests: Sequence[Any]) -> list[Any]:
        out = []
        for request in requests:
            if self.budget.left <= 0:
                raise ConnectionError("Connection refused: the engine died")
            self.budget.left -= 1
            result = getattr(FakeLM, method)(self, [request])[0]
            self.cache_hook.add_partial(method, request.args, result)
            out.append(result)
        return out

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._answer("loglikelihood", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._answer("generate_until", requests)


class DyingEngine(FakeEngine):
    def __init__(self, requests_before_death: int) -> None:
        super().__init__(SKILLS)
        self.budget = _Budget(requests_before_death)

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, Any]]:
        yield {m.name: DyingLM(m.name, self.skills.get(m.name), self.budget) for m in group}


class CountingEngine(FakeEngine):
    """The shipped fake engine, keeping its LMs so a test can count the requests they answered."""

    def __init__(self) -> None:
        super().__init__(SKILLS)
        self.lms: list[FakeLM] = []

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, Any]]:
        with super().serve(group, log_dir) as lms:
            self.lms += list(lms.values())
            yield lms

    @property
    def calls(self) -> int:
        return sum(lm.calls for lm in self.lms)


def _numbers(results: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c["name"], t["task"], t["base_score"], t["candidate_score"], t["delta"], t["ci_low"], t["ci_high"],
             t["verdict"]) for c in results["candidates"] for tier in c["tiers"] for t in tier["tasks"]]


DIES_AFTER = 100  # requests: inside the base model's first (loglikelihood) batch


def test_engine_death_is_exit_3_and_the_rerun_resumes_from_the_cache(world: World, tmp_path: Path) -> None:
    interrupted, fresh = tmp_path / "interrupted", tmp_path / "fresh"
    cfg = _config(world, interrupted)

    with pytest.raises(EngineError) as err:
        run(load_setup(cfg), engine=DyingEngine(DIES_AFTER))
    assert exit_code_for(err.value) == 3
    assert "engine died" in err.value.render()
    assert not (interrupted / "out" / "results.json").exists()
    assert _leftovers(interrupted) == []

    resumed_engine = CountingEngine()
    resumed = run(load_setup(cfg), engine=resumed_engine)
    fresh_engine = CountingEngine()
    uninterrupted = run(load_setup(_config(world, fresh)), engine=fresh_engine)

    assert _numbers(resumed.results) == _numbers(uninterrupted.results)
    assert resumed.exit_code == uninterrupted.exit_code
    # The requests answered before the engine died came from the response cache.
    assert resumed_engine.calls == fresh_engine.calls - DIES_AFTER, (resumed_engine.calls, fresh_engine.calls)


# --------------------------------------------------------------------------- two gates, one store


@pytest.mark.slow
def test_two_concurrent_runs_compute_the_baseline_once(world: World, tmp_path: Path) -> None:
    """Two processes that both miss the baseline: one computes, the other waits and reuses."""
    store = tmp_path / "shared-store"
    marks = tmp_path / "marks"
    helper = _helper(tmp_path)
    procs = []
    for name in ("a", "b"):
        case = tmp_path / name
        cfg = _config(world, case, baseline={"store": str(store)})
        procs.append((case, subprocess.Popen(
            [sys.executable, str(helper), "run", "--config", str(cfg)], env=_env(0.005, marks),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)))
    outputs = []
    try:
        for _case, proc in procs:
            outputs.append(proc.communicate(timeout=300)[0].decode(errors="replace"))
    finally:
        for _case, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for (_case, proc), out in zip(procs, outputs, strict=True):
        assert proc.returncode in (0, 1), out
    base_evaluations = sorted(p.name for p in marks.glob("base-*"))
    assert len(base_evaluations) == 1, (base_evaluations, outputs)
    assert sum("reusing" in out or "computed by another gate run" in out for out in outputs) == 1, outputs
    assert "ok: 3 baseline(s) verified" in _verify_store(store)
    numbers = [_numbers(json.loads((case / "out" / "results.json").read_text(encoding="utf-8")))
               for case, _proc in procs]
    assert numbers[0] == numbers[1]
