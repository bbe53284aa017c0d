"""A sweep end to end with the fake engine: the pick, every output, and what
lands in W&B (offline, read back from the runs' transaction logs).

Three checkpoints of one training run: the first learns a little, the second
more, the third forgets the general task. The gate must pick the second and
say the third is where capability drops; the training run's W&B history must
carry the curve at the checkpoints' steps, under keys without the candidate's
name, so two training runs gated this way line up in W&B's run comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeworld import BASE, GOOD, fake_adapter_dir, fake_gate_config

from gate.config.load import load_setup
from gate.pipeline import run
from gate.serve.fake import FakeEngine, FakeSkill

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parent.parent

LEARNING = FakeSkill(accuracy={"fk_target": 0.70, "fk_related": 0.6, "fk_general": 0.8})
LEARNED = GOOD
FORGOT = FakeSkill(accuracy={"fk_target": 0.95, "fk_related": 0.6, "fk_general": 0.3})


def _world(tmp: Path, candidates: list[dict], wandb: dict | None = None, **config: object) -> Path:
    return fake_gate_config(tmp, adapters=(), candidates=candidates, **({"wandb": wandb} if wandb else {}), **config)


def _training_run(root: Path) -> Path:
    for step in (100, 200, 300):
        ckpt = fake_adapter_dir(root / f"checkpoint-{step}", f"w{step}".encode())
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 100}))
    return root


ENGINE = {"base": BASE, "ft@100": LEARNING, "ft@200": LEARNED, "ft@300": FORGOT}


def test_a_sweep_picks_the_last_checkpoint_before_forgetting(tmp_path: Path) -> None:
    _training_run(tmp_path / "ft")
    setup = load_setup(_world(tmp_path, [{"name": "ft", "sweep": "ft"}]))
    result = run(setup, engine=FakeEngine(ENGINE))

    sweep = result.results["sweeps"][0]
    assert [(c["candidate"], c["step"], c["epoch"], c["verdict"]) for c in sweep["checkpoints"]] == [
        ("ft@100", 100, 1.0, "PASS"), ("ft@200", 200, 2.0, "PASS"), ("ft@300", 300, 3.0, "FAIL")]
    assert sweep["pick"] == "ft@200" and sweep["alpha_share"] == pytest.approx(1 / 3)
    assert sweep["drops_at"] == "ft@300 fails the general tier"
    assert result.exit_code == 0 and result.results["release"]["candidates"] == ["ft"]
    assert "ft ships ft@200" in result.results["release"]["reason"]
    html = (result.out_dir / "report.html").read_text()
    assert "Sweep ft" in html and "Ship checkpoint-200: epoch 2 is the last before capability drops" in html
    assert html.count("<svg") >= 4  # the curve plus each checkpoint's forest plot
    summary = (result.out_dir / "summary.md").read_text()
    assert "### Sweep ft: 3 checkpoints" in summary and "**ft@200** (picked)" in summary


def test_none_passing_fails_the_release(tmp_path: Path) -> None:
    _training_run(tmp_path / "ft")
    setup = load_setup(_world(tmp_path, [{"name": "ft", "sweep": "ft", "steps": [300]}]))
    result = run(setup, engine=FakeEngine(ENGINE))
    assert result.exit_code == 1
    assert result.results["sweeps"][0]["pick"] is None
    assert "ft fails: none of its 1 checkpoint passes" in result.results["release"]["reason"]


wandb = pytest.importorskip("wandb")


def _run_dir(tmp: Path, run_id: str) -> Path:
    found = list((tmp / "wandb-dir").rglob(f"offline-run-*-{run_id}"))
    assert len(found) == 1, found
    return found[0]


def test_wandb_gets_the_curve_on_the_training_step_axis_and_keys_that_line_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb_replay import isolate_wandb, replay

    isolate_wandb(tmp_path, monkeypatch)
    _training_run(tmp_path / "ft")
    fake_adapter_dir(tmp_path / "lone", b"lone")
    project = {"project": "finetunes", "mode": "offline"}
    try:
        setup = load_setup(_world(tmp_path, [{"name": "ft", "sweep": "ft", "wandb_run": "train-ft"}], project))
        run(setup, engine=FakeEngine(ENGINE))
        # a second training run, gated on its own: its run stands for its one candidate
        setup = load_setup(_world(tmp_path, [{"name": "lone", "adapter": "lone"}],
                                  {**project, "run_id": "train-lone"}))
        run(setup, engine=FakeEngine({"base": BASE, "lone": LEARNED}))
        wandb.teardown()
        swept, lone = replay(_run_dir(tmp_path, "train-ft")), replay(_run_dir(tmp_path, "train-lone"))
    finally:
        wandb.teardown()

    steps = [row for row in swept["history"]]
    got_steps = []
    for row in steps:
        items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in row.item}
        got_steps.append(items["gate/train_step"])
        assert "gate/general/fk_general/delta" in items
    assert got_steps == [100, 200, 300]

    sweep_only = {"gate/pick", "gate/pick_step", "gate/pick_epoch",  # what a sweep adds, and the
                  "gate/train_step", "gate/epoch", "gate/passes", "gate/picked"}  # curve's last row

    def keys(summary: dict) -> set[str]:
        return {k for k in summary if k.startswith("gate/") and k not in sweep_only}
    assert swept["summary"]["gate/pick"] == "ft@200" and swept["summary"]["gate/verdict"] == "PASS"
    assert lone["summary"]["gate/verdict"] == "PASS"
    assert keys(swept["summary"]) == keys(lone["summary"])
    assert not any("ft@" in k or "/lone/" in k for k in swept["summary"] | lone["summary"])


def test_stop_after_fail_scores_nothing_after_the_first_failing_checkpoint(tmp_path: Path) -> None:
    """sweep.stop_after_fail: true saves the compute of checkpoints after the first
    FAIL. Here checkpoint-200 already forgets, so checkpoint-300 is never served:
    the engine is never asked for it, the curve shows it as not scored, and the
    pick is the checkpoint before the failure. A second run, all cached, skips it
    the same way."""
    _training_run(tmp_path / "ft")
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text((REPO / "thresholds.yaml").read_text(encoding="utf-8")
                          + "\nsweep:\n  stop_after_fail: true\n", encoding="utf-8")
    config = _world(tmp_path, [{"name": "ft", "sweep": "ft"}], thresholds=str(thresholds))
    engine_skills = {"base": BASE, "ft@100": LEARNING, "ft@200": FORGOT, "ft@300": LEARNED}
    said: list[str] = []

    result = run(load_setup(config), engine=FakeEngine(engine_skills), progress=said.append)

    assert result.evaluated["ft@300"] == 0 and result.evaluated["ft@200"] > 0
    assert "ft@300: not scored (an earlier checkpoint failed; sweep.stop_after_fail)" in said
    sweep = result.results["sweeps"][0]
    assert [(c["candidate"], c["verdict"]) for c in sweep["checkpoints"]] == [
        ("ft@100", "PASS"), ("ft@200", "FAIL"), ("ft@300", "NOT_SCORED")]
    assert sweep["pick"] == "ft@100" and result.exit_code == 0
    assert "ft@300" not in [c["name"] for c in result.results["candidates"]]
    summary = (result.out_dir / "summary.md").read_text(encoding="utf-8")
    assert "not scored" in summary

    said.clear()
    again = run(load_setup(config), engine=FakeEngine(engine_skills), progress=said.append)
    assert again.evaluated == {name: 0 for name in again.evaluated}
    assert "ft@300: not scored (an earlier checkpoint failed; sweep.stop_after_fail)" in said
    assert again.results["sweeps"][0]["pick"] == "ft@100"
