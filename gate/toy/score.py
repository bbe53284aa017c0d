"""A small in-process scorer for the toy tasks, equivalent to lm-eval's `hf` model.

Used while building (to check a world has the properties the gate's tests rely
on) and by the slow world test, because starting lm-eval five times costs more
than the whole build. It follows lm-eval's rules: `<s>` + prompt as context;
multiple choice picks the highest summed log-probability of delimiter + choice
(`acc`); generation is greedy until a newline (`exact_match`); rolling
loglikelihood sums the text's log-probabilities after `<s>` (`word_perplexity`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from gate.toy.suite import TaskSpec, task_specs
from gate.toy.tokenizer import vocabulary


def _ids(text: str) -> list[int]:
    vocab = vocabulary()
    return [vocab[ch] for ch in text]


@torch.no_grad()
def _logprobs(model: torch.nn.Module, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Per sequence: log p(token_t | tokens_<t) for t >= 1."""
    pad = vocabulary()["<pad>"]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return [logp[i, : len(s) - 1] for i, s in enumerate(seqs)]


def _multiple_choice(model: torch.nn.Module, spec: TaskSpec) -> list[float]:
    bos = vocabulary()["<s>"]
    delim = spec.fields.get("target_delimiter", " ")
    seqs, spans = [], []
    for doc in spec.docs:
        ctx = [bos, *_ids(doc["prompt"])]
        for choice in doc["choices"]:
            cont = _ids(delim + choice)
            seqs.append(ctx + cont)
            spans.append(len(cont))
    scores: list[float] = []
    for start in range(0, len(seqs), 256):
        chunk = seqs[start : start + 256]
        for lp, n in zip(_logprobs(model, chunk), spans[start : start + 256], strict=True):
            scores.append(float(lp[-n:].sum()))
    out = []
    for i, doc in enumerate(spec.docs):
        k = len(doc["choices"])
        row = scores[i * k : (i + 1) * k]
        out.append(float(max(range(k), key=row.__getitem__) == doc["label"]))
    return out


@torch.no_grad()
def _generate(model: torch.nn.Module, spec: TaskSpec, max_new: int = 8) -> list[float]:
    vocab = vocabulary()
    inv = {i: t for t, i in vocab.items()}
    bos = vocab["<s>"]
    by_len: dict[int, list[int]] = defaultdict(list)
    prompts = [[bos, *_ids(d["prompt"])] for d in spec.docs]
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    result = [0.0] * len(spec.docs)
    for idxs in by_len.values():
        ids = torch.tensor([prompts[i] for i in idxs])
        texts = [""] * len(idxs)
        done = [False] * len(idxs)
        for _ in range(max_new):
            nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
            for j, tok in enumerate(nxt.tolist()):
                ch = inv[tok]
                if not done[j]:
                    if ch == "\n" or tok == vocab["</s>"]:
                        done[j] = True
                    else:
                        texts[j] += ch if len(ch) == 1 else ""
            if all(done):
                break
            ids = torch.cat([ids, nxt[:, None]], dim=1)
        for j, i in enumerate(idxs):
            result[i] = float(texts[j] == spec.docs[i]["answer"])
    return result


def _word_perplexity(model: torch.nn.Module, spec: TaskSpec) -> float:
    bos = vocabulary()["<s>"]
    seqs = [[bos, *_ids(d["text"])] for d in spec.docs]
    total = sum(float(lp.sum()) for lp in _logprobs(model, seqs))
    words = sum(len(d["text"].split()) for d in spec.docs)
    return math.exp(-total / words)


def score_task(model: torch.nn.Module, spec: TaskSpec) -> float:
    """The task's headline metric: acc / exact_match in points (0-100), or word perplexity."""
    model.eval()
    if spec.metric == "acc":
        return 100 * sum(_multiple_choice(model, spec)) / len(spec.docs)
    if spec.metric == "exact_match":
        return 100 * sum(_generate(model, spec)) / len(spec.docs)
    return _word_perplexity(model, spec)


def score_model(model: torch.nn.Module) -> dict[str, Any]:
    """Per-task metrics and per-tier means of the accuracy-like metrics (points)."""
    tasks = {spec.name: score_task(model, spec) for spec in task_specs()}
    tiers: dict[str, float] = {}
    for tier in ("target", "related", "general"):
        vals = [tasks[s.name] for s in task_specs() if s.tier == tier and s.metric != "word_perplexity"]
        tiers[tier] = sum(vals) / len(vals)
    return {"tasks": tasks, "tiers": tiers}
