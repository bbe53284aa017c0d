"""The lm-eval boundary: lm-eval's stringly output in, `TaskRecords` out.

lm-eval 0.4 reports a task as `"metric,filter"` keys, `"N/A"` stderrs and
per-sample rows whose metric values are floats (acc, exact_match) or
`[loglikelihood, words|bytes]` pairs (word_perplexity, byte_perplexity,
bits_per_byte), or SCROLLS' `[prediction, references]` for ROUGE, scored per
document here (gate.evaluate.rouge). It writes the same rows in two shapes:

* in process, `simple_evaluate(..., log_samples=True)["samples"][task]`:
  `arguments` is a list of request tuples, `filtered_resps` holds native
  values (`(loglikelihood, is_greedy)` tuples for multiple choice), `target`
  is the raw doc_to_target (an int index for multiple choice);
* on disk, `samples_<task>_<date>.jsonl` from `--log_samples`: `arguments` is
  `{"gen_args_<i>": {"arg_<j>": ...}}`, every `resps`/`filtered_resps` leaf
  is a *string*, `target` is `str(target)`.

Both are parsed here, once, with the same code; nothing downstream ever sees
an lm-eval dict. The aggregation is read from the task config's
`metric_list[i]["aggregation"]` (or lm-eval's metric registry when the task
uses default metrics) and checked against the shape of the per-sample value;
the recomputed score is checked against lm-eval's reported one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import InputError
from gate.evaluate.plan import config_digest
from gate.evaluate.records import Aggregation, ItemKey, ItemText, TaskRecords
from gate.evaluate.rouge import REPORTED_DECIMALS, document_rouge, is_rouge_pair

__all__ = ["candidate_kind", "group_leaves", "records_from_evaluation", "records_from_output_dir"]

#: lm-eval aggregation names whose result is a ratio of per-item sums.
_RATIO_AGGREGATIONS = {
    "mean": Aggregation.MEAN,
    "weighted_perplexity": Aggregation.WEIGHTED_PERPLEXITY,
    "bits_per_byte": Aggregation.BITS_PER_BYTE,
    # exp(-mean(ll)): a weighted perplexity whose weights are all 1.
    "perplexity": Aggregation.WEIGHTED_PERPLEXITY,
}
_MAX_LISTED = 20
_PAIRING_FIX = "evaluate both models on the same task version and item selection"
_LOG_SAMPLES_FIX = "run lm_eval with --log_samples"


@dataclass(frozen=True)
class _SamplesReading:
    """What to read from a task's samples, decided from the aggregated results."""

    task: str
    metric: str
    filter: str
    aggregation: Aggregation
    higher_is_better: bool
    output_type: str
    target_delimiter: str
    reported_score: float | None
    reported_stderr: float | None
    version: str | None
    config_hash: str
    source: str
    #: a SCROLLS summary task: per-document ROUGE computed here (gate.evaluate.rouge)
    per_document_rouge: bool = False


# ----------------------------------------------------------------------------
# public API


def records_from_evaluation(results: Mapping[str, Any], *,
                            metrics: Mapping[str, str] | None = None,
                            clusters: Mapping[str, str] | None = None) -> dict[str, TaskRecords]:
    """TaskRecords per task from `lm_eval.simple_evaluate(..., log_samples=True)`.

    `clusters` maps a task to the document field its items cluster by."""
    samples = results.get("samples")
    if not isinstance(samples, Mapping):
        raise InputError("the lm-eval result has no per-sample records", key="samples",
                         fix="call lm_eval.simple_evaluate with log_samples=True")
    plans = _plans(results, metrics, source="lm-eval result")
    out: dict[str, TaskRecords] = {}
    for task, plan in plans.items():
        if task not in samples:
            raise InputError(f"no samples for task {task!r}", key=f"samples.{task}",
                             fix="call lm_eval.simple_evaluate with log_samples=True")
        out[task] = _build(plan, samples[task], (clusters or {}).get(task))
    return out


def records_from_output_dir(path: Path, *, metrics: Mapping[str, str] | None = None,
                            clusters: Mapping[str, str] | None = None,
                            ) -> tuple[dict[str, TaskRecords], dict[str, Any]]:
    """TaskRecords per task from an `lm_eval --output_path DIR --log_samples` folder.

    `path` is the model subfolder lm-eval creates or its parent (when it holds
    exactly one model subfolder). The newest `results_<date>.json` is used with
    the `samples_<task>_<date>.jsonl` files of the same date; samples are
    streamed line by line. Returns the records and the results json itself
    (provenance: lm_eval_version, config.model_args, configs).
    """
    folder = _model_folder(Path(path))
    results_files = sorted(folder.glob("results_*.json"), key=lambda p: p.name)
    if not results_files:
        raise InputError("no results_<date>.json in the lm-eval output folder", file=str(folder),
                         fix=f"point at the folder given to --output_path; {_LOG_SAMPLES_FIX}")
    results_file = results_files[-1]  # ISO dates in the name sort chronologically
    date = results_file.name[len("results_"):-len(".json")]
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read lm-eval results: {exc}", file=str(results_file),
                         fix="rerun lm_eval; the file is damaged") from exc
    groups = group_leaves(results)
    plans = _plans(results, _per_leaf(metrics, groups), source=str(results_file))
    clusters = _per_leaf(clusters, groups)
    out: dict[str, TaskRecords] = {}
    for task, plan in plans.items():
        samples_file = folder / f"samples_{task}_{date}.jsonl"
        if not samples_file.is_file():
            raise InputError(f"missing per-sample file for task {task!r}", file=str(samples_file),
                             fix=_LOG_SAMPLES_FIX)
        out[task] = _build(replace(plan, source=str(samples_file)), _read_jsonl(samples_file),
                           (clusters or {}).get(task))
    return out, results


def group_leaves(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each group lm-eval evaluated (`group_subtasks`, nested for MMLU's categories)
    and its leaf tasks, in lm-eval's order."""
    subtasks = results.get("group_subtasks")
    if not isinstance(subtasks, Mapping):
        return {}

    def leaves(name: str, seen: frozenset[str]) -> list[str]:
        if name not in subtasks or name in seen:
            return [name]
        return [leaf for sub in subtasks[name] for leaf in leaves(str(sub), seen | {name})]

    return {str(g): leaves(str(g), frozenset()) for g in subtasks if subtasks[g]}


def _per_leaf(by_task: Mapping[str, str] | None, groups: Mapping[str, list[str]]) -> dict[str, str] | None:
    """A per-task setting given for a group applies to each of its leaves."""
    if by_task is None:
        return None
    out: dict[str, str] = {}
    for task, value in by_task.items():
        for leaf in groups.get(task, [task]):
            out.setdefault(leaf, value)
    return out


# ----------------------------------------------------------------------------
# planning: the per-task choices made from the aggregated results


def _plans(results: Mapping[str, Any], metrics: Mapping[str, str] | None,
           source: str) -> dict[str, _SamplesReading]:
    configs = results.get("configs")
    if not isinstance(configs, Mapping) or not configs:
        raise InputError("the lm-eval result names no tasks", file=source, key="configs",
                         fix="pass the complete simple_evaluate result / results json")
    unknown = sorted(set(metrics or {}) - set(configs))
    if unknown:
        raise InputError(f"metrics given for tasks that were not evaluated: {unknown}",
                         key="metrics", fix=f"use one of {sorted(configs)}")
    model_args = _model_args(results)
    return {task: _plan(task, results, configs[task], (metrics or {}).get(task), model_args, source)
            for task in configs}


def _plan(task: str, results: Mapping[str, Any], config: Mapping[str, Any],
          wanted_metric: str | None, model_args: Mapping[str, Any], source: str) -> _SamplesReading:
    reported = results.get("results", {}).get(task, {})
    available = {key.split(",", 1)[0]: None for key in reported
                 if "," in key and "_stderr," not in key}
    metric_list = [m for m in (config.get("metric_list") or []) if isinstance(m, Mapping)]
    metric = wanted_metric or next((m["metric"] for m in metric_list if "metric" in m), None) \
        or next(iter(available), None)
    if metric is None or metric not in available:
        raise InputError(f"task {task!r} reports no metric {metric!r}", file=source,
                         key=f"metrics.{task}", fix=f"choose one of {sorted(available)}")
    filters = [key.split(",", 1)[1] for key in reported if key.startswith(f"{metric},")]
    declared = [str(f["name"]) for f in (config.get("filter_list") or [])
                if isinstance(f, Mapping) and "name" in f]
    filter_key = next((f for f in ["none", *declared] if f in filters), filters[0])
    entry = next((m for m in metric_list if m.get("metric") == metric), {})
    hib = results.get("higher_is_better", {}).get(task, {}).get(metric, entry.get("higher_is_better"))
    if hib is None:
        raise InputError(f"task {task!r}: lm-eval does not say whether higher {metric} is better",
                         file=source, key=f"higher_is_better.{task}.{metric}",
                         fix="set higher_is_better in the task's metric_list")
    version = results.get("versions", {}).get(task)
    return _SamplesReading(
        task=task, metric=metric, filter=filter_key,
        aggregation=_aggregation(metric, entry.get("aggregation")),
        higher_is_better=bool(hib), output_type=str(config.get("output_type", "")),
        target_delimiter=str(config.get("target_delimiter", " ")),
        reported_score=_number(reported.get(f"{metric},{filter_key}")),
        reported_stderr=_number(reported.get(f"{metric}_stderr,{filter_key}")),
        version=None if version is None else str(version),
        config_hash=config_digest(config, model_args), source=source)


def _aggregation(metric: str, declared: object) -> Aggregation:
    """Map lm-eval's aggregation (a registry name, or source text of a custom one)."""
    name = declared if isinstance(declared, str) else None
    if declared is None:
        name = _registry_aggregation_name(metric)
    elif callable(declared):
        name = _registry_aggregation_name(None, declared)
    return _RATIO_AGGREGATIONS.get(name or "", Aggregation.CORPUS)


def _registry_aggregation_name(metric: str | None, fn: object = None) -> str | None:
    """The registered name of a metric's default aggregation (lm-eval's registry)."""
    import lm_eval.api.metrics  # noqa: F401  (fills the registries)
    from lm_eval.api import registry

    if fn is None and metric is not None:
        try:  # lm-eval's registry raises KeyError for a metric it does not know (a task class's own)
            fn = registry.METRIC_AGGREGATION_REGISTRY.get(metric)
        except KeyError:
            return None
    return next((name for name, f in registry.AGGREGATION_REGISTRY.items() if f is fn), None)


def candidate_kind(results: Mapping[str, Any]) -> str:
    """What lm-eval evaluated, from its model_args: an adapter on a base (`peft=`
    for the hf model, `lora_local_path=` for vllm) is `lora`, anything else `full`."""
    args = _model_args(results)
    return "lora" if args.get("peft") or args.get("lora_local_path") else "full"


def _model_args(results: Mapping[str, Any]) -> dict[str, Any]:
    args = (results.get("config") or {}).get("model_args")
    if isinstance(args, Mapping):
        return dict(args)
    if isinstance(args, str) and args:
        from lm_eval.utils import simple_parse_args_string

        return dict(simple_parse_args_string(args))
    return {}


# ----------------------------------------------------------------------------
# building records from sample rows (in-process dicts or JSONL lines)


def _build(plan: _SamplesReading, rows: Iterable[Mapping[str, Any]],
           cluster_field: str | None = None) -> TaskRecords:
    rows = list(rows)
    if plan.aggregation is Aggregation.CORPUS and any(
            is_rouge_pair(plan.metric, row.get(plan.metric)) for row in rows[:1]):
        plan = replace(plan, aggregation=Aggregation.MEAN, per_document_rouge=True)  # SCROLLS summaries
    seen: set[int] = set()
    labels: list[str] = []
    keys: list[ItemKey] = []
    nums: list[float] = []
    dens: list[float] = []
    texts: list[ItemText] = []
    n_choices: set[int] = set()
    for row in rows:
        if row.get("filter", "none") != plan.filter:
            continue
        doc_id = int(row["doc_id"])
        if doc_id in seen:
            raise InputError(f"task {plan.task!r} has doc_id {doc_id} more than once",
                             file=plan.source, key=f"{plan.task}.doc_id={doc_id}",
                             fix="evaluate each document once (no repeated doc ids)")
        seen.add(doc_id)
        if plan.metric not in row:
            raise InputError(f"task {plan.task!r} doc_id {doc_id} has no value for {plan.metric!r}",
                             file=plan.source, key=f"{plan.task}.{plan.metric}", fix=_LOG_SAMPLES_FIX)
        num, den = _num_den(plan, doc_id, row[plan.metric])
        text, k = _item_text(plan, row)
        if k is not None:
            n_choices.add(k)
        keys.append(ItemKey(doc_id, str(row["doc_hash"]), str(row.get("prompt_hash", "")),
                            str(row.get("target_hash", ""))))
        nums.append(num)
        dens.append(den)
        texts.append(text)
        if cluster_field is not None:
            doc = row.get("doc")
            if not isinstance(doc, Mapping) or cluster_field not in doc:
                raise InputError(f"task {plan.task!r} doc_id {doc_id}: the document has no field "
                                 f"{cluster_field!r} to cluster by", file=plan.source,
                                 key=f"{plan.task}.cluster",
                                 fix="name a field every document has (see the per-sample "
                                     "`doc`), or `member` for a group's member tasks")
            labels.append(str(doc[cluster_field]))
    if not keys:
        raise InputError(f"task {plan.task!r} has no samples for filter {plan.filter!r}",
                         file=plan.source, key=plan.task, fix=_LOG_SAMPLES_FIX)
    order = sorted(range(len(keys)), key=lambda i: keys[i].doc_id)
    num_arr = np.asarray([nums[i] for i in order], dtype=np.float64)
    rec = TaskRecords(
        task=plan.task, metric=plan.metric, higher_is_better=plan.higher_is_better,
        aggregation=plan.aggregation, keys=[keys[i] for i in order], num=num_arr,
        den=np.asarray([dens[i] for i in order], dtype=np.float64),
        reported_score=plan.reported_score, reported_stderr=plan.reported_stderr,
        n_choices=max(n_choices) if n_choices else None,
        binary=plan.aggregation is Aggregation.MEAN and bool(np.isin(num_arr, (0.0, 1.0)).all()),
        texts=[texts[i] for i in order], version=plan.version, config_hash=plan.config_hash,
        extra={"filter": plan.filter, "output_type": plan.output_type},
        clusters=[labels[i] for i in order] if cluster_field is not None else None,
    )
    _check_against_reported(rec, plan)
    return rec


def _num_den(plan: _SamplesReading, doc_id: int, value: object) -> tuple[float, float]:
    """The item's (num, den) for the plan's aggregation, from lm-eval's per-sample value."""
    pair = isinstance(value, (list, tuple))
    try:
        if plan.per_document_rouge and is_rouge_pair(plan.metric, value):
            return document_rouge(plan.metric, value[0], value[1]), 1.0  # type: ignore[index]
        if plan.aggregation is Aggregation.CORPUS:
            return math.nan, 1.0  # corpus metrics carry no per-item score
        if pair and len(value) == 2 and plan.aggregation is not Aggregation.MEAN:  # type: ignore[arg-type]
            return float(value[0]), float(value[1])  # type: ignore[index]
        if not pair and plan.aggregation is not Aggregation.BITS_PER_BYTE:
            return float(value), 1.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    raise InputError(
        f"task {plan.task!r} doc_id {doc_id}: {plan.metric} value {value!r} does not fit "
        f"aggregation {plan.aggregation.value}", file=plan.source, key=f"{plan.task}.{plan.metric}",
        fix="choose another metric for this task (metrics=...) or fix the task's metric_list")


def _item_text(plan: _SamplesReading, row: Mapping[str, Any]) -> tuple[ItemText, int | None]:
    """Prompt, target and response a person can read; and the number of choices."""
    args = _arguments(row.get("arguments"))
    prompt = str(args[0][0]) if args and args[0] else ""
    target = str(row.get("target", ""))
    resps = list(row.get("filtered_resps") or [])
    if plan.output_type == "multiple_choice" and args and resps:
        k = len(args) // 2 if "acc_mutual_info" in (row.get("metrics") or []) else len(args)
        choices = [_strip_prefix(str(a[1]), plan.target_delimiter) for a in args[:k]]
        lls = [float(r[0] if isinstance(r, (list, tuple)) else r) for r in resps[:k]]
        if target.isdigit() and int(target) < k:
            # an int doc_to_target is an index (the usual case; JSONL stores str(index))
            target = choices[int(target)]
        return ItemText(prompt, target, choices[int(np.argmax(lls))]), k
    if plan.output_type == "generate_until" and resps:
        first = resps[0]
        return ItemText(prompt, target, first if isinstance(first, str) else json.dumps(first)), None
    return ItemText(prompt, target, ""), None


def _arguments(raw: object) -> list[list[Any]]:
    """Requests' arguments as lists, from either the native or the JSONL shape."""
    if isinstance(raw, Mapping):  # {"gen_args_0": {"arg_0": ..., "arg_1": ...}, ...}
        def index(key: str) -> int:
            return int(key.rsplit("_", 1)[1])
        return [[args[a] for a in sorted(args, key=index)] if isinstance(args, Mapping) else [args]
                for _, args in sorted(raw.items(), key=lambda kv: index(kv[0]))]
    if isinstance(raw, (list, tuple)):
        return [list(a) if isinstance(a, (list, tuple)) else [a] for a in raw]
    return []


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _check_against_reported(rec: TaskRecords, plan: _SamplesReading) -> None:
    """Our recomputation must agree with lm-eval's aggregate, or the mapping is wrong."""
    if rec.aggregation is Aggregation.CORPUS or plan.reported_score is None:
        return
    ours, theirs = rec.score, plan.reported_score
    rounding = 0.5 * 10.0 ** -REPORTED_DECIMALS if plan.per_document_rouge else 0.0  # SCROLLS rounds
    if math.isnan(ours) or math.isnan(theirs) or math.isclose(ours, theirs, rel_tol=1e-9,
                                                              abs_tol=max(1e-12, rounding * 1.001)):
        return
    raise InputError(
        f"task {plan.task!r}: {plan.metric} recomputed from samples is {ours!r} but lm-eval "
        f"reported {theirs!r} (aggregation {rec.aggregation.value})", file=plan.source,
        key=f"{plan.task}.{plan.metric}",
        fix="the samples do not belong to these results, or the metric's aggregation is custom: "
            "choose another metric for this task (metrics=...)")


def _number(raw: object) -> float | None:
    """lm-eval's reported value: a float, or None for "N/A" / missing."""
    if raw is None or isinstance(raw, str):
        return None
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------
# the CLI's output folder


def _model_folder(path: Path) -> Path:
    if not path.is_dir():
        raise InputError("lm-eval output folder not found", file=str(path),
                         fix=f"pass the folder given to lm_eval --output_path; {_LOG_SAMPLES_FIX}")
    if any(path.glob("results_*.json")):
        return path
    subs = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("results_*.json")))
    if len(subs) == 1:
        return subs[0]
    if not subs:
        raise InputError("no lm-eval results in this folder or its model subfolders",
                         file=str(path), fix=f"{_LOG_SAMPLES_FIX} --output_path {path}")
    raise InputError(f"several model folders: {[p.name for p in subs]}", file=str(path),
                     fix="pass the model subfolder to use, e.g. " + str(subs[0]))


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Stream one samples file; a half-written last line is an error, not skipped."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"line {lineno} is not JSON: {exc.msg}", file=str(path),
                                 fix="rerun lm_eval; the samples file is damaged") from exc
