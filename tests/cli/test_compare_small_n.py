"""`gate compare` at the edges issue 11 found: tiny or identical samples,
infinite log-likelihoods, and a gain with two margins.

The lm-eval output folders are made from the committed real `lm_eval
--log_samples` output (tests/fixtures/lmeval/out-base): its results file and
per-sample lines, with the documents multiplied to n items and the per-item
metric set, so the layout is exactly what lm-eval writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gate.cli.main import cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lmeval" / "out-base" / "toy-base"
STAMP = "2026-11-28T20-17-07.266739"


def lmeval_folder(dest: Path, *, acc: np.ndarray | None = None,
                  loglik: np.ndarray | None = None, gen: bool = False) -> Path:
    """An lm-eval output folder with gate_toy_mc (acc values `acc`) and/or
    gate_toy_ppl (per-text log-likelihoods `loglik`, 5 words each)."""
    run = dest / "toy-base"
    run.mkdir(parents=True)
    results = json.loads(next(FIXTURE.glob("results_*.json")).read_text(encoding="utf-8"))
    tasks = {}
    if acc is not None:
        tasks["gate_toy_mc"] = [_mc_line(i, float(v)) for i, v in enumerate(acc)]
    if loglik is not None:
        tasks["gate_toy_ppl"] = [_ppl_line(i, float(v)) for i, v in enumerate(loglik)]
    if gen:  # lm-eval's own 20 gate_toy_gen samples, unchanged
        tasks["gate_toy_gen"] = [json.loads(x) for x in next(FIXTURE.glob(
            "samples_gate_toy_gen_*.jsonl")).read_text(encoding="utf-8").splitlines()]
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        results[key] = {t: results[key][t] for t in tasks if t in results[key]}
    for task, lines in tasks.items():
        results["n-samples"][task] = {"original": len(lines), "effective": len(lines)}
        summary = results["results"][task]
        if task == "gate_toy_mc":
            summary["acc,none"] = float(np.mean(acc))  # type: ignore[arg-type]
        if task == "gate_toy_ppl":  # lm-eval's aggregates of the lines written
            total = float(np.sum(loglik))  # type: ignore[arg-type]
            summary["word_perplexity,none"] = float(np.exp(-total / (5 * len(lines))))
            summary["byte_perplexity,none"] = float(np.exp(-total / (25 * len(lines))))
            summary["bits_per_byte,none"] = -total / (25 * len(lines)) / np.log(2)
        with (run / f"samples_{task}_{STAMP}.jsonl").open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    (run / f"results_{STAMP}.json").write_text(json.dumps(results), encoding="utf-8")
    return dest


def _template(task: str) -> dict:  # type: ignore[type-arg]
    path = next(FIXTURE.glob(f"samples_{task}_*.jsonl"))
    return json.loads(path.read_text(encoding="utf-8").splitlines()[0])


MC, PPL = _template("gate_toy_mc"), _template("gate_toy_ppl")


def _mc_line(i: int, value: float) -> dict:  # type: ignore[type-arg]
    line = copy.deepcopy(MC)
    line.update(doc_id=i, doc_hash=f"mc{i:05d}", acc=value, acc_norm=value)
    line["doc"]["passage"] = f"p{i // 10}"  # ten questions per passage
    return line


def _ppl_line(i: int, ll: float) -> dict:  # type: ignore[type-arg]
    line = copy.deepcopy(PPL)
    line.update(doc_id=i, doc_hash=f"ppl{i:05d}", word_perplexity=[ll, 5], byte_perplexity=[ll, 25],
                bits_per_byte=[ll, 25])
    return line


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def thresholds(tmp: Path, general: str = "{absolute: 0.03}", target: str = "{absolute: 0.02}",
               inconclusive: str = "fail", others: str = "fail") -> Path:
    return write(tmp / "thresholds.yaml", f"""
alpha: 0.05
inconclusive: {inconclusive}
sequential: {{enabled: false}}
tiers:
  target: {{required_gain: {target}}}
  related: {{allowed_drop: {{absolute: 0.03}}, inconclusive: {others}}}
  general: {{allowed_drop: {general}, inconclusive: {others}}}
""")


def suite(tmp: Path) -> Path:
    """Target: gate_toy_mc (acc); related: gate_toy_gen; general: gate_toy_ppl."""
    return write(tmp / "suite.yaml", """name: small
tiers:
  target: [{task: gate_toy_mc, metric: acc}]
  related: [{task: gate_toy_gen, metric: exact_match}]
  general: [{task: gate_toy_ppl, metric: word_perplexity}]
""")


def compare(tmp: Path, base: Path, cand: Path, suite_file: Path | None,
            th: Path) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    """`gate compare`; without a suite every task is judged in the general tier."""
    out = tmp / "out"
    args = ["compare", "--base", str(base), "--candidate", f"tuned={cand}",
            "--thresholds", str(th), "--out", str(out)]
    res = CliRunner().invoke(cli, args + (["--suite", str(suite_file)] if suite_file else []))
    results = json.loads((out / "results.json").read_text(encoding="utf-8")) \
        if (out / "results.json").exists() else {}
    return res.exit_code, results, res.output


def task_of(results: dict, name: str | None = None) -> dict:  # type: ignore[type-arg]
    return next(t for tier in results["candidates"][0]["tiers"] for t in tier["tasks"]
                if name is None or t["task"] == name)


@pytest.mark.parametrize(("n", "verdict", "code"), [(50, "INCONCLUSIVE", 1), (400, "PASS", 0)])
def test_identical_items_prove_no_drop_only_when_there_are_enough(
        tmp_path: Path, n: int, verdict: str, code: int) -> None:
    values = (np.arange(n) % 3 != 0).astype(float)  # 67%, well above chance (25%)
    base = lmeval_folder(tmp_path / "base", acc=values)
    cand = lmeval_folder(tmp_path / "cand", acc=values)
    exit_code, results, output = compare(tmp_path, base, cand, None, thresholds(tmp_path))
    assert exit_code == code, output
    task = task_of(results)
    assert (task["verdict"], task["delta"], task["method"]) == (verdict, 0.0, "paired_exact")
    assert task["ci_low"] < 0 < task["ci_high"]  # never [0, 0]
    if verdict == "INCONCLUSIVE":
        assert task["advice"]["items_needed"] > n
    # what the run could see, in results.json and the report
    assert task["detectable"] < -0.03
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert f"this run could detect a drop of {-100 * task['detectable']:.1f} points or more" in report


def test_a_candidate_with_infinite_loglikelihood_items_fails(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ll = -5 * rng.gamma(4.0, 0.5, 200)
    broken = ll + rng.normal(0, 0.2, 200)
    broken[::5] = -np.inf  # 1 item in 5 gets zero probability
    base = lmeval_folder(tmp_path / "base", loglik=ll)
    cand = lmeval_folder(tmp_path / "cand", loglik=broken)
    th = thresholds(tmp_path, general="{relative: 0.05}", inconclusive="pass")
    exit_code, results, output = compare(tmp_path, base, cand, None, th)
    assert exit_code == 1, output
    task = task_of(results)
    assert (task["verdict"], task["method"]) == ("FAIL", "infinite")
    assert task["candidate_score"] is None  # infinite: JSON has no infinity
    assert task["infinite_items"] == list(range(0, 200, 5))
    assert "40 of 200 candidate items have an infinite word_perplexity" in task["advice"]["message"]
    assert results["release"]["verdict"] == "FAIL"


def test_nan_items_are_an_incomplete_evaluation_not_a_verdict(tmp_path: Path) -> None:
    values = (np.arange(200) % 2).astype(float)
    broken = values.copy()
    broken[10:200] = np.nan  # 190 of 200 items lost
    base = lmeval_folder(tmp_path / "base", acc=values)
    cand = lmeval_folder(tmp_path / "cand", acc=broken)
    exit_code, _results, output = compare(tmp_path, base, cand, None,
                                         thresholds(tmp_path, inconclusive="pass"))
    assert exit_code == 3, output
    assert "gate_toy_mc: 190 of 200 candidate items have NaN" in output
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_gain_with_two_margins_asks_for_the_larger(tmp_path: Path) -> None:
    """Required gain: absolute 2 points and relative 10% of a 50% base = 5
    points. A 4.6-point gain whose interval lies above 2 but not above 5 is
    not a PASS (it used to pass against the laxer margin)."""
    n = 4000
    rng = np.random.default_rng(3)
    base_v = (rng.random(n) < 0.5).astype(float)
    cand_v = base_v.copy()
    wrong = np.flatnonzero(base_v == 0)
    right = np.flatnonzero(base_v == 1)
    cand_v[wrong[:400]] = 1.0  # 400 gains
    cand_v[right[:216]] = 0.0  # 216 losses: +184 items = +4.6 points
    ll = -5 * rng.gamma(4.0, 0.5, 100)
    base = lmeval_folder(tmp_path / "base", acc=base_v, loglik=ll, gen=True)
    cand = lmeval_folder(tmp_path / "cand", acc=cand_v, loglik=ll, gen=True)
    th = thresholds(tmp_path, target="{absolute: 0.02, relative: 0.10}", inconclusive="warn",
                    others="pass")
    exit_code, results, output = compare(tmp_path, base, cand, suite(tmp_path), th)
    task = task_of(results, "gate_toy_mc")
    assert task["delta"] == pytest.approx(0.046)
    assert task["margin"] == pytest.approx(0.10 * base_v.mean())
    assert task["ci_low"] > 0.02 and task["ci_low"] < task["margin"]
    assert task["verdict"] != "PASS"
    # under warn it counts as a pass, but no output calls it a plain PASS
    assert exit_code == 0, output
    assert results["candidates"][0]["label"].startswith("PASS (not shown safe on")
    assert "not shown safe" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_a_cluster_key_switches_to_the_cluster_test_and_a_missing_field_is_named(tmp_path: Path) -> None:
    """400 questions on 40 passages; the candidate lost whole passages. Judged
    as independent items the drop looks precise; with `cluster: passage` the
    passages are the sampling unit (the cluster-robust test; its design effect
    is measured in tests/verdict/test_calibration.py)."""
    rng = np.random.default_rng(5)
    base_v = (rng.random(400) < 0.7).astype(float)
    cand_v = base_v.copy()
    for p in rng.choice(40, 6, replace=False):  # six passages forgotten entirely
        cand_v[10 * p:10 * p + 10] = 0.0
    flips = rng.random(400) < 0.1
    cand_v = np.where(flips, 1.0 - cand_v, cand_v)
    base = lmeval_folder(tmp_path / "base", acc=base_v, loglik=-5 * rng.gamma(4.0, 0.5, 60), gen=True)
    cand = lmeval_folder(tmp_path / "cand", acc=cand_v, loglik=-5 * rng.gamma(4.0, 0.5, 60), gen=True)
    th = thresholds(tmp_path, inconclusive="pass", others="pass")
    for cluster in (None, "passage"):
        key = f", cluster: {cluster}" if cluster else ""
        suite_file = write(tmp_path / "suite.yaml", f"""name: clustered
tiers:
  target: [{{task: gate_toy_gen, metric: exact_match}}]
  related: [{{task: gate_toy_ppl, metric: word_perplexity}}]
  general: [{{task: gate_toy_mc, metric: acc{key}}}]
""")
        _, results, output = compare(tmp_path, base, cand, suite_file, th)
        task = task_of(results, "gate_toy_mc")
        assert task["method"] == ("paired_cluster_t" if cluster else "paired_exact"), output
        assert task["ci_low"] < task["delta"] < task["ci_high"]
    suite_file = write(tmp_path / "suite.yaml", """name: clustered
tiers:
  target: [{task: gate_toy_gen, metric: exact_match}]
  related: [{task: gate_toy_ppl, metric: word_perplexity}]
  general: [{task: gate_toy_mc, metric: acc, cluster: article}]
""")
    exit_code, _, output = compare(tmp_path, base, cand, suite_file, th)
    assert exit_code == 2
    assert "the document has no field 'article' to cluster by" in output
    assert "gate_toy_mc.cluster" in output
