"""Rolling log-likelihoods through the OpenAI-compatible LM: every text's windows
in one batch (gate.serve.completions.GateCompletionsLM.loglikelihood_rolling).

The engine is replaced at lm-eval's own seam, `_loglikelihood_tokens`, by a
deterministic scorer, so the test needs no server: what is checked is which
windows reach the engine, in how many calls, and that each text's total and
cache entry are what upstream lm-eval computes text by text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.api_models import TemplateAPI

from gate.serve.completions import ServerHealth, completions_lm
from gate.toy.tokenizer import save_tokenizer

TEXTS = ["the cat sat on the mat. " * 9, "a", "paris is the capital of france. " * 3, "x" * 300]


class Cache:
    def __init__(self) -> None:
        self.partials: list[tuple[str, Any, Any]] = []

    def add_partial(self, method: str, args: Any, result: Any) -> None:
        self.partials.append((method, args, result))


def _lm(tmp_path: Path, calls: list[int]) -> Any:
    save_tokenizer(tmp_path / "tok")
    lm = completions_lm(base_url="http://127.0.0.1:9/v1", served_name="base", tokenizer_dir=str(tmp_path / "tok"),
                        health=ServerHealth(), num_concurrent=4, max_retries=1, timeout_s=5,
                        add_bos_token=True, context=64)

    def score(requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        calls.append(len(requests))
        lm.sent.extend(len(req[1]) + len(req[2]) for req in requests)
        # a deterministic, order-sensitive log-likelihood per window
        return [(-0.001 * sum((i + 1) * t for i, t in enumerate(req[2])) - len(req[1]) / 7, False)
                for req in requests]

    lm.sent = []
    lm._loglikelihood_tokens = score
    return lm


def test_all_windows_go_in_one_call_with_upstream_totals_and_cache(tmp_path: Path) -> None:
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(TEXTS)]
    calls: list[int] = []
    lm = _lm(tmp_path, calls)
    lm.cache_hook = Cache()
    got = lm.loglikelihood_rolling(requests, disable_tqdm=True)

    upstream_calls: list[int] = []
    ref = _lm(tmp_path, upstream_calls)
    ref.cache_hook = Cache()
    want = TemplateAPI.loglikelihood_rolling(ref, requests, disable_tqdm=True)

    assert got == want  # bit-identical: same windows, summed in the same order
    assert len(upstream_calls) == len(TEXTS) and len(calls) == 1
    assert calls[0] == sum(upstream_calls) > len(TEXTS)  # long texts have several windows
    assert lm.cache_hook.partials == ref.cache_hook.partials


def test_no_texts_makes_no_call(tmp_path: Path) -> None:
    calls: list[int] = []
    lm = _lm(tmp_path, calls)
    lm.cache_hook = Cache()
    assert lm.loglikelihood_rolling([]) == [] and calls == []


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_window_fits_the_served_context_and_the_longest_fills_it(tmp_path: Path) -> None:
    """A prompt sent for scoring holds the window and its scored tokens: it must leave the
    server room for one generated token (vLLM refuses a prompt that fills its context,
    even to score it), and the windows use all the rest."""
    calls: list[int] = []
    lm = _lm(tmp_path, calls)
    lm.cache_hook = Cache()
    lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("x" * 300,), 0)], disable_tqdm=True)
    assert max(lm.sent) == 63 and len(lm.sent) > 4  # context 64


def test_the_served_context_is_the_models_unless_the_server_was_given_one(tmp_path: Path) -> None:
    import json

    from gate.serve.completions import served_context

    save_tokenizer(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    assert served_context(str(tmp_path / "m"), None) == 512  # lm-eval's API models assumed 2048
    assert served_context(str(tmp_path / "m"), 128) == 128  # engine.vllm.max_model_len
