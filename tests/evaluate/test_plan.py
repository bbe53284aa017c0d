"""Task planning: the one normalisation of a task config (gate.evaluate.plan.task_config).

A task's config digest is part of every baseline key, and `gate compare`
reads the same configs from lm-eval's files: what is not the task (where the
YAML lies, where the data files lie, model arguments lm-eval merges in) must
not change it; anything that changes what is scored must.
"""

from __future__ import annotations

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
