"""training_facts reads a candidate's PEFT/Trainer files; remedies use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate.report.remedies import learning_rate_text, remedies, summary_sentence, training_facts
from gate.report.results import validate_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def write_candidate(folder: Path, *, in_checkpoint: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 16, "lora_alpha": 32,
        "target_modules": ["v_proj", "q_proj"], "base_model_name_or_path": "base"}))
    state = {
        "num_train_epochs": 8, "epoch": 8.0, "global_step": 800, "max_steps": 800,
        "best_model_checkpoint": "out/checkpoint-150", "best_metric": 0.41,
        "log_history": [{"step": 10, "learning_rate": 0.005, "loss": 2.0},
                        {"step": 20, "learning_rate": 0.01, "loss": 1.0},
                        {"step": 800, "learning_rate": 0.0001, "loss": 0.1},
                        {"step": 800, "train_runtime": 12.0}],
    }
    target = folder / "checkpoint-800" if in_checkpoint else folder
    if in_checkpoint:
        (folder / "checkpoint-100").mkdir()
        (folder / "checkpoint-100" / "trainer_state.json").write_text(json.dumps({"epoch": 1}))
        target.mkdir()
    (target / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_training_facts_from_a_trainer_output_folder(tmp_path: Path) -> None:
    facts = training_facts(write_candidate(tmp_path / "cand", in_checkpoint=True))
    assert facts == {
        "adapter_config": {"r": 16, "lora_alpha": 32.0, "target_modules": ["q_proj", "v_proj"],
                           "peft_type": "LORA"},
        "trainer_state": {"learning_rate": 0.01, "learning_rate_source": "peak logged",
                          "num_train_epochs": 8.0, "epoch": 8.0,
                          "global_step": 800, "max_steps": 800, "best_global_step": 150,
                          "best_general_step": None, "best_metric": 0.41},
    }


def test_training_facts_fit_the_schema_and_drive_the_advice(tmp_path: Path) -> None:
    results = json.loads((FIXTURES / "three_candidates.json").read_text())
    candidate = results["candidates"][1]
    candidate["training"] = training_facts(write_candidate(tmp_path / "cand"))
    validate_results(results)
    assert summary_sentence(candidate) == (
        "This adapter was trained with a peak logged lr of 1e-2 for 8 epochs on rank 16 (alpha 32) "
        "targeting q_proj, v_proj.")
    advice = {r.title: r.advice for r in remedies(candidate)}
    assert "logged learning rate peaked at 1e-2" in advice["Lower the learning rate"]
    assert "try about 1e-3" in advice["Lower the learning rate"]
    assert "step 150 of 800 (about epoch 1.5)" in advice["Train for less, stop early"]


def test_no_files_no_facts_and_broken_files_are_ignored(tmp_path: Path) -> None:
    assert training_facts(tmp_path) is None
    (tmp_path / "trainer_state.json").write_text("{not json")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": "sixteen"}))
    assert training_facts(tmp_path) == {
        "adapter_config": {"r": None, "lora_alpha": None, "target_modules": None,
                           "peft_type": None},
        "trainer_state": None,
    }


def test_full_fine_tune_is_told_to_prefer_lora() -> None:
    results = json.loads((FIXTURES / "three_candidates.json").read_text())
    candidate = results["candidates"][1]
    candidate.update(kind="full", training=None)
    advice = {r.title: r.advice for r in remedies(candidate)}
    assert advice["Prefer LoRA, a lower rank"].startswith("This is a full fine-tune")
    assert remedies(results["candidates"][0]) == []  # PASS: nothing to remedy


def test_learning_rate_text() -> None:
    assert [learning_rate_text(v) for v in (0.01, 2e-4, 3e-5, 1.5e-3, 4.96e-3, 0.004)] == [
        "1e-2", "2e-4", "3e-5", "1.5e-3", "4.96e-3", "4e-3"]


# transformers' Trainer model card (modelcard.TrainingSummary), as written beside a run
TRAINER_CARD = """---
library_name: peft
---
## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
- learning_rate: 0.005
- train_batch_size: 8
- lr_scheduler_type: linear
- num_epochs: 1
"""


def _decayed_run(folder: Path) -> Path:
    """A Trainer run at a peak lr of 5e-3, linear decay, no warm-up, logging every
    10 of 50 steps: its first log already says 4e-3."""
    write_candidate(folder)
    state = json.loads((folder / "trainer_state.json").read_text())
    state["log_history"] = [{"step": s, "learning_rate": 5e-3 * (1 - s / 50), "loss": 1.0} for s in (10, 20, 30, 40)]
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


@pytest.mark.parametrize(("where", "name", "text", "source"), [
    ("run", "README.md", TRAINER_CARD, "README.md"),
    ("run", "training_args.yaml", "learning_rate: 5.0e-03\nlr_scheduler_type: linear\n", "training_args.yaml"),
    ("run", "config.yaml", "base_model: x\nlearning_rate: 5e-3\n", "config.yaml"),  # Axolotl; YAML 1.1 string
    ("run", "config.yaml", "optimizer:\n  _component_: torch.optim.AdamW\n  lr: 5e-3\n", "config.yaml"),  # torchtune
    ("parent", "training_args.json", json.dumps({"learning_rate": 0.005}), "../training_args.json"),
])
def test_the_configured_rate_is_quoted_with_its_file_never_the_decayed_log(
        tmp_path: Path, where: str, name: str, text: str, source: str) -> None:
    run = _decayed_run(tmp_path / "run" / "checkpoint-40" if where == "parent" else tmp_path / "run")
    (run.parent if where == "parent" else run).joinpath(name).write_text(text)
    facts = training_facts(run)
    assert facts is not None and facts["trainer_state"]["learning_rate"] == 0.005
    assert facts["trainer_state"]["learning_rate_source"] == source
    results = json.loads((FIXTURES / "three_candidates.json").read_text())
    candidate = results["candidates"][1]
    candidate["training"] = facts
    validate_results(results)
    assert "trained at lr 5e-3 " in (summary_sentence(candidate) or "")
    advice = {r.title: r.advice for r in remedies(candidate)}["Lower the learning rate"]
    assert f"It was trained at lr 5e-3 (set in {source}); try lr 5e-4" in advice


def test_without_a_configured_rate_the_peak_logged_one_is_said_as_such(tmp_path: Path) -> None:
    run = _decayed_run(tmp_path / "run")
    (run / "README.md").write_text("- learning_rate: 1.2.3\n")  # unreadable: ignored, never a crash
    (run / "config.yaml").write_text("learning_rate: [oops\n")
    facts = training_facts(run)
    assert facts is not None
    assert facts["trainer_state"]["learning_rate"] == 0.004
    assert facts["trainer_state"]["learning_rate_source"] == "peak logged"
    results = json.loads((FIXTURES / "three_candidates.json").read_text())
    candidate = results["candidates"][1]
    candidate["training"] = facts
    sentence = summary_sentence(candidate) or ""
    assert "with a peak logged lr of 4e-3" in sentence and "at lr 4e-3" not in sentence
    advice = {r.title: r.advice for r in remedies(candidate)}["Lower the learning rate"]
    assert "trained at lr" not in advice and "peaked at 4e-3" in advice
