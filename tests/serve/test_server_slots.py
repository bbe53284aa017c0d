"""One budget of requests in flight per server, shared by the models scored on it at the same time.

Four candidates scored at the same time used to put four times the base's
requests in the engine's queue; on a slow engine (SmolLM2-135M with LoRA on 2
CPU cores) requests then waited past the request timeout and were retried
until the run failed. These tests hold `ServerSlots` to its word: never more
than the budget in flight, the whole budget used, waiters from event loops and
plain threads alike, and a dead server or an abandoned run ending every wait
without losing a slot.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from test_serve_endpoint import _Deployment, _group
from test_serve_tiny import tiny_world

from gate.serve.completions import ServerGone, ServerHealth, ServerSlots
from gate.serve.endpoint import EndpointEngine, EndpointOptions


class _Gauge:
    """Counts what is in flight, and the most ever at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.done = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1
            self.done += 1


def test_loops_and_threads_share_one_budget_and_use_all_of_it() -> None:
    slots = ServerSlots(3, ServerHealth())
    gauge = _Gauge()

    async def request() -> None:
        async with slots.slot():
            with gauge:
                await asyncio.sleep(0.01)

    async def many() -> None:
        await asyncio.gather(*(request() for _ in range(15)))

    def blocking() -> None:
        for _ in range(5):
            with slots.slot_blocking(), gauge:
                time.sleep(0.01)

    # three LMs on their own event loops (concurrent candidates), one on lm-eval's serial path
    workers = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    workers.append(threading.Thread(target=blocking))
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert gauge.done == 3 * 15 + 5
    assert gauge.peak == 3 == slots.peak  # never more than the budget, and the budget was used
    assert slots._busy == 0 and not slots._waiters  # nothing leaked: the whole budget is free again


@pytest.mark.parametrize("end", ["abandoned", "server died"])
def test_a_stopped_run_ends_every_wait_and_loses_no_slot(end: str) -> None:
    exited: list[int] = []
    health = ServerHealth(probe=lambda: exited[0] if exited else None)
    slots = ServerSlots(1, health)
    ended: list[BaseException] = []

    async def wait_in_a_loop() -> None:
        async with slots.slot():
            pass

    def run(target) -> None:  # type: ignore[no-untyped-def]
        try:
            target()
        except BaseException as exc:  # ServerGone is a BaseException, as lm-eval's retries need
            ended.append(exc)

    with slots.slot_blocking():  # the only slot is taken: both wait
        waiters = [threading.Thread(target=run, args=(lambda: asyncio.run(wait_in_a_loop()),)),
                   threading.Thread(target=run, args=(lambda: slots.slot_blocking().__enter__(),))]
        for w in waiters:
            w.start()
        time.sleep(0.3)
        assert not ended and all(w.is_alive() for w in waiters)
        t0 = time.monotonic()
        if end == "abandoned":
            health.abandon()
        else:
            exited.append(-9)
        for w in waiters:
            w.join(5)
        assert time.monotonic() - t0 < 2 * ServerSlots.POLL_S + 0.5
    assert len(ended) == 2 and all(isinstance(e, ServerGone) for e in ended)
    assert slots._busy == 0 and not slots._waiters  # the held slot came back; the waiters left the queue


def test_a_waiter_cancelled_as_the_slot_reaches_it_passes_the_slot_on() -> None:
    """The hand-over races the waiter's cancellation (Ctrl-C, a sibling's failure):
    the slot must reach the next waiter, not vanish."""
    slots = ServerSlots(1, ServerHealth())

    async def scenario() -> bool:
        held = slots.slot()
        await held.__aenter__()
        first = asyncio.ensure_future(_enter(slots))
        second = asyncio.ensure_future(_enter(slots))
        await asyncio.sleep(0.05)  # both queued, first in front
        first.cancel()  # its cancellation is on its way...
        await held.__aexit__(None, None, None)  # ...when the slot is handed to it
        await asyncio.wait_for(second, 2)
        return first.cancelled()

    assert asyncio.run(scenario())
    assert slots._busy == 0 and not slots._waiters


async def _enter(slots: ServerSlots) -> None:
    async with slots.slot():
        pass


def _slow_scorer(gauge: _Gauge):  # type: ignore[no-untyped-def]
    """A vLLM deployment's /v1/completions, echo with prompt logprobs, scoring
    slowly and counting the requests in flight."""
    def complete(payload: dict) -> dict:
        with gauge:
            time.sleep(0.02)
        return {"choices": [{"index": i, "text": "", "logprobs": {
            "token_logprobs": [None] + [-1.0] * len(p), "top_logprobs": [None] + [{"x": -1.0}] * len(p)}}
            for i, p in enumerate(payload["prompt"])]}
    return complete


@pytest.mark.heavy
def test_candidates_scored_at_the_same_time_keep_the_servers_budget(tmp_path_factory, tmp_path) -> None:
    from lm_eval.api.instance import Instance

    tiny = tiny_world(tmp_path_factory.getbasetemp() / "tiny-slots")
    gauge = _Gauge()
    scorer = _Deployment(["base", "a", "b", "c"], complete=_slow_scorer(gauge))
    engine = EndpointEngine(EndpointOptions(base_url=scorer.url, num_concurrent=3, batch_size=1))
    requests = [Instance("loglikelihood", {}, (f"question {i} answer", " yes"), i) for i in range(12)]
    out: dict[str, list] = {}
    try:
        with engine.serve(_group(tiny, "a", "b", "c"), tmp_path) as lms:
            lanes = [threading.Thread(target=lambda n=n: out.__setitem__(n, lms[n].loglikelihood(requests)))
                     for n in ("a", "b", "c")]
            for t in lanes:
                t.start()
            for t in lanes:
                t.join(60)
    finally:
        scorer.server.shutdown()
    assert sorted(out) == ["a", "b", "c"]
    # every answer scored: -1 per continuation token, as the stand-in says, the same for each model
    assert out["a"] == out["b"] == out["c"] and len(out["a"]) == 12
    assert all(ll < 0 and ll == int(ll) and greedy for ll, greedy in out["a"])
    # each LM alone allows 3 in flight; three at the same time must still send at most 3 in all
    assert gauge.done == 36 and gauge.peak == 3


@pytest.mark.heavy
def test_abandoning_one_model_stops_every_model_on_its_server(tmp_path_factory, tmp_path) -> None:
    """What a failed or interrupted run calls on each LM (gate.evaluate.score): no model
    on that server sends another request."""
    from lm_eval.api.instance import Instance

    tiny = tiny_world(tmp_path_factory.getbasetemp() / "tiny-slots")
    gauge = _Gauge()
    scorer = _Deployment(["base", "a", "b"], complete=_slow_scorer(gauge))
    engine = EndpointEngine(EndpointOptions(base_url=scorer.url, num_concurrent=2, batch_size=1))
    request = [Instance("loglikelihood", {}, ("question answer", " yes"), 0)]
    try:
        with engine.serve(_group(tiny, "a", "b"), tmp_path) as lms:
            assert len(lms["b"].loglikelihood(request)) == 1 and gauge.done == 1
            lms["a"].abandon()
            for name in ("a", "b"):
                with pytest.raises(ServerGone):
                    lms[name].loglikelihood(request)
    finally:
        scorer.server.shutdown()
    assert gauge.done == 1
