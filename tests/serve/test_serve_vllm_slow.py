"""The vllm engine against a real vLLM server on the tiny model (slow: ~1 min per start).

What a user relies on: scores through vLLM equal the transformers+PEFT
reference, adapters are not mixed up, the CPU LoRA fix (gate.serve.vllm_plugin)
changes nothing but speed, a dying server is an EngineError within seconds, and
nothing is left running afterwards.
"""

from __future__ import annotations

import contextlib
import time

import psutil
import pytest
from test_serve_tiny import TASK, tiny_world, write_tiny_task

from gate.errors import EngineError
from gate.serve.base import ModelSpec
from gate.serve.hf import HfEngine
from gate.serve.vllm_server import VllmEngine, VllmOptions

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
pytest.importorskip("vllm")  # the optional extra forgetting-gate[cpu] / [vllm]


def _group(tiny):
    base = str(tiny["base"])
    return [ModelSpec("base", "base", base, base),
            ModelSpec("lora", "lora", str(tiny["lora"]), base),
            ModelSpec("lora_zero", "lora", str(tiny["lora_zero"]), base)]


def per_item_loglikelihoods(lm, include_path) -> dict[int, list[float]]:
    """doc_id -> loglikelihood of every choice, through lm-eval's real path."""
    import lm_eval

    from gate.config.tasks import task_manager

    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], log_samples=True, bootstrap_iters=0,
                                  task_manager=task_manager((str(include_path),)))
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in out["samples"][TASK]}


def _opts(**kw) -> VllmOptions:
    return VllmOptions(dtype="float32", enforce_eager=True, num_concurrent=4,
                       health_timeout_s=400, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tiny = tiny_world(tmp_path_factory.getbasetemp() / "tiny")
    task = write_tiny_task(tmp_path_factory.mktemp("task"), n=40)
    return tiny, task


@pytest.fixture(scope="module")
def reference(world):
    """The hf engine's per-item loglikelihoods: the reference."""
    tiny, task = world
    with HfEngine().serve(_group(tiny), tiny["base"].parent) as lms:
        return {name: per_item_loglikelihoods(lm, task) for name, lm in lms.items()}


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """One server (CPU LoRA fix on, 4 sequences per batch) shared by the module."""
    tiny, task = world
    engine = VllmEngine(_opts(max_num_seqs=4))
    log_dir = tmp_path_factory.mktemp("logs")
    with engine.serve(_group(tiny), log_dir) as lms:
        t0 = time.monotonic()
        scores = {name: per_item_loglikelihoods(lm, task) for name, lm in lms.items()}
        scores_s = time.monotonic() - t0
        yield engine, lms, scores, scores_s


def _max_diff(a: dict[int, list[float]], b: dict[int, list[float]]) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True))


def test_server_lists_base_and_each_adapter(served):
    engine, lms, _, _ = served
    assert set(lms) == {"base", "lora", "lora_zero"}
    cmd = engine.last_server.cmd
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    print(f"\nserver start: {engine.last_server.started_s:.1f} s")


def test_vllm_matches_hf_reference_per_item(served, reference):
    _, _, scores, scores_s = served
    print(f"\nscoring 3 models x 40 docs x 3 choices (max-num-seqs 4 + fix): {scores_s:.1f} s")
    for name in ("base", "lora", "lora_zero"):
        diff = _max_diff(scores[name], reference[name])
        print(f"{name}: max |vLLM - hf| = {diff:.2e} nats")
        assert diff < 1e-3, name


def test_adapters_are_not_mixed_up(served):
    _, _, scores, _ = served
    assert _max_diff(scores["lora"], scores["base"]) > 0.1


def test_zero_b_adapter_scores_exactly_like_the_base(served):
    _, _, scores, _ = served
    assert scores["lora_zero"] == scores["base"]


ROLLING = "gate_tiny_text"


def _rolling_task(root, lengths):
    """A perplexity task (loglikelihood_rolling) of texts `lengths` words long."""
    import json
    import random

    rng = random.Random(0)
    words = ["the", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs", "far", "away", "today"]
    rows = [{"text": " ".join(rng.choice(words) for _ in range(n))} for n in lengths]
    (root / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{ROLLING}.yaml").write_text(
        f"task: {ROLLING}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {root / 'text.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\nmetadata:\n  version: 1\n")
    return root


def _rolling(lm, include):
    import lm_eval

    from gate.config.tasks import task_manager

    out = lm_eval.simple_evaluate(model=lm, tasks=[ROLLING], log_samples=True, bootstrap_iters=0,
                                  task_manager=task_manager((str(include),)))
    per_doc = {s["doc_id"]: tuple(s["word_perplexity"]) for s in out["samples"][ROLLING]}
    return per_doc, out["results"][ROLLING]["word_perplexity,none"]


def test_rolling_loglikelihoods_equal_lm_evals_hf_model_and_long_texts_fit_the_server(
        world, served, tmp_path):
    """Perplexity through the server against lm-eval's own `hf` model (what users run,
    `lm_eval --model hf`): texts within the 512-token context score the same; texts up to
    four times the context are scored in windows that fit the server (lm-eval's API
    models assumed a 2048-token context and sent windows the server refused), each
    within 1e-3 of lm-eval's log-likelihood (measured: 4e-4; the served windows are two
    tokens shorter, so a few tokens per window see less context)."""
    from lm_eval.models.huggingface import HFLM

    tiny, _ = world
    _, lms, _, _ = served
    include = _rolling_task(tmp_path, [8, 40, 200, 300, 700])
    reference, ref_ppl = _rolling(HFLM(pretrained=str(tiny["base"]), dtype="float32", device="cpu",
                                       batch_size=1), include)
    got, ppl = _rolling(lms["base"], include)
    tok = lms["base"].tokenizer
    for doc, (ll, _words) in reference.items():
        text_tokens = len(tok(json_text(include, doc)).input_ids)
        gap = abs(got[doc][0] - ll)
        print(f"doc {doc}: {text_tokens} tokens, served {got[doc][0]:.4f}, hf {ll:.4f}, |diff| {gap:.2e}")
        if text_tokens < 510:
            assert gap < 1e-3, doc
        else:
            assert gap / abs(ll) < 1e-3, doc
    print(f"word perplexity: served {ppl:.6f}, lm-eval hf {ref_ppl:.6f}")
    # this random model spends 6 nats a token, so 4e-4 of the log-likelihood is 0.45%
    # of the perplexity over these long texts (README: what the number means)
    assert abs(ppl - ref_ppl) / ref_ppl < 1e-2


def json_text(include, doc):
    import json

    return json.loads((include / "text.jsonl").read_text().splitlines()[doc])["text"]


def test_cpu_lora_fix_was_loaded_in_the_engine(served):
    engine, _, _, _ = served
    from gate.serve.vllm_server import on_cpu_platform

    if not on_cpu_platform():
        pytest.skip("the fix applies to vLLM-CPU only")
    log = engine.last_server.log_path.read_text()
    assert "gate: patched PunicaWrapperCPU.add_lora_logits" in log
    assert "--max-num-seqs 4" in log.splitlines()[0]


def test_one_seq_server_agrees_with_fixed_batching_then_dies_loudly(world, served, tmp_path):
    """max-num-seqs 1 (no fix) gives the same numbers; killing it is an EngineError."""
    tiny, task = world
    _, _, batched, batched_s = served
    engine = VllmEngine(_opts(cpu_lora_fix=False, max_num_seqs=4))
    pgid = None
    with (pytest.raises(EngineError, match="died during the evaluation") as err,
          engine.serve(_group(tiny), tmp_path) as lms):
        server = engine.last_server
        pgid = server.proc.pid
        assert "--max-num-seqs 1" in " ".join(server.cmd)
        t0 = time.monotonic()
        one = {name: per_item_loglikelihoods(lm, task) for name, lm in lms.items()}
        one_s = time.monotonic() - t0
        print(f"\nscoring with max-num-seqs 1: {one_s:.1f} s; with the fix: {batched_s:.1f} s")
        for name in one:
            diff = _max_diff(one[name], batched[name])
            print(f"{name}: max |seqs1 - seqs4+fix| = {diff:.2e}")
            assert diff < 1e-4
        for child in psutil.Process(server.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()  # the engine core dies; the API server follows
        t_kill = time.monotonic()
        per_item_loglikelihoods(lms["lora"], task)
    assert time.monotonic() - t_kill < 30
    assert "exit code" in str(err.value)
    assert _left_in_group(pgid) == []


def _left_in_group(pgid, wait_s: float = 5.0):
    """Live processes of the server's group (a zombie has exited: it holds no memory,
    port or device, and whether it is reaped is up to the container's PID 1, as the
    other fault tests count it)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess):
                if _pgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
