"""W&B logging of the verdict, checked by reading back what an offline run wrote.

wandb 0.31 offline writes no `files/wandb-summary.json` or `config.yaml` (its
Go core only materializes media files: tables under `files/media/table/`, HTML
under `files/media/html/`). Config, summary, run and artifact records live
only in the run's transaction log `run-<id>.wandb`, and 0.31 ships no Python
reader for it (`wandb.sdk.internal.datastore` is gone). The log is LevelDB's
log format behind a 7-byte W&B header, holding `wandb.proto` `Record`s;
`tests/wandb_replay.py` unframes it and parses each record with wandb's own
protobuf classes.

In 0.31 `run.finish()` offline may return while wandb-core is still writing
that log (seen: a 7-byte file, header only, 2 runs in 15); `wandb.teardown()`
waits for it, as the atexit hook does when the gate's process ends. Tests
call `_flush()` before reading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

wandb = pytest.importorskip("wandb")
from wandb_replay import hide_wandb, isolate_wandb, replay  # noqa: E402

from gate.errors import EXIT_INPUT, InputError  # noqa: E402
from gate.integrations.wandb_log import (  # noqa: E402
    ARTIFACT_TYPE,
    FLIPPED_COLUMNS,
    REPORT_FILES,
    TASK_COLUMNS,
    is_secret_name,
    log_to_wandb,
    summary_metrics,
    without_secrets,
)
from gate.report import write_all  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
CANARY_WANDB = "canary-wandb-5f0c1e2d3b4a59687766554433221100ffeeddcc"
CANARY_HF = "canary-hf-hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123"


def _flush() -> None:
    """Wait for wandb-core to finish writing, as happens when the process exits."""
    wandb.teardown()


def _table(run_dir: Path, summary_value: dict[str, Any]) -> dict[str, Any]:
    assert summary_value["_type"] == "table-file"
    table: dict[str, Any] = json.loads((run_dir / "files" / summary_value["path"]).read_text())
    return table


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every place wandb writes, inside tmp_path; a fresh wandb singleton."""
    isolate_wandb(tmp_path, monkeypatch)
    yield tmp_path
    wandb.teardown()


def _out_dir(tmp_path: Path, name: str) -> tuple[dict[str, Any], Path]:
    results = json.loads((FIXTURES / name).read_text())
    out = tmp_path / "gate-out"
    write_all(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results, out


SETTINGS = {"x_disable_stats": True, "console": "off", "silent": True}


def test_summary_tables_report_and_artifact_come_from_results(wandb_home: Path) -> None:
    results, out = _out_dir(wandb_home, "three_candidates.json")
    info = log_to_wandb(results, out, project="finetunes",
                        config={"base": {"model": "toy-base"}, "out": "gate-out"})
    _flush()

    assert info.url is None
    assert info.run_dir is not None and info.run_dir.name.endswith(info.run_id)
    assert info.run_dir.is_relative_to(wandb_home / "wandb-dir")
    got = replay(info.run_dir)

    run = got["run"]
    assert run.run_id == info.run_id
    assert run.job_type == "gate"
    assert run.display_name.startswith("gate-FAIL-")
    assert not got["history"], "a verdict is a summary fact, not a history row"

    summary = got["summary"]
    assert summary["gate/verdict"] == "FAIL"
    assert summary["gate/exit_code"] == 1
    expected = summary_metrics(results)
    assert {k: summary[k] for k in expected} == expected
    for candidate in results["candidates"]:
        name = candidate["name"]
        assert summary[f"gate/{name}/verdict"] == candidate["verdict"]
        for tier in candidate["tiers"]:
            assert summary[f"gate/{name}/{tier['tier']}/verdict"] == tier["verdict"]
            for task in tier["tasks"]:
                key = f"gate/{name}/{tier['tier']}/{task['task']}"
                for field in ("delta", "ci_low", "ci_high", "base_score", "candidate_score",
                              "verdict", "n_used"):
                    assert summary[f"{key}/{field}"] == task[field], f"{key}/{field}"

        tasks = _table(info.run_dir, summary[f"gate/{name}/tasks"])
        assert tasks["columns"] == TASK_COLUMNS
        rows = [dict(zip(TASK_COLUMNS, row, strict=True)) for row in tasks["data"]]
        flat = [(tier["tier"], t) for tier in candidate["tiers"] for t in tier["tasks"]]
        assert [(r["tier"], r["task"]) for r in rows] == [(tier, t["task"]) for tier, t in flat]
        for row, (_, task) in zip(rows, flat, strict=True):
            assert (row["base"], row["candidate"], row["delta"], row["p_value"], row["n"],
                    row["margin"], row["verdict"]) == (
                task["base_score"], task["candidate_score"], task["delta"], task["p_value"],
                task["n"], task["margin"], task["verdict"])

        flipped = _table(info.run_dir, summary[f"gate/{name}/flipped"])
        assert flipped["columns"] == FLIPPED_COLUMNS
        assert flipped["data"] == [
            [t["task"], str(f["doc_id"]), f["prompt"], f["target"], f["base_response"],
             f["candidate_response"]] for _, t in flat for f in t["flipped"]]
    assert len(_table(info.run_dir, summary["gate/overfit/flipped"])["data"]) == 6

    html = summary["gate/report"]
    assert html["_type"] == "html-file"
    assert (info.run_dir / "files" / html["path"]).read_bytes() == (out / "report.html").read_bytes()

    config = got["config"]["gate"]
    assert config["run_config"] == {"base": {"model": "toy-base"}, "out": "gate-out"}
    assert config["results"]["provenance"] == results["provenance"]
    assert config["results"]["baseline"]["fingerprint"] == results["baseline"]["fingerprint"]
    assert {n: c["fingerprint"] for n, c in config["results"]["candidates"].items()} == {
        c["name"]: c["fingerprint"] for c in results["candidates"]}

    (report,) = [a for a in got["artifacts"] if a.type == ARTIFACT_TYPE]
    assert report.name == f"gate-report-{info.run_id}"
    staged = {c.path: Path(c.local_path) for c in report.manifest.contents}
    assert set(staged) == set(REPORT_FILES)
    for name, path in staged.items():
        assert path.read_bytes() == (out / name).read_bytes(), name


def test_attaches_to_the_fine_tuning_run(wandb_home: Path) -> None:
    # The training job ran elsewhere (its own folder); the gate runs later.
    training = wandb.init(project="finetunes", id="ft-run-x", name="lora-r16",
                          job_type="train", dir=wandb_home / "training",
                          settings=wandb.Settings(**SETTINGS))
    for step in range(3):
        training.log({"train/loss": 1.0 / (step + 1)})
    training.finish()
    _flush()
    results, out = _out_dir(wandb_home, "passing.json")

    info = log_to_wandb(results, out, project="finetunes", run_id="ft-run-x")
    _flush()

    assert info.run_id == "ft-run-x"
    (trained,) = (wandb_home / "training" / "wandb").glob("offline-run-*-ft-run-x")
    (gated,) = (wandb_home / "wandb-dir" / "wandb").glob("offline-run-*-ft-run-x")
    assert info.run_dir == gated
    first, second = replay(trained), replay(gated)
    assert first["run"].run_id == "ft-run-x" and first["run"].job_type == "train"
    assert first["summary"]["train/loss"] == pytest.approx(1 / 3)
    assert second["run"].run_id == "ft-run-x"
    assert second["run"].resume, "the run record must ask W&B to resume, not replace"
    # The training run keeps its name and job type; the gate adds beside them.
    assert second["run"].display_name == "" and second["run"].job_type == ""
    assert second["summary"]["gate/verdict"] == "PASS"
    assert second["summary"]["gate/exit_code"] == 0
    assert not second["history"]
    assert "gate" in second["config"]


def test_no_secret_reaches_any_file_wandb_writes(
        wandb_home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WANDB_API_KEY", CANARY_WANDB)
    monkeypatch.setenv("HF_TOKEN", CANARY_HF)
    # W&B's metadata would record the command line; put a secret on it.
    monkeypatch.setattr(sys, "argv", [sys.argv[0], "run", "--hf-token", CANARY_HF])
    wandb.teardown()
    results, out = _out_dir(wandb_home, "three_candidates.json")
    config = {"base": {"model": "toy-base", "tokenizer": "toy-tok"},
              "engine": {"options": {"add_bos_token": True, "max_new_tokens": 32},
                         "endpoint": {"base_url": "http://vllm:8000", "api_key": CANARY_WANDB,
                                      "api_key_env": "VLLM_API_KEY"}},
              "hf_token": CANARY_HF, "notes": f"trained with {CANARY_HF}",
              "DB_PASSWORD": "hunter2hunter2", "client_secret": "s3cr3t-value"}

    info = log_to_wandb(results, out, project="finetunes", config=config)
    _flush()

    assert info.run_dir is not None
    written = [p for p in wandb_home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in written)
    for path in written:
        data = path.read_bytes()
        for needle in (b"canary-", b"hunter2hunter2", b"s3cr3t-value"):
            assert needle not in data, f"{needle!r} leaked into {path}"
    captured = capfd.readouterr()
    assert "canary-" not in captured.out + captured.err
    logged = replay(info.run_dir)["config"]["gate"]["run_config"]
    assert logged == {"base": {"model": "toy-base", "tokenizer": "toy-tok"},
                      "engine": {"options": {"add_bos_token": True, "max_new_tokens": 32},
                                 "endpoint": {"base_url": "http://vllm:8000"}},
                      "notes": "[redacted]"}
    assert not replay(info.run_dir)["environment"], "process metadata must stay off"


@pytest.mark.parametrize(("name", "secret"), [
    ("api_key", True), ("WANDB_API_KEY", True), ("HF_TOKEN", True), ("hfToken", True),
    ("client_secret", True), ("DB_PASSWORD", True), ("credentials", True),
    ("refresh_token", True), ("add_bos_token", False), ("max_new_tokens", False),
    ("tokenizer", False), ("keyword", False), ("model", False)])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_without_secrets_drops_secret_named_keys_at_any_depth() -> None:
    cleaned = without_secrets(
        {"model": "m", "Api_Key": "x", "nested": [{"refresh_token": "y", "lr": 1e-4}],
         "passwd": "z", "note": "uses sk-abcdefgh123"}, ["sk-abcdefgh123"])
    assert cleaned == {"model": "m", "nested": [{"lr": 1e-4}], "note": "[redacted]"}


def test_missing_wandb_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, out = _out_dir(tmp_path, "passing.json")
    hide_wandb(monkeypatch)

    with pytest.raises(InputError) as caught:
        log_to_wandb(results, out, project="finetunes")
    assert caught.value.exit_code == EXIT_INPUT
    assert "pip install 'forgetting-gate[wandb]'" in str(caught.value)
    assert "`wandb` package" in str(caught.value)


def test_results_that_do_not_fit_the_schema_are_refused_before_any_run(
        wandb_home: Path) -> None:
    results, out = _out_dir(wandb_home, "passing.json")
    del results["release"]["verdict"]
    with pytest.raises(InputError, match="verdict"):
        log_to_wandb(results, out, project="finetunes")
    assert not (wandb_home / "wandb-dir" / "wandb").exists()


def test_disabled_mode_logs_nothing(wandb_home: Path) -> None:
    results, out = _out_dir(wandb_home, "passing.json")
    info = log_to_wandb(results, out, project="finetunes", mode="disabled")
    assert info.run_dir is None and info.url is None
    assert not (wandb_home / "wandb-dir" / "wandb").exists()


def test_results_dict_alone_still_ships_results_json(wandb_home: Path) -> None:
    """A library caller may log before writing any report: results.json is still there."""
    results = json.loads((FIXTURES / "passing.json").read_text())
    empty = wandb_home / "nothing-written"
    empty.mkdir()
    info = log_to_wandb(results, empty, project="finetunes")
    _flush()
    assert info.run_dir is not None
    got = replay(info.run_dir)
    assert "gate/report" not in got["summary"]
    (report,) = [a for a in got["artifacts"] if a.type == ARTIFACT_TYPE]
    (entry,) = report.manifest.contents
    assert entry.path == "results.json"
    assert json.loads(Path(entry.local_path).read_text()) == results


@pytest.mark.heavy
def test_importing_the_integration_does_not_import_wandb() -> None:
    """`import gate` must work without the extra: wandb is imported on first use."""
    code = ("import sys, gate.integrations.wandb_log; "
            "sys.exit(1 if 'wandb' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or "wandb was imported eagerly"


def test_logs_into_the_live_training_run_without_finishing_it(wandb_home: Path) -> None:
    """Called from the training script itself: same run, left open for its owner."""
    results, out = _out_dir(wandb_home, "passing.json")
    training = wandb.init(project="finetunes", id="ft-live", settings=wandb.Settings(**SETTINGS))
    try:
        info = log_to_wandb(results, out, project="finetunes", run_id="ft-live")
        assert info.run_id == "ft-live"
        assert wandb.run is training, "the caller's run must stay open"
        assert training.summary["gate/verdict"] == "PASS"
        training.log({"train/loss": 0.5})  # still usable afterwards
    finally:
        training.finish()
    _flush()
    assert len(list((wandb_home / "wandb-dir" / "wandb").glob("offline-run-*-ft-live"))) == 1
