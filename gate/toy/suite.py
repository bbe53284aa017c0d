"""The toy suite: lm-eval task YAMLs, their JSONL data and the three-tier `toy.yaml`.

Everything under `gate/suites/toy/` is written by `write_suite` from the generators in
`gate.toy.corpus`, so the committed files and a freshly built world's suite are
byte-identical (tests/toy/test_toy_data.py checks it).

How data paths resolve: `datasets.load_dataset("json", data_files=...)` (what
lm-eval calls for `dataset_path: json`) resolves a relative path against the
*current working directory*, not the YAML. So every task sets
`custom_dataset: !function toy_data.load`: lm-eval imports `toy_data.py` from
the YAML's own folder and calls it with the task's `dataset_kwargs`; the loader
resolves `data_files` against its own folder. The tasks then work from any
working directory, with nothing rewritten.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.toy import corpus

SUITE_NAME = "toy"
DATA_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task: its YAML fields (minus the data wiring) and its documents."""

    name: str
    tier: str
    metric: str
    """The metric the tier reads (acc, exact_match, word_perplexity)."""
    docs: list[dict[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)


def _mc_choices(answer: str, pool: list[str], rng: random.Random) -> tuple[list[str], int]:
    distractors = rng.sample([p for p in pool if p != answer], 3)
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _generate(metric_name: str = "exact_match") -> dict[str, Any]:
    return {
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 8},
        "metric_list": [{"metric": metric_name, "aggregation": "mean", "higher_is_better": True}],
    }


def _multiple_choice(delimiter: str) -> dict[str, Any]:
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": delimiter,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def task_specs() -> list[TaskSpec]:
    """All toy tasks, in suite order, with deterministic documents."""
    rng = random.Random(corpus.WORLD_SEED + 101)
    facts = corpus.capitals()
    cities = [f.city for f in facts]
    capitals_docs = []
    for f in facts:
        choices, label = _mc_choices(f.city, cities, rng)
        capitals_docs.append({"prompt": f"the capital of {f.country} is", "choices": choices,
                              "label": label})
    after_docs = [{"prompt": f"after {x} is ", "answer": y} for x, y in corpus.after_pairs()]
    add_docs = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in corpus.addition_pairs()]
    sub_docs = [{"prompt": f"{m}-{s}=", "answer": str(d)} for m, s, d in corpus.subtraction_items()]
    numbers = [str(i) for i in range(19)]
    sub_mc_docs = []
    for m, s, d in corpus.subtraction_items():
        choices, label = _mc_choices(str(d), numbers, rng)
        sub_mc_docs.append({"prompt": f"{m}-{s}=", "choices": choices, "label": label})
    text_docs = [{"text": s} for s in corpus.heldout_sentences(150)]
    rolling = {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [
            {"metric": metric, "aggregation": aggregation, "higher_is_better": False}
            for metric, aggregation in (("word_perplexity", "weighted_perplexity"),
                                        ("byte_perplexity", "weighted_perplexity"),
                                        ("bits_per_byte", "bits_per_byte"))],
    }
    return [
        TaskSpec("toy_sub", "target", "exact_match", sub_docs, _generate()),
        TaskSpec("toy_sub_mc", "related", "acc", sub_mc_docs, _multiple_choice("")),
        TaskSpec("toy_add", "related", "exact_match", add_docs, _generate()),
        TaskSpec("toy_capitals", "general", "acc", capitals_docs, _multiple_choice(" ")),
        TaskSpec("toy_after", "general", "exact_match", after_docs, _generate()),
        TaskSpec("toy_text", "general", "word_perplexity", text_docs, rolling),
    ]


LOADER_SOURCE = '''\
"""Loads a toy task's JSONL relative to this folder, so lm-eval works from any cwd.

Written by gate.toy.suite; lm-eval imports it through `custom_dataset: !function toy_data.load`.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_files=None, **_metadata):
    files = {split: str((HERE / path).resolve()) for split, path in (data_files or {}).items()}
    return datasets.load_dataset("json", data_files=files)
'''


def _task_yaml(spec: TaskSpec) -> str:
    import yaml

    head = {
        "task": spec.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": f"../data/{spec.name}.jsonl"}},
        "test_split": "test",
    }
    body = dict(spec.fields)
    body["metadata"] = {"version": DATA_VERSION}
    text = yaml.safe_dump(head, sort_keys=False, width=100)
    # `!function` is lm-eval's YAML tag; safe_dump cannot emit it, so it is written by hand.
    text += "custom_dataset: !function toy_data.load\n"
    text += yaml.safe_dump(body, sort_keys=False, width=100, allow_unicode=True)
    return f"# Toy task {spec.name} ({spec.tier} tier); written by scripts/make_toy_data.py.\n{text}"


def _suite_yaml(specs: list[TaskSpec]) -> str:
    lines = [
        "# Runs with: gate demo   (builds the toy world, writes the gate.yaml that uses this suite, runs it)",
        f"name: {SUITE_NAME}",
        "description: Offline three-tier suite for the embedded toy model family.",
        "include: [tasks]",
        "tiers:",
    ]
    for tier in ("target", "related", "general"):
        lines.append(f"  {tier}:")
        lines += [f"    - {{task: {s.name}, metric: {s.metric}}}" for s in specs if s.tier == tier]
    return "\n".join(lines) + "\n"


def suite_files() -> dict[str, str]:
    """Relative path -> file content, for every file of the toy suite."""
    specs = task_specs()
    files = {"toy.yaml": _suite_yaml(specs), "tasks/toy_data.py": LOADER_SOURCE}
    for spec in specs:
        files[f"tasks/{spec.name}.yaml"] = _task_yaml(spec)
        files[f"data/{spec.name}.jsonl"] = "".join(
            json.dumps(d, sort_keys=True) + "\n" for d in spec.docs)
    return files


def write_suite(out_dir: Path) -> Path:
    """Write the whole toy suite under `out_dir`; returns the path of `toy.yaml`."""
    for rel, content in suite_files().items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return out_dir / "toy.yaml"
