"""An answer longer than a served prompt can hold is the input's problem (exit 2), found
before any request is sent, not a server error after minutes of retries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gate.errors import EXIT_INPUT, InputError
from gate.serve.completions import ServerHealth, completions_lm

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "tiny_model.py"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("tiny_model", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("tok")
    module.build_tokenizer(out)
    return out


def _lm(tokenizer_dir: Path, context: int):  # type: ignore[no-untyped-def]
    return completions_lm(base_url="http://127.0.0.1:9/v1", served_name="base", tokenizer_dir=str(tokenizer_dir),
                          health=ServerHealth(), num_concurrent=1, max_retries=1, timeout_s=5,
                          add_bos_token=False, context=context)


def test_an_answer_that_leaves_no_room_for_context_is_refused_with_the_fix(tokenizer_dir: Path) -> None:
    lm = _lm(tokenizer_dir, context=64)
    long_answer = list(range(5, 5 + 70))
    with pytest.raises(InputError) as info:
        lm.batch_loglikelihood_requests([[(("q", "a"), [3, 4], [6, 7])], [(("q", "b"), [3, 4], long_answer)]])
    err = info.value
    assert err.exit_code == EXIT_INPUT
    assert "an answer of 70 tokens does not fit the served context: a prompt holds 63 tokens" in str(err)
    assert "max_model_len" in (err.problems[0].fix or "") and err.problems[0].key == "engine.vllm.max_model_len"


def test_long_contexts_are_left_truncated_as_lm_eval_does(tokenizer_dir: Path) -> None:
    lm = _lm(tokenizer_dir, context=64)
    inputs, ctxlens, _ = lm.batch_loglikelihood_requests([[(("q", "a"), list(range(100)), [6, 7])]])
    assert len(inputs[0]) == 63 and inputs[0][-2:] == [6, 7] and ctxlens == [61]
