"""gate.evaluate.lmeval_io on real lm-eval 0.4 output (fixtures from make_lmeval_fixtures.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gate.errors import EXIT_INPUT, InputError, PairingError
from gate.evaluate.lmeval_io import records_from_evaluation, records_from_output_dir
from gate.evaluate.records import Aggregation, ItemKey, TaskRecords
from gate.verdict.pairing import pair_all, pair_records

FIXTURES = Path(__file__).parents[1] / "fixtures"
LMEVAL = FIXTURES / "lmeval"
BASE, CAND, MISMATCH = LMEVAL / "out-base", LMEVAL / "out-cand", LMEVAL / "out-mismatch"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _samples_file(out: Path, task: str) -> Path:
    (path,) = out.glob(f"*/samples_{task}_*.jsonl")
    return path


def _results_file(out: Path) -> Path:
    (path,) = out.glob("*/results_*.json")
    return path


@pytest.fixture(scope="module")
def base() -> dict[str, TaskRecords]:
    return records_from_output_dir(BASE)[0]


@pytest.fixture(scope="module")
def cand() -> dict[str, TaskRecords]:
    return records_from_output_dir(CAND)[0]


@pytest.fixture
def base_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(BASE, dst)
    return dst


# --- parsing the CLI's output folder ----------------------------------------------------


@pytest.mark.parametrize("out", [BASE, CAND])
@pytest.mark.parametrize(("task", "metric"), [("gate_toy_mc", "acc"), ("gate_toy_mc", "acc_norm"),
                                              ("gate_toy_gen", "exact_match"),
                                              ("gate_toy_ppl", "word_perplexity"),
                                              ("gate_toy_ppl", "byte_perplexity"),
                                              ("gate_toy_ppl", "bits_per_byte")])
def test_recomputed_score_equals_lmeval_aggregate(out: Path, task: str, metric: str) -> None:
    recs, results = records_from_output_dir(out, metrics={task: metric})
    rec = recs[task]
    filt = rec.extra["filter"]
    reported = results["results"][task][f"{metric},{filt}"]
    assert rec.metric == metric
    assert rec.n == 20
    assert math.isclose(rec.score, reported, rel_tol=1e-9)
    assert rec.reported_score == reported


def test_default_metric_filter_and_aggregation(base: dict[str, TaskRecords]) -> None:
    mc, gen, ppl = base["gate_toy_mc"], base["gate_toy_gen"], base["gate_toy_ppl"]
    assert (mc.metric, mc.aggregation, mc.extra["filter"]) == ("acc", Aggregation.MEAN, "none")
    # gate_toy_gen declares filters "first" then "lower": the first is used (0.5, not 0.2)
    assert (gen.metric, gen.extra["filter"], gen.score) == ("exact_match", "first", 0.5)
    assert (ppl.metric, ppl.aggregation) == ("word_perplexity", Aggregation.WEIGHTED_PERPLEXITY)
    assert mc.higher_is_better and gen.higher_is_better and not ppl.higher_is_better
    assert mc.binary and gen.binary and not ppl.binary
    assert mc.n_choices == 4 and mc.chance == 0.25 and gen.n_choices is None
    assert mc.version == "1.0"


def test_na_stderr_becomes_none(base: dict[str, TaskRecords]) -> None:
    assert base["gate_toy_ppl"].reported_stderr is None  # lm-eval wrote "N/A"
    assert base["gate_toy_mc"].reported_stderr == pytest.approx(0.0819178021909125)


def test_perplexity_denominators_are_words_and_bytes() -> None:
    texts = [json.loads(line)["text"] for line in (LMEVAL / "data/ppl.jsonl").read_text().splitlines()]
    words = records_from_output_dir(BASE)[0]["gate_toy_ppl"]
    bpb = records_from_output_dir(BASE, metrics={"gate_toy_ppl": "bits_per_byte"})[0]["gate_toy_ppl"]
    assert bpb.aggregation is Aggregation.BITS_PER_BYTE
    assert list(words.den) == [len(t.split()) for t in texts]
    assert list(bpb.den) == [len(t.encode("utf-8")) for t in texts]
    np.testing.assert_array_equal(words.num, bpb.num)  # the same loglikelihoods
    assert all(n < 0 for n in words.num)


def test_items_sorted_by_doc_id_with_hashes(base: dict[str, TaskRecords]) -> None:
    rec = base["gate_toy_mc"]
    rows = {r["doc_id"]: r for r in _rows(_samples_file(BASE, "gate_toy_mc"))}
    assert [k.doc_id for k in rec.keys] == list(range(20))
    assert rec.keys[5] == ItemKey(5, rows[5]["doc_hash"], rows[5]["prompt_hash"], rows[5]["target_hash"])


def test_texts_show_prompt_gold_and_chosen_option(base: dict[str, TaskRecords]) -> None:
    mc = base["gate_toy_mc"]
    data = [json.loads(line) for line in (LMEVAL / "data/mc.jsonl").read_text().splitlines()]
    assert mc.texts is not None
    for text, value, doc in zip(mc.texts, mc.values, data, strict=True):
        assert text.prompt == doc["question"]
        assert text.target == doc["choices"][doc["label"]]
        assert text.response in doc["choices"]
        assert (text.response == text.target) == (value == 1.0)
    gen = base["gate_toy_gen"]
    assert gen.texts is not None
    rows = [r for r in _rows(_samples_file(BASE, "gate_toy_gen")) if r["filter"] == "first"]
    assert [t.response for t in gen.texts] == [r["filtered_resps"][0] for r in rows]
    assert all((t.response == t.target) == (v == 1.0) for t, v in zip(gen.texts, gen.values, strict=True))


def test_config_hash_ignores_the_model_args_the_cli_merges_in(base, cand) -> None:
    for task in base:
        assert base[task].config_hash == cand[task].config_hash
    assert base["gate_toy_mc"].config_hash != base["gate_toy_gen"].config_hash


def test_provenance_is_returned() -> None:
    _, results = records_from_output_dir(BASE)
    assert results["lm_eval_version"] == "0.4.13"
    assert results["config"]["model_args"]["pretrained"] == "toy-base"


def test_accepts_model_subfolder_or_its_parent(base: dict[str, TaskRecords]) -> None:
    (sub,) = [p for p in BASE.iterdir() if p.is_dir()]
    again = records_from_output_dir(sub)[0]
    np.testing.assert_array_equal(again["gate_toy_mc"].num, base["gate_toy_mc"].num)


def test_two_model_subfolders_is_ambiguous(tmp_path: Path) -> None:
    for out in (BASE, CAND):
        shutil.copytree(next(out.iterdir()), tmp_path / next(out.iterdir()).name)
    with pytest.raises(InputError) as err:
        records_from_output_dir(tmp_path)
    msg = str(err.value)
    assert "toy-base" in msg and "toy-cand" in msg and "pass the model subfolder" in msg
    assert err.value.exit_code == EXIT_INPUT


def test_newest_results_file_wins(base_copy: Path) -> None:
    """A second run in the same folder: its results and samples are used, not the first's."""
    (sub,) = [p for p in base_copy.iterdir() if p.is_dir()]
    (cand_sub,) = [p for p in CAND.iterdir() if p.is_dir()]
    for f in cand_sub.iterdir():
        date = f.name.rsplit("_", 1)[1].rsplit(".", 1)[0]
        shutil.copy(f, sub / f.name.replace(date, "2999-01-01T00-00-00.000000"))
    recs, results = records_from_output_dir(base_copy)
    assert results["config"]["model_args"]["pretrained"] == "toy-cand"
    assert recs["gate_toy_mc"].score == pytest.approx(0.35)


def test_missing_samples_file_says_log_samples(base_copy: Path) -> None:
    missing = _samples_file(base_copy, "gate_toy_gen")
    missing.unlink()
    with pytest.raises(InputError) as err:
        records_from_output_dir(base_copy)
    assert str(missing) in str(err.value) and "--log_samples" in str(err.value)


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--log_samples"):
        records_from_output_dir(tmp_path / "nope")
    with pytest.raises(InputError, match="--log_samples"):
        records_from_output_dir(tmp_path)


def test_duplicate_doc_id_names_the_task(base_copy: Path) -> None:
    path = _samples_file(base_copy, "gate_toy_ppl")
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, lines[2]]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"gate_toy_ppl.*doc_id 2"):
        records_from_output_dir(base_copy)


def test_truncated_samples_line_is_an_error(base_copy: Path) -> None:
    path = _samples_file(base_copy, "gate_toy_mc")
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) - 40], encoding="utf-8")
    with pytest.raises(InputError, match="line 20 is not JSON"):
        records_from_output_dir(base_copy)


def test_unknown_metric_lists_the_choices() -> None:
    with pytest.raises(InputError) as err:
        records_from_output_dir(BASE, metrics={"gate_toy_mc": "f1"})
    assert "'acc', 'acc_norm'" in str(err.value)
    with pytest.raises(InputError, match="not evaluated"):
        records_from_output_dir(BASE, metrics={"no_such_task": "acc"})


def test_samples_that_disagree_with_reported_score_are_refused(base_copy: Path) -> None:
    path = _results_file(base_copy)
    results = json.loads(path.read_text(encoding="utf-8"))
    results["results"]["gate_toy_mc"]["acc,none"] = 0.9
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(InputError, match=r"gate_toy_mc.*recomputed.*0\.9"):
        records_from_output_dir(base_copy)


# --- aggregation detection on the in-memory shape -----------------------------------------


def _evaluation_from(out: Path) -> dict:
    """The simple_evaluate dict shape, rebuilt from an output folder (JSON leaves)."""
    results = json.loads(_results_file(out).read_text(encoding="utf-8"))
    results["samples"] = {t: _rows(_samples_file(out, t)) for t in results["configs"]}
    return results


def test_default_metrics_use_lmeval_registry_aggregation() -> None:
    """Tasks without metric_list: the aggregation comes from lm-eval's metric registry."""
    ev = _evaluation_from(BASE)
    for cfg in ev["configs"].values():
        del cfg["metric_list"]
    recs = records_from_evaluation(ev, metrics={"gate_toy_ppl": "bits_per_byte"})
    assert recs["gate_toy_mc"].aggregation is Aggregation.MEAN
    assert recs["gate_toy_ppl"].aggregation is Aggregation.BITS_PER_BYTE
    assert recs["gate_toy_mc"].metric == "acc"  # first metric lm-eval reported


def test_corpus_aggregation_keeps_lmeval_score() -> None:
    ev = _evaluation_from(BASE)
    ev["configs"]["gate_toy_gen"]["metric_list"][0]["aggregation"] = "bleu"
    rec = records_from_evaluation(ev)["gate_toy_gen"]
    assert rec.aggregation is Aggregation.CORPUS
    assert rec.score == rec.reported_score == 0.5
    assert not rec.binary and np.isnan(rec.num).all()


def test_value_shape_must_fit_aggregation() -> None:
    ev = _evaluation_from(BASE)
    ev["configs"]["gate_toy_ppl"]["metric_list"][0]["aggregation"] = "mean"
    with pytest.raises(InputError, match=r"gate_toy_ppl.*does not fit aggregation mean"):
        records_from_evaluation(ev)


def test_evaluation_without_samples_is_refused() -> None:
    ev = _evaluation_from(BASE)
    del ev["samples"]
    with pytest.raises(InputError, match="log_samples=True"):
        records_from_evaluation(ev)


# --- pairing ----------------------------------------------------------------------------


def test_pair_records_aligns_by_doc_id(base, cand) -> None:
    shuffled = cand["gate_toy_mc"]
    perm = np.random.default_rng(0).permutation(shuffled.n)
    shuffled = replace(shuffled, keys=[shuffled.keys[i] for i in perm], num=shuffled.num[perm],
                       den=shuffled.den[perm], texts=[shuffled.texts[i] for i in perm])
    b, c = pair_records(base["gate_toy_mc"], shuffled)
    assert b.keys == c.keys == base["gate_toy_mc"].keys
    np.testing.assert_array_equal(c.num, cand["gate_toy_mc"].num)
    assert c.texts == cand["gate_toy_mc"].texts
    assert c.score == pytest.approx(0.35)


def test_mismatched_doc_hash_is_a_pairing_error(base) -> None:
    mismatch = records_from_output_dir(MISMATCH)[0]
    with pytest.raises(PairingError) as err:
        pair_records(base["gate_toy_mc"], mismatch["gate_toy_mc"])
    (problem,) = err.value.problems
    assert problem.key == "gate_toy_mc/doc_id=3" and "doc_hash" in problem.message
    assert problem.fix == "evaluate both models on the same task version and item selection"
    assert err.value.exit_code == EXIT_INPUT


def test_missing_items_are_listed_and_capped(base) -> None:
    full = base["gate_toy_mc"]
    big = replace(full, keys=[ItemKey(i, f"h{i}") for i in range(60)], num=np.zeros(60),
                  den=np.ones(60), texts=None)
    small = replace(big, keys=big.keys[:30], num=big.num[:30], den=big.den[:30])
    with pytest.raises(PairingError) as err:
        pair_records(big, small)
    problems = err.value.problems
    assert len(problems) == 21
    assert problems[0].key == "gate_toy_mc/doc_id=30" and "base only" in problems[0].message
    assert "10 more" in problems[-1].message


def test_metric_or_aggregation_mismatch_is_refused(base) -> None:
    other = replace(base["gate_toy_mc"], metric="acc_norm")
    with pytest.raises(PairingError, match="acc_norm"):
        pair_records(base["gate_toy_mc"], other)


def test_pair_all_collects_every_problem(base, cand) -> None:
    mismatch = records_from_output_dir(MISMATCH)[0]
    cand_missing = {t: r for t, r in mismatch.items() if t != "gate_toy_ppl"}
    with pytest.raises(PairingError) as err:
        pair_all(base, cand_missing)
    keys = [p.key for p in err.value.problems]
    assert keys == ["gate_toy_ppl", "gate_toy_mc/doc_id=3"]
    pairs = pair_all(base, cand)
    assert set(pairs) == set(base)
    assert all(b.keys == c.keys for b, c in pairs.values())


# --- a real in-process lm-eval run -------------------------------------------------------


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory: pytest.TempPathFactory) -> dict:
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    sys.path.insert(0, str(FIXTURES))
    import make_lmeval_fixtures as fx
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("lmeval")
    model = fx.build_model(tmp / "toy-base", seed=0)  # the fixtures' base model, rebuilt
    tasks = fx.write_tasks(tmp / "tasks")
    return simple_evaluate(model="hf", model_args={"pretrained": str(model), "dtype": "float32",
                                                   "device": "cpu"},
                           tasks=list(fx.TASKS), task_manager=TaskManager(include_path=str(tasks)),
                           log_samples=True, batch_size=4, random_seed=0, numpy_random_seed=0,
                           torch_random_seed=0, fewshot_random_seed=0)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "metric"), [("gate_toy_mc", "acc"), ("gate_toy_gen", "exact_match"),
                                              ("gate_toy_ppl", "word_perplexity"),
                                              ("gate_toy_ppl", "bits_per_byte")])
def test_inprocess_score_equals_lmeval_aggregate(inprocess: dict, task: str, metric: str) -> None:
    rec = records_from_evaluation(inprocess, metrics={task: metric})[task]
    reported = inprocess["results"][task][f"{metric},{rec.extra['filter']}"]
    assert math.isclose(rec.score, reported, rel_tol=1e-9)


@pytest.mark.slow
def test_inprocess_and_cli_output_parse_alike(inprocess: dict, base) -> None:
    """Native tuples/ints in process, strings on disk: the same records either way."""
    recs = records_from_evaluation(inprocess)
    for task, rec in recs.items():
        b, c = pair_records(base[task], rec)
        np.testing.assert_allclose(c.num, b.num, rtol=1e-5)
        np.testing.assert_array_equal(c.den, b.den)
        assert c.texts == b.texts
        assert (c.metric, c.aggregation, c.n_choices, c.binary) == \
            (b.metric, b.aggregation, b.n_choices, b.binary)


def test_nested_groups_expand_to_their_leaf_tasks_in_lm_evals_order() -> None:
    """`gate compare --suite default` names `mmlu`; lm_eval's output holds its 57 leaves
    under four category groups."""
    from gate.evaluate.lmeval_io import group_leaves

    results = {"group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_anatomy", "mmlu_astronomy"],
                                  "mmlu_other": ["mmlu_virology"], "arc_easy": []}}
    assert group_leaves(results) == {"mmlu": ["mmlu_anatomy", "mmlu_astronomy", "mmlu_virology"],
                                     "mmlu_stem": ["mmlu_anatomy", "mmlu_astronomy"], "mmlu_other": ["mmlu_virology"]}
    assert group_leaves({}) == {}
