"""lm-eval's `local-completions` LM, made to fail fast when its server is gone.

Why: lm-eval retries every failed request (tenacity, exponential back-off) and
waits up to `timeout` seconds per request; against a dead server that is
minutes of silence before an unhelpful error. Each LM here holds a
`ServerHealth`; a watchdog thread (vllm_server) marks it dead when the server
process exits. Before each request, and after a request fails, the LM asks the
health object; if the server is dead it raises `ServerGone`, a BaseException
so that lm-eval's tenacity retries (which retry every `Exception`) do not
catch it. `serve()` turns it into an EngineError with the server log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from lm_eval.models.openai_completions import LocalCompletionsAPI


class ServerGone(BaseException):
    """The server behind an LM died; not an Exception so retries do not swallow it."""


class ServerHealth:
    """Shared between a server's watchdog and its LMs: is the server still alive?"""

    def __init__(self, probe: Callable[[], int | None] | None = None) -> None:
        self._probe = probe  # returns an exit code once the process has exited
        self._dead = threading.Event()
        self._abandoned = threading.Event()
        self.exit_code: int | None = None

    def mark_dead(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self._dead.set()

    @property
    def dead(self) -> bool:
        if not self._dead.is_set() and self._probe is not None:
            code = self._probe()
            if code is not None:
                self.mark_dead(code)
        return self._dead.is_set()

    def abandon(self) -> None:
        """The run is stopping (another candidate failed, or Ctrl-C): every LM's
        next request raises instead of reaching the server, so the threads of
        concurrent candidates end. The server is not called dead."""
        self._abandoned.set()

    def check(self) -> None:
        if self.dead:
            raise ServerGone(f"the server exited with code {self.exit_code}")
        if self._abandoned.is_set():
            raise ServerGone("the evaluation was abandoned")


class ServerSlots:
    """The requests in flight to one server, shared by every LM that scores on it.

    Why: lm-eval's API model keeps up to `num_concurrent` requests of
    `batch_size` prompts in flight, per LM, and the gate makes one LM per
    served model. Scored at the same time, four candidates put four times the
    base's work in the engine's queue (1,024 prompts with the defaults). On a
    slow engine (SmolLM2-135M with LoRA on two CPU cores scores about 200
    prompt tokens a second) a request then waits in the queue longer than
    `request_timeout_s`: it is abandoned and sent again, the engine's work on
    it thrown away, and after `max_retries` the run fails as an engine error.
    With one budget per server the engine's queue is as long as for one model
    scored alone.

    Waiters are served first come, first served, across all the server's LMs:
    a candidate whose evaluation asked first is served first, and the
    adapters' requests share the engine's batches where their turns meet
    (not the round robin a fairer scheduler would give; a follow-up). A
    waiter is a coroutine of one LM's event loop (each concurrent candidate
    runs its own, in its own thread) or a thread on lm-eval's
    one-request-at-a-time path. It asks the server's health twice a second,
    so a dead server or an abandoned run ends the wait as it ends a request.
    """

    POLL_S = 0.5

    def __init__(self, limit: int, health: ServerHealth) -> None:
        self.limit = limit
        self._health = health
        self._lock = threading.Lock()
        self._busy = 0
        self._waiters: deque[Callable[[], bool]] = deque()
        #: the most requests ever in flight at once (what the tests check)
        self.peak = 0

    def _take_or_queue(self, wake: Callable[[], bool]) -> bool:
        with self._lock:
            if self._busy < self.limit and not self._waiters:
                self._busy += 1
                self.peak = max(self.peak, self._busy)
                return True
            self._waiters.append(wake)
            return False

    def _withdraw(self, wake: Callable[[], bool]) -> bool:
        """Leave the queue; False when a release has already handed this waiter the slot."""
        with self._lock:
            try:
                self._waiters.remove(wake)
            except ValueError:
                return False
            return True

    def release(self) -> None:
        """Free a slot, or hand it to the first waiter that can still take it."""
        while True:
            with self._lock:
                if not self._waiters:
                    self._busy -= 1
                    return
                wake = self._waiters.popleft()
            if wake():
                return

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the server's slots for a request sent from an event loop."""
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def grant() -> None:  # runs in the waiter's loop
            if granted.done():  # it stopped waiting meanwhile: the slot goes on
                self.release()
            else:
                granted.set_result(None)

        def wake() -> bool:
            try:
                loop.call_soon_threadsafe(grant)
            except RuntimeError:  # its loop is closed
                return False
            return True

        if not self._take_or_queue(wake):
            try:
                while True:
                    try:
                        await asyncio.wait_for(asyncio.shield(granted), self.POLL_S)
                        break
                    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                        self._health.check()
            except BaseException:
                if not self._withdraw(wake):  # handed over already, or the hand-over is on its way
                    if granted.done() and not granted.cancelled():
                        self.release()
                    else:
                        granted.cancel()  # grant() will see it and pass the slot on
                raise
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def slot_blocking(self) -> Iterator[None]:
        """Hold one of the server's slots for a request sent from a plain thread."""
        ready = threading.Event()

        def wake() -> bool:
            ready.set()
            return True

        if not self._take_or_queue(wake):
            try:
                while not ready.wait(self.POLL_S):
                    self._health.check()
            except BaseException:
                if not self._withdraw(wake):  # wake() ran: the slot is this thread's
                    self.release()
                raise
        try:
            yield
        finally:
            self.release()


def bos_by_default(tokenizer_dir: str, trust_remote_code: bool = False,
                   revision: str | None = None) -> bool:
    """Does the tokenizer prepend BOS by default (as lm-eval's hf model would)?

    The BOS trap (ENGINE_NOTES): local-completions defaults add_bos_token=False,
    while the hf model uses the tokenizer default; a mismatch changes scores.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code,
                                        revision=revision)
    bos = tok.bos_token_id
    ids = tok("a").input_ids
    return bos is not None and len(ids) > 0 and ids[0] == bos


def served_context(tokenizer_dir: str, max_model_len: int | None, trust_remote_code: bool = False,
                   revision: str | None = None) -> int:
    """The model's context on the server, in tokens: `max_model_len` when set
    (the server was started with it), else the model's context length resolved as
    lm-eval's hf model resolves it (config's n_positions / max_position_embeddings /
    n_ctx, then the tokenizer's model_max_length, then 2048).

    lm-eval's API models otherwise assume 2048 whatever the model: a perplexity
    text longer than a 512-token model's context was sent as one 2046-token
    window the server refused, and on an 8k model the windows were a quarter of
    the hf model's, so the same text got another log-likelihood."""
    if max_model_len:
        return max_model_len
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code, revision=revision)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code, revision=revision)
    return int(resolve_max_length(config, tok))


def _timeout_errors() -> tuple[type[BaseException], ...]:
    """What a request that ran past lm-eval's `timeout` raises: aiohttp's on the
    concurrent path (asyncio's TimeoutError, a distinct class before Python
    3.11), requests' on the one-at-a-time path."""
    import requests

    return (TimeoutError, asyncio.TimeoutError, requests.exceptions.Timeout)


class _KeyedOnly:
    """A cache hook that ignores writes whose key is None (see set_cache_hook)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if req is not None:
            self._inner.add_partial(attr, req, res)


class GateCompletionsLM(LocalCompletionsAPI):
    """local-completions with a health check around every request, each request
    holding one of its server's slots (`ServerSlots`)."""

    def __init__(self, *, health: ServerHealth, slots: ServerSlots, api_key: str | None = None,
                 options_key: str = "engine.vllm", **kwargs: Any) -> None:
        self._health = health
        self._slots = slots
        self._api_key = api_key or ""
        self._options_key = options_key
        super().__init__(**kwargs)

    @contextlib.contextmanager
    def _timeouts_explained(self) -> Iterator[None]:
        """A request that timed out on every try is an engine slower than the
        config allows: say which settings, with their values, instead of
        lm-eval's bare `TimeoutError` (no message, and the fix is in gate.yaml)."""
        try:
            yield
        except _timeout_errors() as exc:
            from gate.errors import EngineError

            self._health.check()  # a server that died is reported as that, not as slow
            key = self._options_key
            raise EngineError(
                f"the served model {self.model!r} answered no request within {self.timeout} s, "
                f"{max(1, self.max_retries)} tries in a row ({self._batch_size} prompt(s) a request, up to "
                f"{self._concurrent} request(s) in flight on the server): the engine is slower than the "
                "timeout allows",
                key=f"{key}.request_timeout_s",
                fix=f"raise {key}.request_timeout_s, or lower {key}.batch_size so each request holds fewer "
                    "prompts; the server log in the output folder shows the engine's throughput; a rerun "
                    "resumes from the cache") from exc

    def _loglikelihood_tokens(self, requests: Any, **kwargs: Any) -> Any:
        with self._timeouts_explained():
            return super()._loglikelihood_tokens(requests, **kwargs)

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        with self._timeouts_explained():
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    @property
    def api_key(self) -> str:  # never logged; sent only as the Authorization header
        return self._api_key

    def abandon(self) -> None:
        """The run is over (a sibling failed, or Ctrl-C): this LM's next request, and
        every wait for a slot on its server, ends with `ServerGone`."""
        self._health.abandon()

    def set_cache_hook(self, cache_hook: Any) -> None:
        """Skip cache writes for requests without a cache key.

        lm-eval 0.4.13's concurrent path calls `cache_hook.add_partial(...,
        None, ...)` for the windows of a loglikelihood_rolling request (their
        cache key is None by design), and `hash_args` then raises
        "'NoneType' object is not iterable" inside the request, which tenacity
        retries until the evaluation fails. The whole string's result is still
        cached by `loglikelihood_rolling` itself.
        """
        super().set_cache_hook(_KeyedOnly(cache_hook))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """lm-eval 0.4.13's rolling log-likelihood, with every text's windows in one batch.

        Upstream scores one text at a time (one `_loglikelihood_tokens` call per
        string), so a perplexity task runs at a concurrency of one request
        however many the engine could batch: on the toy suite its 150 texts
        took most of the evaluation time (bench/bench_engine.py). The windows
        are built exactly as upstream builds them and each text's window
        log-likelihoods are summed in the same order, so every number is
        bit-identical; each text's total is cached as upstream caches it.
        """
        from lm_eval import utils

        per_text: list[list[Any]] = []
        for (string,) in [req.args for req in requests]:
            rolling = utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length - 1, context_len=1)
            per_text.append([(None, *utils.make_disjoint_window(w)) for w in rolling])
        flat = [w for windows in per_text for w in windows]
        scored = self._loglikelihood_tokens(flat, disable_tqdm=disable_tqdm) if flat else []
        out: list[float] = []
        at = 0
        for (string,), windows in zip([req.args for req in requests], per_text, strict=True):
            total = sum(x[0] for x in scored[at:at + len(windows)])
            at += len(windows)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out

    def batch_loglikelihood_requests(self, chunks: Any) -> Any:
        """lm-eval's batching, refusing an answer longer than a prompt can hold.

        lm-eval keeps an over-long request's last `max_length` tokens; when the
        answer alone is that long no context is left, and lm-eval 0.4.13's
        completions parser then fails on an assertion inside the request, which
        is retried and ends the run as a server error (exit 3) after minutes of
        serving. The items do not fit the served model: that is the input's
        problem, said with the numbers and the fix.
        """
        from gate.errors import InputError

        chunks = [list(chunk) for chunk in chunks]
        for chunk in chunks:
            for _key, _context, continuation_enc in chunk:
                if len(continuation_enc) >= self.max_length:
                    answer = self.decode_batch([continuation_enc])[0] if hasattr(self, "decode_batch") else ""
                    head = answer[:60].replace("\n", " ")
                    raise InputError(
                        f"an answer of {len(continuation_enc)} tokens does not fit the served context: a prompt holds "
                        f"{self.max_length} tokens with its context (the answer begins {head!r}...)",
                        key="engine.vllm.max_model_len",
                        fix="serve a longer context (max_model_len, where the model supports it), gate with a "
                            "model of a longer context, or remove the task from the suite")
        return super().batch_loglikelihood_requests(chunks)

    def model_call(self, *args: Any, **kwargs: Any) -> Any:
        self._health.check()
        with self._slots.slot_blocking():
            try:
                return super().model_call(*args, **kwargs)
            except Exception:
                self._health.check()
                raise

    async def amodel_call(self, *args: Any, **kwargs: Any) -> Any:
        self._health.check()
        async with self._slots.slot():  # taken before lm-eval's timeout starts: a wait here is no timeout
            try:
                return await super().amodel_call(*args, **kwargs)
            except Exception:
                self._health.check()
                raise


def completions_lm(*, base_url: str, served_name: str, tokenizer_dir: str, health: ServerHealth,
                   num_concurrent: int, max_retries: int, timeout_s: float,
                   add_bos_token: bool, context: int, batch_size: int = 1,
                   api_key: str | None = None, trust_remote_code: bool = False,
                   revision: str | None = None, slots: ServerSlots | None = None,
                   options_key: str = "engine.vllm") -> GateCompletionsLM:
    """One LM per served model name, all scoring through `/v1/completions`.

    slots: the server's request slots, shared by every LM made for one server
    (`ServerSlots`); `num_concurrent` is then the server's number of requests
    in flight, however many models are scored at the same time. None: a budget
    of `num_concurrent` for this LM alone.
    options_key: where the engine's options sit in gate.yaml (`engine.vllm`,
    `engine.endpoint`), named by the error a run of timeouts ends in.

    tokenized_requests=True: lm-eval tokenizes with the base tokenizer and sends
    token ids, so the context/continuation split is the same as the hf engine's
    (sending strings lets the server re-tokenize the joined text differently).
    context: the model's context on the server (`served_context`). vLLM keeps
    room for one generated token even when a request only scores its prompt
    (echo), so a prompt holds at most context - 1 tokens; lm-eval's API model
    keeps one token of its `max_length` for generation, so `max_length=context`
    gives exactly that: every prompt fits, and a rolling window fills one whole
    prompt. Its windows are then two tokens shorter than the hf model's (which
    holds the whole context and does not send the last token): texts shorter
    than the context score exactly as lm-eval's hf model scores them, longer
    ones within about 1e-3.
    batch_size: prompts per HTTP request (lm-eval's `batch_size` for API models).
    A small model scores a prompt in about the time the HTTP round trip and
    JSON take, so one prompt per request leaves the engine mostly idle
    (bench/bench_engine.py); the server batches the prompts all the same.
    """
    kwargs: dict[str, Any] = {
        "base_url": base_url.rstrip("/") + "/completions" if base_url.rstrip("/").endswith("/v1")
        else base_url,
        "model": served_name,
        "tokenizer": tokenizer_dir,
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        "num_concurrent": num_concurrent,
        "batch_size": batch_size,
        "max_retries": max_retries,
        "timeout": int(timeout_s),
        "add_bos_token": add_bos_token,
        "trust_remote_code": trust_remote_code,
        "max_length": context,
    }
    if revision:
        kwargs["revision"] = revision
    return GateCompletionsLM(health=health, slots=slots or ServerSlots(num_concurrent, health), api_key=api_key,
                             options_key=options_key, **kwargs)
