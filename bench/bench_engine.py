"""Engine efficiency (issue 7b): the gate's scoring throughput against the raw engine.

The gate scores through vLLM's OpenAI server (lm-eval's local-completions,
`engine.vllm.batch_size` prompts per HTTP request, 32 by default, with
`num_concurrent` requests in flight, and every rolling text's windows in one
batch). The raw
engine here is vLLM's offline `LLM` API in this process, with the settings the
gate gives its server (float32, enforce_eager, the CPU memory share; the base
alone, so no LoRA and no plugin), fed exactly the token sequences the gate
sent: they are captured from the gate's LM (`batch_loglikelihood_requests`)
during its evaluation, and the raw engine gets them all in one `generate` call
with `SamplingParams(max_tokens=1, prompt_logprobs=1)`.

Scored tokens = the prompt tokens of every loglikelihood request (the
multiple-choice and rolling tasks of the toy suite: toy_sub_mc, toy_capitals,
toy_text; generation tasks are left out, they score no prompt). Timed per run,
server start-up excluded:
- gate, evaluate: `gate.evaluate.evaluate_model` on the served base, all of it
  (lm-eval builds the tasks, requests, metrics and samples);
- gate, requests: the part of it inside lm-eval's request loop (HTTP + engine);
- raw: `LLM.generate` on the same token sequences.
Both sides get one untimed warm-up. A comparison row times the same
evaluation with --batch prompts per HTTP request (default 1, lm-eval's own
default), to show how much of the gap is per-request overhead. The two must agree: the summed
continuation log-likelihoods of the first requests, from both, are compared.

    python bench/bench_engine.py [--runs 3]
Prints a table and writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import median, record, table

LL_TYPES = {"multiple_choice", "loglikelihood", "loglikelihood_rolling"}
TARGET = 0.80
AGREE_TOL = 1e-3  # nats per request (float32 both sides; ENGINE_NOTES measured 1e-5)


class Capture:
    """Wraps a local-completions LM: records the token sequences it sends and the time spent sending."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.requests: list[tuple[list[int], int]] = []
        self.request_s = 0.0
        batch, tokens = lm.batch_loglikelihood_requests, lm._loglikelihood_tokens

        def batch_and_record(chunks: Any) -> Any:
            inputs, ctxlens, keys = batch(chunks)
            self.requests.extend((list(i), int(c)) for i, c in zip(inputs, ctxlens, strict=True))
            return inputs, ctxlens, keys

        def timed(requests: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return tokens(requests, **kwargs)
            finally:
                self.request_s += time.perf_counter() - t

        lm.batch_loglikelihood_requests = batch_and_record
        lm._loglikelihood_tokens = timed

    def reset(self) -> None:
        self.requests, self.request_s = [], 0.0

    def served_loglikelihoods(self, requests: list[tuple[list[int], int]]) -> list[float]:
        """The server's summed continuation log-likelihood of each request, one by one."""
        out = []
        for ids, ctxlen in requests:
            resp = self.lm.model_call(messages=[ids], generate=False)
            out.append(float(self.lm.parse_logprobs(outputs=resp, tokens=[ids], ctxlens=[ctxlen])[0][0]))
        return out


def phase(t0: float, what: str) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)


def raw_loglikelihoods(outputs: Any, requests: list[tuple[list[int], int]]) -> list[float]:
    sums = []
    for out, (ids, ctxlen) in zip(outputs, requests, strict=True):
        lp = out.prompt_logprobs
        sums.append(float(sum(lp[i][ids[i]].logprob for i in range(max(ctxlen, 1), len(ids)))))
    return sums


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check", type=int, default=20, help="requests whose log-likelihoods are compared")
    ap.add_argument("--batch", type=int, default=1,
                    help="comparison row: prompts per HTTP request (lm-eval's batch_size; 1 is lm-eval's default)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from gate import toy
    from gate.cli.demo import demo_config
    from gate.config.load import load_setup
    from gate.config.tasks import include_paths, resolve_tasks, task_manager
    from gate.evaluate.harness import evaluate_model
    from gate.evaluate.plan import plan_tasks
    from gate.serve.factory import make_engine, model_specs

    world = toy.build()
    with tempfile.TemporaryDirectory(prefix="gate-bench-engine-") as tmp:
        work = Path(tmp)
        cfg = demo_config(world, work / "out", "vllm")
        cfg.pop("wandb", None)
        config = work / "gate.yaml"
        config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        setup = load_setup(config)
        tasks, _ = resolve_tasks(setup.suite, setup.suite_file)
        tm = task_manager(include_paths(setup.suite, setup.suite_file))
        plans = [p for p in plan_tasks(tasks, tm) if p.task.output_type in LL_TYPES]
        engine = make_engine(setup.config)
        base = model_specs(setup.config)[0]
        v = setup.config.engine.vllm

        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        from gate.serve.vllm_server import CPU_DEFAULT_MEMORY_UTILIZATION, on_cpu_platform

        mem = v.gpu_memory_utilization or (CPU_DEFAULT_MEMORY_UTILIZATION if on_cpu_platform() else 0.9)
        gate_eval, gate_req, raw, batched = [], [], [], []
        t0 = time.perf_counter()
        with engine.serve([base], work / "logs") as lms:
            phase(t0, "server up")
            cap = Capture(lms[base.name])
            evaluate_model(cap.lm, plans, task_manager=tm, cache_path=None)  # warm-up, untimed
            requests = list(cap.requests)
            phase(t0, f"gate warm-up done: {len(requests)} requests captured")
            llm = LLM(model=base.path, dtype="float32", enforce_eager=bool(v.enforce_eager),
                      gpu_memory_utilization=mem, max_model_len=v.max_model_len,
                      max_num_seqs=v.max_num_seqs or 256, seed=0)
            params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in requests]
            phase(t0, "offline LLM up")
            llm.generate(prompts, params, use_tqdm=False)  # warm-up, untimed
            for _ in range(args.runs):
                cap.reset()
                t = time.perf_counter()
                evaluate_model(cap.lm, plans, task_manager=tm, cache_path=None)
                gate_eval.append(time.perf_counter() - t)
                gate_req.append(cap.request_s)
                if sorted(cap.requests) != sorted(requests):
                    raise SystemExit("the gate sent different requests in two runs; the comparison is void")
                t = time.perf_counter()
                outputs = llm.generate(prompts, params, use_tqdm=False)
                raw.append(time.perf_counter() - t)
                # Experiment, not the gate as shipped: several prompts per HTTP request.
                sent_one = cap.lm._batch_size
                cap.lm._batch_size = args.batch
                t = time.perf_counter()
                evaluate_model(cap.lm, plans, task_manager=tm, cache_path=None)
                batched.append(time.perf_counter() - t)
                cap.lm._batch_size = sent_one
                phase(t0, f"run: gate {gate_eval[-1]:.1f} s, raw {raw[-1]:.1f} s, "
                          f"gate with {args.batch} prompts per request {batched[-1]:.1f} s")
            check = requests[: args.check]
            served = cap.served_loglikelihoods(check)
            del llm  # shut the offline engine down before the server
            phase(t0, "agreement checked")
        phase(t0, "server stopped")
        offline = raw_loglikelihoods(outputs[: args.check], check)
        worst = max(abs(a - b) for a, b in zip(served, offline, strict=True))

    tokens = sum(len(ids) for ids, _ in requests)
    tps = {"gate, evaluate_model": tokens / median(gate_eval), "gate, request loop only": tokens / median(gate_req),
           f"gate with {args.batch} prompt(s)/HTTP request": tokens / median(batched),
           "raw vLLM LLM.generate": tokens / median(raw)}
    raw_tps = tps["raw vLLM LLM.generate"]
    rows = [(name, median(ts), tps[name], tps[name] / raw_tps)
            for name, ts in (("gate, evaluate_model", gate_eval), ("gate, request loop only", gate_req),
                             (f"gate with {args.batch} prompt(s)/HTTP request", batched),
                             ("raw vLLM LLM.generate", raw))]
    table(f"engine efficiency, toy base, {len(requests):,} loglikelihood requests, {tokens:,} scored tokens, "
          f"median of {args.runs}", ["path", "s", "tokens/s", "of raw"], rows)
    ratio = tps["gate, evaluate_model"] / raw_tps
    print(f"gate/raw throughput {ratio:.2f} (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'}); "
          f"served vs offline log-likelihoods on {len(check)} requests: max |diff| {worst:.2e} nats")
    if worst > AGREE_TOL:
        raise SystemExit(f"the server and the offline engine disagree by {worst:.3g} nats: not the same computation")
    record("engine", {
        "tasks": [p.name for p in plans], "requests": len(requests), "scored_tokens": tokens,
        "runs": args.runs, "gate_evaluate_s": gate_eval, "gate_request_loop_s": gate_req, "raw_generate_s": raw,
        "experiment_prompts_per_request": args.batch, "experiment_gate_evaluate_s": batched,
        "rolling_texts_sent_one_at_a_time": sum(p.n_items for p in plans
                                                if p.task.output_type == "loglikelihood_rolling"),
        "tokens_per_s": tps, "ratio_gate_to_raw": ratio,
        "ratio_request_loop_to_raw": tps["gate, request loop only"] / raw_tps,
        "target_ratio": TARGET, "target_met": ratio >= TARGET,
        "agreement": {"requests": len(check), "max_abs_diff_nats": worst},
        "settings": {"dtype": "float32", "enforce_eager": bool(v.enforce_eager), "gpu_memory_utilization": mem,
                     "num_concurrent": v.num_concurrent, "max_num_seqs_server": v.max_num_seqs},
    })


if __name__ == "__main__":
    main()
