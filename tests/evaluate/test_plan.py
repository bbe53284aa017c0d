"""Task planning: the one normalisation of a task config (gate.evaluate.plan.task_config).

A task's config digest is part of every baseline key, and `gate compare`
reads the same configs from lm-eval's files: what is not the task (where the
YAML lies, where the data files lie, model arguments lm-eval merges in) must
not change it; anything that changes what is scored must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gate.evaluate.plan import config_digest, draw_selection, task_config


def _config(data_file: str, **changes: object) -> dict[str, object]:
    config: dict[str, object] = {
        "task": "toy_capitals", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test", "output_type": "multiple_choice",
        "doc_to_text": "Q: {{question}}\nA:", "doc_to_choice": "{{choices}}",
        "metric_list": [{"metric": "acc"}],
        "metadata": {"version": 1.0, "config_source": "/laptop/suites/toy/capitals.yaml"},
    }
    config.update(changes)
    return config


def test_moving_a_checkout_does_not_change_the_digest() -> None:
    here = _config("/laptop/suites/toy/capitals.jsonl")
    there = _config("/ci/runner/work/suites/toy/capitals.jsonl",
                    metadata={"version": 1.0, "config_source": "/ci/runner/work/suites/toy/capitals.yaml"})
    assert config_digest(here) == config_digest(there)
    assert "data_files" not in task_config(here)["dataset_kwargs"]


def test_model_args_merged_into_metadata_are_not_the_task() -> None:
    plain = _config("x")
    merged = _config("x", metadata={"version": 1.0, "pretrained": "toy-base", "dtype": "float32"})
    args = {"pretrained": "toy-base", "dtype": "float32"}
    assert config_digest(merged, args) == config_digest(plain)
    assert config_digest(merged) != config_digest(plain)  # without the model args, metadata is metadata


def test_what_changes_the_scores_changes_the_digest() -> None:
    base = config_digest(_config("x"))
    assert config_digest(_config("x", doc_to_text="Question: {{question}}\nAnswer:")) != base
    assert config_digest(_config("x", metric_list=[{"metric": "acc_norm"}])) != base
    assert config_digest(_config("x", metadata={"version": 2.0})) != base


def test_item_selection_is_seeded_sorted_and_never_the_first_n() -> None:
    assert draw_selection(100, None, 0) is None and draw_selection(100, 100, 0) is None
    picked = draw_selection(1000, 50, 7)
    assert picked == draw_selection(1000, 50, 7) and picked == sorted(picked)
    assert picked != list(range(50)) and len(set(picked)) == 50
    assert picked != draw_selection(1000, 50, 8)


def process_docs(dataset):  # type: ignore[no-untyped-def]  # a task's utils.process_docs
    return dataset


def test_a_function_nested_in_the_config_leaves_no_address_in_the_digest() -> None:
    """lm-eval copies `process_docs` into `fewshot_config`, where `to_dict` leaves
    it a function; its address made hellaswag's digest differ in every process,
    so its stored baseline was never reused."""
    nested = _config("x", process_docs="def process_docs(dataset): ...",
                     fewshot_config={"sampler": "default", "process_docs": process_docs})
    elsewhere = _config("x", process_docs="def process_docs(dataset): ...",
                        fewshot_config={"sampler": "default",
                                        "process_docs": "<function process_docs at 0x7f0123456789>"})
    assert config_digest(nested) == config_digest(elsewhere)  # lm-eval's results file holds the text
    assert "0x" not in str(task_config(nested))
    renamed = _config("x", process_docs="def process_docs(dataset): ...",
                      fewshot_config={"sampler": "default", "process_docs": "<function other at 0x7f01>"})
    assert config_digest(renamed) != config_digest(nested)
    assert config_digest(_config("x", tags={"b", "a", "c"})) == config_digest(_config("x", tags={"c", "a", "b"}))


@pytest.mark.heavy
def test_a_real_task_with_a_process_docs_function_has_one_digest_in_every_process(tmp_path: Path) -> None:
    """Two `gate` processes must key the same task alike, or the baseline one
    stored is not found by the next: the task is lm-eval's pattern for
    hellaswag (a `process_docs` function in the task folder's utils.py)."""
    (tmp_path / "utils.py").write_text("def process_docs(dataset):\n    return dataset.map(lambda d: d)\n")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": "x"}) + "\n" for i in range(4)))
    (tmp_path / "t_docs.yaml").write_text(
        "task: t_docs\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
        f"{tmp_path / 'items.jsonl'}\ntest_split: test\nprocess_docs: !function utils.process_docs\n"
        "output_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
        "metric_list:\n- metric: exact_match\nmetadata:\n  version: 1\n")
    code = ("import sys\nfrom gate.config.tasks import task_manager\n"
            "from gate.evaluate.plan import _config_dict, config_digest\n"
            f"t = task_manager(({str(tmp_path)!r},)).load(['t_docs'])['tasks']['t_docs']\n"
            "print('digest', config_digest(_config_dict(t)))\n")
    digests = set()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        digests |= {ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("digest ")}
    assert len(digests) == 1, digests
