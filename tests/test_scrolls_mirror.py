"""scrolls_govreport offline and paired (issue 15).

lm-eval's own SCROLLS task (its Python class, unmodified) reads gov_report
from `https://huggingface.co/datasets/tau/scrolls/resolve/main/gov_report.zip`
and downloads its metric script from the same repo when it is built. With a
dataset mirror laid out as `huggingface-cli download --repo-type dataset
tau/scrolls --local-dir MIRROR/tau/scrolls` leaves it, both come from the
mirror; the gate scores ROUGE per document (gate.evaluate.rouge), so base
and candidate pair document by document, and their mean equals lm-eval's
number (checked on every read). The mirror here holds a small gov_report
zip of made-up reports in the real file's shape (duplicate ids merge their
summaries, as lm-eval does) and a stand-in for the metric script
(tests/fixtures/scrolls). The fake engine answers a document right with the
model's accuracy (its first reference summary) and wrong otherwise.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import BASE, FORGETFUL, fake_gate_config

from gate.cli.main import cli
from gate.evaluate.rouge import document_rouge
from gate.serve.fake import FakeEngine, FakeSkill

pytestmark = pytest.mark.heavy
FIXTURES = Path(__file__).parent / "fixtures" / "scrolls"
N_REPORTS = 150  # a continuous metric needs 50 changed documents for a paired verdict


def report(i: int) -> dict:
    topic = ["water", "roads", "schools", "energy", "health", "farms"][i % 6]
    return {"id": f"GAO_{i:03d}", "pid": f"GAO_{i:03d}_0",
            "input": f"Report {i}. The agency reviewed {topic} programs in {2000 + i} and found gaps in oversight.",
            "output": f"The agency found gaps in {topic} oversight in {2000 + i}."}


def scrolls_mirror(root: Path, *, metric: bool = True) -> Path:
    repo = root / "mirror" / "tau" / "scrolls"
    repo.mkdir(parents=True)
    validation = [report(i) for i in range(N_REPORTS)]
    validation.append({**report(7), "output": "A second summary of report seven."})  # a second reference
    with zipfile.ZipFile(repo / "gov_report.zip", "w") as zf:
        zf.writestr("gov_report/train.jsonl", "\n".join(json.dumps(report(100 + i)) for i in range(3)))
        zf.writestr("gov_report/validation.jsonl", "\n".join(json.dumps(r) for r in validation))
    if metric:
        (repo / "metrics").mkdir()
        shutil.copy(FIXTURES / "scrolls_metric.py", repo / "metrics" / "scrolls.py")
    return root / "mirror"


def world(root: Path, monkeypatch: pytest.MonkeyPatch, *, metric: bool = True) -> Path:
    scrolls_mirror(root, metric=metric)
    config = fake_gate_config(root, adapters=("forgetful",), dataset_mirror="mirror")
    suite = yaml.safe_load((root / "suite" / "suite.yaml").read_text(encoding="utf-8"))
    suite["tiers"]["general"] = [{"task": "scrolls_govreport", "metric": "rougeL"}]
    (root / "suite" / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    skills = {"base": FakeSkill({**BASE.accuracy, "scrolls_govreport": 0.9}),
              "forgetful": FakeSkill({**FORGETFUL.accuracy, "scrolls_govreport": 0.3})}
    monkeypatch.setattr("gate.serve.factory.make_engine", lambda _cfg: FakeEngine(skills))
    monkeypatch.chdir(root)
    return config


def test_govreport_runs_from_the_mirror_and_pairs_by_document(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    world(tmp_path, monkeypatch)
    done = CliRunner().invoke(cli, ["run", "--config", "gate.yaml"], catch_exceptions=False)
    assert done.exit_code == 1, done.output  # forgetful loses most summaries
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    (task,) = [t for tier in results["candidates"][0]["tiers"] for t in tier["tasks"]
               if t["task"] == "scrolls_govreport"]
    assert task["method"] != "unpaired_stderr" and task["aggregation"] == "mean"
    assert task["n"] == N_REPORTS  # the duplicate id merged into one document with two summaries
    assert task["verdict"] == "FAIL" and task["ci_high"] < 0
    # ROUGE on SCROLLS' 0-100 scale: a right answer is the first summary (100), a wrong one scores 0
    assert 80 <= task["base_score"] <= 100 and task["candidate_score"] <= 50
    assert task["delta"] == pytest.approx(task["candidate_score"] - task["base_score"])
    assert not list((tmp_path / "mirror" / "tau" / "scrolls").glob("*_py.py"))  # the mirror is not written to


def test_a_mirror_without_the_metric_script_is_exit_2_naming_the_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    world(tmp_path, monkeypatch, metric=False)
    done = CliRunner().invoke(cli, ["run", "--config", "gate.yaml"])
    assert done.exit_code == 2, done.output
    assert "metrics/scrolls.py" in done.output and "huggingface-cli download --repo-type dataset tau/scrolls" \
        in done.output
    assert not (tmp_path / "out" / "results.json").exists()


def test_document_rouge_is_the_best_reference_f_measure_x100() -> None:
    # rougeL against "the cat sat down": LCS 3 of 3 predicted and 4 reference words -> F = 6/7
    assert document_rouge("rougeL", "the cat sat", ["a dog barked", "the cat sat down"]) == pytest.approx(600 / 7)
    assert document_rouge("rouge1", "The Cat, sat!", "the cat sat") == pytest.approx(100.0)  # case and punctuation
    assert document_rouge("rouge2", "nothing alike", ["totally different words"]) == 0.0
    with pytest.raises(ValueError):
        document_rouge("rougeL", "x", [])
