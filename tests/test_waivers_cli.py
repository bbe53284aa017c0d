"""Waivers through the CLI (issue 14): `gate waive` writes an entry from a
results.json; `gate run --waivers` applies it only to the exact candidate it
was granted for, only until it expires, and only up to the drop it accepts;
every output says WAIVED. Bad waiver files exit 2 naming the file and key.

The fake engine stands in for the models (gate.serve.fake): `forgetful`
loses 50 points on the general task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import BASE, FORGETFUL, fake_adapter_dir, fake_gate_config

from gate.cli.main import cli
from gate.serve.fake import FakeEngine

pytestmark = pytest.mark.heavy

@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_gate_config(tmp_path, adapters=("forgetful",))
    monkeypatch.setattr("gate.serve.factory.make_engine",
                        lambda _cfg: FakeEngine({"base": BASE, "forgetful": FORGETFUL}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gate(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return done.exit_code, done.output


def general_task(world: Path) -> dict:
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    return next(t for tier in results["candidates"][0]["tiers"] for t in tier["tasks"] if t["task"] == "fk_general")


def waive(drop: str = "0.7", expires: str = "2099-12-31") -> tuple[int, str]:
    return gate("waive", "--results", "out/results.json", "--candidate", "forgetful", "--task", "fk_general",
                "--reason", "fk_general is not used by this product (TICKET-7)", "--by", "alice@example.com",
                "--expires", expires, "--allowed-drop", drop)


def test_a_matching_waiver_turns_the_fail_into_waived_everywhere(world: Path) -> None:
    code, out = gate("run", "--config", "gate.yaml")
    assert code == 1, out
    code, out = waive()
    assert code == 0, out
    assert "waiver added for forgetful (fk_general)" in out
    entry = yaml.safe_load((world / "waivers.yaml").read_text(encoding="utf-8"))["waivers"][0]
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    assert entry["fingerprint"] == results["candidates"][0]["fingerprint"]

    code, out = gate("run", "--config", "gate.yaml", "--waivers", "waivers.yaml")
    assert code == 0, out
    task = general_task(world)
    assert task["verdict"] == "WAIVED" and task["waiver"]["approved_by"] == "alice@example.com"
    assert task["delta"] < -0.4 and task["margin"] == pytest.approx(0.7)
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["release"]["label"] == "PASS (not shown safe on 1 task; 1 waived)"  # fk_related: undecided
    assert results["release"]["waived"] == 1
    assert results["waivers"][0]["status"] == "in_force" and results["waivers"][0]["candidates"] == ["forgetful"]
    assert "WAIVED" in out and "waiver for fk_general in force for forgetful" in out       # terminal
    summary = (world / "out" / "summary.md").read_text(encoding="utf-8")
    assert "🔖 WAIVED" in summary and "### Waivers" in summary and "TICKET-7" in summary
    junit = (world / "out" / "junit.xml").read_text(encoding="utf-8")
    assert '<skipped message="WAIVED: acc delta' in junit and "alice@example.com" in junit
    html = (world / "out" / "report.html").read_text(encoding="utf-8")
    assert 'class="verdict WAIVED"' in html and "waived by alice@example.com until 2099-12-31" in html
    assert "thresholds allow 2.0 pts" in html  # the waived drop next to the thresholds' own
    from gate.integrations.wandb_log import summary_metrics

    keys = summary_metrics(results)  # what the W&B run's summary gets
    assert keys["gate/waived"] == 1 and keys["gate/forgetful/waived"] == 1
    assert keys["gate/forgetful/general/verdict"] == "WAIVED"


def test_a_retrained_adapter_is_not_waived(world: Path) -> None:
    gate("run", "--config", "gate.yaml")
    assert waive()[0] == 0
    shutil.rmtree(world / "forgetful")
    fake_adapter_dir(world / "forgetful", b"forgetful-v2")  # same name, new weights
    code, out = gate("run", "--config", "gate.yaml", "--waivers", "waivers.yaml")
    assert code == 1, out
    assert general_task(world)["verdict"] == "FAIL" and general_task(world)["waiver"] is None
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["waivers"][0]["status"] == "no_match"
    assert "no candidate of this run has fingerprint" in out


def test_an_expired_waiver_is_reported_and_not_applied(world: Path) -> None:
    gate("run", "--config", "gate.yaml")
    assert waive()[0] == 0
    text = (world / "waivers.yaml").read_text(encoding="utf-8").replace("2099-12-31", "2020-01-31")
    (world / "waivers.yaml").write_text(text, encoding="utf-8")  # by hand: `gate waive` refuses a past date
    code, out = gate("run", "--config", "gate.yaml", "--waivers", "waivers.yaml")
    assert code == 1, out
    assert "expired on 2020-01-31: not applied" in out
    assert general_task(world)["verdict"] == "FAIL"


def test_a_drop_larger_than_the_waived_one_fails(world: Path) -> None:
    gate("run", "--config", "gate.yaml")
    assert waive(drop="0.3")[0] == 0
    code, out = gate("run", "--config", "gate.yaml", "--waivers", "waivers.yaml")
    assert code == 1, out
    task = general_task(world)
    assert task["verdict"] == "FAIL" and task["waiver"]["allowed_drop"]["absolute"] == pytest.approx(0.3)
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    assert "beyond the waived 30.0" in results["candidates"][0]["reason"]


BAD = {
    "unknown task": ({"task": "fk_nope"}, "waivers.0.task", "unknown task"),
    "target task": ({"task": "fk_target"}, "waivers.0.task", "target tier"),
    "malformed date": ({"expires": "31/01/2027"}, "waivers.0.expires", "YYYY-MM-DD"),
    "short fingerprint": ({"fingerprint": "abc123"}, "waivers.0.fingerprint", "64 lowercase hex"),
    "no reason": ({"reason": "  "}, "waivers.0.reason", "not reviewable"),
    "no approver": ({"approved_by": None}, "waivers.0.approved_by", ""),
    "task and tier": ({"tier": "general"}, "waivers.0", "exactly one of"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_waiver_file_exits_2_naming_file_and_key(world: Path, case: str) -> None:
    change, key, words = BAD[case]
    entry = {"candidate": "forgetful", "fingerprint": "0" * 64, "task": "fk_general",
             "allowed_drop": {"absolute": 0.1}, "reason": "r", "approved_by": "alice", "expires": "2099-01-01"}
    entry.update(change)
    entry = {k: v for k, v in entry.items() if v is not None}
    (world / "waivers.yaml").write_text(yaml.safe_dump({"waivers": [entry]}), encoding="utf-8")
    code, out = gate("run", "--config", "gate.yaml", "--waivers", "waivers.yaml")
    assert code == 2, out
    assert f"waivers.yaml: {key}" in out and words in out
    assert not (world / "out").exists()  # nothing written


def test_gate_waive_refuses_bad_input_and_writes_nothing(world: Path) -> None:
    gate("run", "--config", "gate.yaml")
    code, out = waive(expires="2020-01-01")
    assert code == 2 and "in the past" in out
    code, out = gate("waive", "--results", "out/results.json", "--candidate", "nobody", "--task", "fk_general",
                     "--reason", "r", "--by", "b", "--expires", "2099-01-01")
    assert code == 2 and "no candidate 'nobody'" in out
    code, out = waive(expires="next week")
    assert code == 2 and "YYYY-MM-DD" in out
    assert not (world / "waivers.yaml").exists()
    assert waive()[0] == 0
    before = (world / "waivers.yaml").read_text(encoding="utf-8")
    code, out = gate("waive", "--results", "out/results.json", "--candidate", "forgetful", "--task", "fk_target",
                     "--reason", "r", "--by", "b", "--expires", "2099-01-01")
    assert code == 2 and "target tier" in out
    assert (world / "waivers.yaml").read_text(encoding="utf-8") == before
    # a second entry is appended; the first, and the file's comments, are kept as written
    code, out = gate("waive", "--results", "out/results.json", "--candidate", "forgetful", "--tier", "related",
                     "--reason", "related drift accepted", "--by", "bob", "--expires", "2099-01-01",
                     "--allowed-drop", "0.1")
    assert code == 0, out
    after = (world / "waivers.yaml").read_text(encoding="utf-8")
    assert after.startswith(before) and len(yaml.safe_load(after)["waivers"]) == 2
