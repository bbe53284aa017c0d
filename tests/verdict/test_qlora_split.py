"""The QLoRA split (issue 14): a QLoRA adapter's change against the 16-bit base
split into the quantization effect (4-bit base - 16-bit base) and the tuning
effect (adapter on the 4-bit base - 4-bit base), each paired on the same items
with its own interval; the larger part read on the task that dropped most;
the remedy fits it. The intervals are the verdicts' own paired comparisons
(their error rates are tested in test_calibration.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_calibration import ALPHA, MARGIN, acc_records

from gate.config.policy import TaskPolicy
from gate.report.qlora import split_rows, split_sentence
from gate.report.remedies import remedies
from gate.verdict.qlora_split import split_candidate

GAIN = TaskPolicy(tier="target", kind="gain", absolute=0.10, relative=None, alpha=ALPHA, inconclusive="fail")
DROP = TaskPolicy(tier="general", kind="drop", absolute=MARGIN, relative=None, alpha=ALPHA, inconclusive="fail")
POLICIES = {"t": GAIN, "g": DROP, "h": DROP}
TIERS = {"t": "target", "g": "general", "h": "general"}


def three(n: int, *, base_right: float, quant_lost: int, tune_lost: int, tune_gained: int = 0,
          task: str = "g") -> tuple:
    """16-bit base, 4-bit base and the adapter on it: quantizing loses the first
    `quant_lost` right items, tuning the next `tune_lost` (and gains `tune_gained`
    of the wrong ones)."""
    b16 = np.zeros(n)
    b16[: round(base_right * n)] = 1
    b4 = b16.copy()
    b4[:quant_lost] = 0
    trained = b4.copy()
    trained[quant_lost:quant_lost + tune_lost] = 0
    if tune_gained:
        trained[n - tune_gained:] = 1
    return acc_records(b16, task), acc_records(b4, task), acc_records(trained, task)


def split(**tasks: tuple) -> object:
    return split_candidate("q", base16={k: v[0] for k, v in tasks.items()}, base4={k: v[1] for k, v in tasks.items()},
                           trained={k: v[2] for k, v in tasks.items()}, tiers=TIERS, policies=POLICIES,
                           family="tier", engine="hf-test")


def test_the_effects_add_up_and_each_has_its_interval() -> None:
    s = split(t=three(200, base_right=0.2, quant_lost=0, tune_lost=0, tune_gained=80, task="t"),
              g=three(400, base_right=0.9, quant_lost=40, tune_lost=8))
    g = next(t for t in s.tasks if t.as_trained.task == "g")
    q, tune, total = g.quantization.comparison, g.tuning.comparison, g.as_trained.comparison
    assert q.delta == pytest.approx(-0.10) and tune.delta == pytest.approx(-0.02)
    assert total.delta == pytest.approx(q.delta + tune.delta)
    for c in (q, tune, total):
        assert c.ci_low <= c.delta <= c.ci_high and c.ci_high - c.ci_low > 0
    assert q.ci_high < 0  # 40 of 400 items lost: the quantization effect is resolved
    assert s.larger == "quantization" and s.deciding_task is g
    d = s.to_dict()
    assert d["larger"] == "quantization" and d["deciding_task"] == "g"
    assert [t["task"] for t in d["tasks"]] == ["t", "g"]


def test_the_larger_part_is_read_on_the_task_that_dropped_most() -> None:
    # h drops a little through quantization; g drops a lot through the tuning: g decides.
    s = split(g=three(400, base_right=0.9, quant_lost=2, tune_lost=60),
              h=three(400, base_right=0.9, quant_lost=8, tune_lost=0, task="h"))
    assert s.deciding_task is not None and s.deciding_task.as_trained.task == "g"
    assert s.larger == "tuning"
    assert {t.as_trained.task: t.larger for t in s.tasks} == {"g": "tuning", "h": "quantization"}


def test_no_drop_means_nothing_to_split() -> None:
    s = split(t=three(100, base_right=0.2, quant_lost=0, tune_lost=0, tune_gained=50, task="t"),
              g=three(100, base_right=0.9, quant_lost=0, tune_lost=0))
    assert s.larger is None and s.deciding_task is None
    cand = {"name": "q", "qlora_split": s.to_dict()}
    assert "neither quantizing the base nor the tuning lowered any task" in (split_sentence(cand) or "")


def _failing(s: object) -> dict:
    """A candidate entry of results.json that FAILed its general tier, with the split."""
    return {"name": "q", "kind": "lora", "verdict": "FAIL", "training": None,
            "tiers": [{"tier": "general", "verdict": "FAIL",
                       "tasks": [{"task": "g", "verdict": "FAIL"}]}],
            "qlora_split": s.to_dict()}  # type: ignore[attr-defined]


def test_the_remedy_fits_the_larger_part() -> None:
    quant = _failing(split(g=three(400, base_right=0.9, quant_lost=40, tune_lost=4)))
    found = remedies(quant)
    assert found[0].title == "Keep the base in 16 bits"
    assert "-10.0 pts" in found[0].advice and "-1.0 pts" in found[0].advice
    sentence = split_sentence(quant) or ""
    assert "quantizing the base is the larger part" in sentence and "on g" in sentence

    tuned = _failing(split(g=three(400, base_right=0.9, quant_lost=4, tune_lost=40)))
    titles = [r.title for r in remedies(tuned)]
    assert "Keep the base in 16 bits" not in titles and titles[0] == "Lower the learning rate"
    assert "the tuning is the larger part" in (split_sentence(tuned) or "")


def test_overlapping_intervals_are_said_to_be_unsettled() -> None:
    s = split(g=three(50, base_right=0.9, quant_lost=2, tune_lost=1))
    sentence = split_sentence({"name": "q", "qlora_split": s.to_dict()}) or ""
    assert "quantizing the base is the larger part" in sentence
    assert "their intervals overlap" in sentence


def test_rows_show_each_effect_against_the_model_it_starts_from() -> None:
    s = split(g=three(400, base_right=0.9, quant_lost=40, tune_lost=8))
    (row,) = split_rows({"name": "q", "qlora_split": s.to_dict()})  # type: ignore[attr-defined]
    assert row["base_16bit"] == "90.0%" and row["base_4bit"] == "80.0%" and row["as_trained_score"] == "78.0%"
    assert row["quantization"] == "-10.0 pts" and row["tuning"] == "-2.0 pts" and row["as_trained"] == "-12.0 pts"
    assert row["quantization_interval"].startswith("[-") and row["larger"] == "quantization"


def test_wandb_gets_both_effects_per_task() -> None:
    from gate.integrations.wandb_log import summary_metrics

    s = split(g=three(400, base_right=0.9, quant_lost=40, tune_lost=8))
    results = {"release": {"verdict": "FAIL", "exit_code": 1, "reason": "r"},
               "candidates": [{"name": "q", "verdict": "FAIL", "tiers": [], "qlora_split": s.to_dict()}]}  # type: ignore[attr-defined]
    summary = summary_metrics(results)
    assert summary["gate/q/qlora/larger"] == "quantization"
    assert summary["gate/q/qlora/g/quantization_delta"] == pytest.approx(-0.10)
    assert summary["gate/q/qlora/g/tuning_delta"] == pytest.approx(-0.02)
