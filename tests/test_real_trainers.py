"""Training runs written by the trainers users run, gated as they are (issue 15).

transformers' Trainer + PEFT and TRL's SFTTrainer train a LoRA on the toy base
with `save_strategy="epoch"`, at a peak lr of 5e-3 with linear decay and no
warm-up. The gate then reads their output folders as written: every
`checkpoint-<step>/` is a sweep candidate with its step and epoch from
trainer_state.json; the remedies quote the rank and epochs from the files and
the learning rate as "peak logged" (neither trainer writes the configured rate
in a readable file; `training_args.bin` is a pickle and is never loaded), never
a decayed logged value as the rate the run was set to.

The fake engine scores (the weights are the trainers', the numbers are not
what is tested here); the last checkpoint of each run forgets, so remedies show.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import BASE, FORGETFUL, GOOD, fake_gate_config

from gate.cli.main import cli
from gate.serve.fake import FakeEngine

pytestmark = pytest.mark.slow

LR = 5e-3
STEPS_PER_EPOCH = 4  # 32 texts, batch 8


def _texts() -> list[str]:
    from gate.toy import corpus

    return [corpus.subtraction_line(a, b, c) for a, b, c in corpus.subtraction_items()[:32]]


def _lora(base: Path):  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))


def _common() -> dict[str, object]:
    return {"num_train_epochs": 2, "learning_rate": LR, "lr_scheduler_type": "linear", "warmup_steps": 0,
            "per_device_train_batch_size": 8, "logging_steps": 2, "save_strategy": "epoch", "report_to": [],
            "use_cpu": True, "seed": 0, "disable_tqdm": True}


def train_with_trainer(base: Path, out: Path) -> None:
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_dict({"text": _texts()}).map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
    Trainer(model=_lora(base), args=TrainingArguments(output_dir=str(out), **_common()),  # type: ignore[arg-type]
            train_dataset=data, data_collator=DataCollatorForLanguageModeling(tok, mlm=False)).train()


def train_with_trl(base: Path, out: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    SFTTrainer(model=_lora(base), args=SFTConfig(output_dir=str(out), **_common()),  # type: ignore[arg-type]
               train_dataset=Dataset.from_dict({"text": _texts()}),
               processing_class=AutoTokenizer.from_pretrained(base)).train()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gate import toy

    base = toy.build().base
    root = tmp_path_factory.mktemp("trainers")
    train_with_trainer(base, root / "trainer")
    train_with_trl(base, root / "trl")
    return {"base": base, "trainer": root / "trainer", "trl": root / "trl"}


@pytest.mark.parametrize("name", ["trainer", "trl"])
def test_the_run_folder_is_what_the_trainer_writes(runs: dict[str, Path], name: str) -> None:
    run = runs[name]
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{STEPS_PER_EPOCH}", f"checkpoint-{2 * STEPS_PER_EPOCH}"]
    last = run / checkpoints[-1]
    for written in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "training_args.bin"):
        assert (last / written).is_file(), written
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    logged = [e["learning_rate"] for e in history if "learning_rate" in e]
    assert max(logged) < LR  # linear decay, no warm-up: the first log is already below the setting
    if name == "trl":
        assert any("mean_token_accuracy" in e for e in history)


def test_the_gate_reads_both_runs_as_written(runs: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    last = 2 * STEPS_PER_EPOCH
    skills = {"base": BASE, f"trainer@{STEPS_PER_EPOCH}": GOOD, f"trainer@{last}": FORGETFUL,
              f"trl@{STEPS_PER_EPOCH}": GOOD, f"trl@{last}": FORGETFUL}
    monkeypatch.setattr("gate.serve.factory.make_engine", lambda _cfg: FakeEngine(skills))
    cfg = fake_gate_config(tmp_path, adapters=(), candidates=[
        {"name": "trainer", "sweep": str(runs["trainer"])}, {"name": "trl", "sweep": str(runs["trl"])}])
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["base"] = {"path": str(runs["base"])}
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    done = CliRunner().invoke(cli, ["run", "--config", str(cfg)], catch_exceptions=False)
    assert done.exit_code in (0, 1), done.output
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    for name in ("trainer", "trl"):
        sweep = next(s for s in results["sweeps"] if s["name"] == name)
        assert [(c["step"], c["epoch"]) for c in sweep["checkpoints"]] == [(STEPS_PER_EPOCH, 1.0), (last, 2.0)]
        assert sweep["pick"] == f"{name}@{STEPS_PER_EPOCH}"
        forgot = next(c for c in results["candidates"] if c["name"] == f"{name}@{last}")
        assert forgot["verdict"] == "FAIL"
        state = forgot["training"]["trainer_state"]
        assert state["learning_rate_source"] == "peak logged" and state["learning_rate"] < LR
        assert state["num_train_epochs"] == 2
        assert forgot["training"]["adapter_config"]["r"] == 4
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Its logged learning rate peaked at" in report
    assert "It was trained at lr" not in report  # a decayed log is never quoted as the setting
