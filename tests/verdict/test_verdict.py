"""gate.verdict: each decision rule, the tier/candidate/release roll-up and the JSON shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gate.config.policy import TaskPolicy
from gate.errors import EXIT_FAIL, EXIT_PASS, ConfigError, InputError
from gate.evaluate.records import Aggregation, ItemKey, ItemText, TaskRecords
from gate.verdict.judge import (
    CandidateVerdict,
    Verdict,
    judge_candidate,
    judge_release,
    judge_task,
    judge_tier,
)
from gate.verdict.stats import holm

B = 2000  # bootstrap draws: plenty for decisions far from the boundary, fast


def acc(values: np.ndarray, *, task: str = "toy", n_choices: int | None = None,
        texts: list[ItemText] | None = None) -> TaskRecords:
    n = len(values)
    return TaskRecords(task, "acc", True, Aggregation.MEAN, [ItemKey(i, f"h{i}") for i in range(n)],
                       np.asarray(values, float), np.ones(n), binary=True, n_choices=n_choices,
                       texts=texts)


def pair(n: int, base_right: float, lost: float, won: float,
         task: str = "toy", n_choices: int | None = None) -> tuple[TaskRecords, TaskRecords]:
    """Deterministic paired outcomes: exact rates, no sampling noise."""
    base = np.zeros(n)
    base[: round(base_right * n)] = 1
    cand = base.copy()
    n_lost, n_won = round(lost * n), round(won * n)
    cand[:n_lost] = 0  # right before, wrong now
    cand[n - n_won:] = 1  # wrong before, right now
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    return (acc(base[order], task=task, n_choices=n_choices),
            acc(cand[order], task=task, n_choices=n_choices))


def drop(margin: float = 0.02, *, relative: float | None = None, tier: str = "general",
         inconclusive: str = "warn") -> TaskPolicy:
    return TaskPolicy(tier=tier, kind="drop", absolute=margin, relative=relative,  # type: ignore[arg-type]
                      inconclusive=inconclusive)  # type: ignore[arg-type]


def gain(margin: float) -> TaskPolicy:
    return TaskPolicy(tier="target", kind="gain", absolute=margin, relative=None,
                      inconclusive="fail")


def corpus(task: str, score: float, se: float) -> TaskRecords:
    return TaskRecords(task, "bleu", True, Aggregation.CORPUS, [], np.zeros(0), np.zeros(0),
                       reported_score=score, reported_stderr=se)


# ----------------------------------------------------------------- task rules

def test_small_symmetric_churn_passes_a_drop_policy() -> None:
    base, cand = pair(2000, 0.8, 0.01, 0.01)
    v = judge_task(base, cand, drop(0.02))
    assert v.verdict is Verdict.PASS and v.advice is None and v.flipped == ()


def test_a_large_drop_fails_and_lists_flipped_items() -> None:
    texts = [ItemText(f"q{i}", f"a{i}", f"a{i}") for i in range(400)]
    base, cand = pair(400, 0.9, 0.4, 0.0)
    base.texts = texts
    cand.texts = [ItemText(t.prompt, t.target, "wrong") for t in texts]
    v = judge_task(base, cand, drop(0.02))
    assert v.verdict is Verdict.FAIL
    assert v.comparison.delta == pytest.approx(-0.4)
    assert len(v.flipped) == 20  # capped
    for item in v.flipped:
        assert base.num[item.doc_id] == 1 and cand.num[item.doc_id] == 0
        assert item.prompt == f"q{item.doc_id}" and item.candidate_response == "wrong"


def test_a_small_sample_is_inconclusive_with_sized_advice() -> None:
    base, cand = pair(200, 0.8, 0.05, 0.04)
    v = judge_task(base, cand, drop(0.02))
    assert v.verdict is Verdict.INCONCLUSIVE
    assert v.advice is not None and v.advice.items_needed is not None
    assert v.advice.items_needed > 200
    assert v.advice.message.startswith("n=200 cannot decide a 2.0-point margin here; about ")
    assert "80% power for a true drop of twice the margin" in v.advice.message
    # sigma at the design effect (a true drop of 4 points, discordance 9%):
    # .09 - .04^2; (1.645 + .842) * sigma / .02, squared
    sigma = math.sqrt(0.09 - 0.04**2)
    assert v.advice.items_needed == math.ceil(((1.6448536 + 0.8416212) * sigma / 0.02) ** 2)


def test_zero_margin_advice_is_sized_on_the_observed_difference() -> None:
    base, cand = pair(200, 0.8, 0.05, 0.04)
    v = judge_task(base, cand, drop(0.0))
    assert v.verdict is Verdict.INCONCLUSIVE and v.advice is not None
    assert "zero margin" in v.advice.message and "observed -1.0 points" in v.advice.message


def test_identical_candidate_gets_an_interval_as_wide_as_n_allows() -> None:
    """Agreement on every item is not proof of no drop: the interval is not
    [0, 0] but the rule of three's (about 3 / n), so 100 items cannot show a
    drop below 2 points while 300 can."""
    base, _ = pair(100, 0.7, 0.0, 0.0)
    v = judge_task(base, acc(base.num.copy()), drop(0.02))
    assert v.comparison.delta == 0.0
    assert v.comparison.ci_low == pytest.approx(-v.comparison.ci_high)
    assert v.comparison.ci_high == pytest.approx(3 / 100, rel=0.05)  # -ln(0.05) / n
    assert v.verdict is Verdict.INCONCLUSIVE
    big, _ = pair(300, 0.7, 0.0, 0.0)
    v = judge_task(big, acc(big.num.copy()), drop(0.02))
    assert v.verdict is Verdict.PASS and v.comparison.ci_low > -0.02


@pytest.mark.parametrize("required", [0.05, 0.0])
def test_identical_candidate_never_passes_a_gain_requirement(required: float) -> None:
    base, _ = pair(300, 0.7, 0.0, 0.0)
    v = judge_task(base, acc(base.num.copy()), gain(required))
    assert v.verdict is not Verdict.PASS
    if required > 0:
        assert v.verdict is Verdict.FAIL
    cand_v = judge_candidate("same", "lora", {"target": [(base, acc(base.num.copy()),
                                                          gain(required))]})
    assert cand_v.verdict is Verdict.FAIL


def test_a_real_gain_passes_and_a_small_one_fails() -> None:
    base, cand = pair(1000, 0.4, 0.02, 0.25)
    assert judge_task(base, cand, gain(0.05)).verdict is Verdict.PASS
    base, cand = pair(1000, 0.4, 0.02, 0.03)
    v = judge_task(base, cand, gain(0.05))
    assert v.verdict is Verdict.FAIL and v.threshold == pytest.approx(0.05)


def test_relative_margin_and_the_stricter_of_both() -> None:
    base, cand = pair(4000, 0.5, 0.04, 0.01)  # a 3-point drop, precisely measured
    relative_only = TaskPolicy("general", "drop", absolute=None, relative=0.2)  # 10 points
    v = judge_task(base, cand, relative_only)
    assert v.margin == pytest.approx(0.1) and v.verdict is Verdict.PASS
    both = TaskPolicy("general", "drop", absolute=0.01, relative=0.2)  # stricter: 1 point
    v = judge_task(base, cand, both)
    assert v.margin == pytest.approx(0.01) and v.verdict is Verdict.FAIL


def test_base_at_chance_is_inconclusive_whatever_the_candidate_did() -> None:
    base, cand = pair(400, 0.26, 0.2, 0.0, n_choices=4)
    v = judge_task(base, cand, drop(0.02))
    assert v.verdict is Verdict.INCONCLUSIVE
    assert "base_at_chance" in v.flags and v.chance == 0.25
    assert v.advice is not None and "at chance" in v.advice.message
    healthy_base, healthy_cand = pair(400, 0.6, 0.2, 0.0, n_choices=4)
    assert judge_task(healthy_base, healthy_cand, drop(0.02)).verdict is Verdict.FAIL


def test_base_at_chance_on_the_target_tier_is_still_decided() -> None:
    """A target skill the base lacks is the point of fine-tuning: flag it, decide it."""
    base, cand = pair(400, 0.25, 0.0, 0.5, n_choices=4)  # base 25%, candidate 75%
    gain = TaskPolicy("target", "gain", absolute=0.05, relative=None)
    v = judge_task(base, cand, gain)
    assert "base_at_chance" in v.flags
    assert v.verdict is Verdict.PASS


def test_corpus_metric_uses_the_unpaired_fallback() -> None:
    v = judge_task(corpus("wmt", 0.30, 0.005), corpus("wmt", 0.20, 0.005), drop(0.02))
    d = v.to_dict()
    assert d["method"] == "unpaired_stderr" and d["verdict"] == "FAIL"
    v = judge_task(corpus("wmt", 0.30, 0.005), corpus("wmt", 0.30, 0.005), drop(0.02))
    assert v.verdict is Verdict.PASS


def test_perplexity_lower_is_better() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(10, 40, 500).astype(float)
    ll = -words * rng.gamma(2.0, 0.5, 500)
    n = len(words)
    k = [ItemKey(i, f"h{i}") for i in range(n)]

    def ppl(loglik: np.ndarray) -> TaskRecords:
        return TaskRecords("wiki", "word_perplexity", False, Aggregation.WEIGHTED_PERPLEXITY, k,
                           loglik, words)

    policy = drop(0.5)  # perplexity may rise by half a unit
    worse = judge_task(ppl(ll), ppl(ll - 0.3 * words), policy)
    assert worse.comparison.delta > 0.5 and worse.verdict is Verdict.FAIL
    same = judge_task(ppl(ll), ppl(ll.copy()), policy)  # no item changed: no information
    assert same.comparison.delta == 0.0 and same.verdict is Verdict.INCONCLUSIVE
    assert "too_little_information" in same.flags and same.advice is not None
    better = judge_task(ppl(ll), ppl(ll * 0.9), policy)  # every document 10% more likely per word
    assert better.comparison.delta < 0 and better.verdict is Verdict.PASS
    cand = judge_candidate("c", "lora", {"general": [(ppl(ll), ppl(ll - 0.3 * words), policy)]})
    assert "general tier: wiki rose" in cand.reason


# ------------------------------------------------------- inputs that cannot be

def _ppl_pair(n: int = 80) -> tuple[TaskRecords, TaskRecords]:
    rng = np.random.default_rng(4)
    words = rng.integers(10, 40, n).astype(float)
    ll = -words * rng.gamma(2.0, 0.5, n)
    keys = [ItemKey(i, f"h{i}") for i in range(n)]

    def rec(loglik: np.ndarray, w: np.ndarray = words) -> TaskRecords:
        return TaskRecords("text", "word_perplexity", False, Aggregation.WEIGHTED_PERPLEXITY, keys,
                           loglik.copy(), w.copy())

    return rec(ll), rec(ll * 1.1)


@pytest.mark.parametrize("side", ["base", "candidate"])
@pytest.mark.parametrize("fault", ["positive log-likelihood", "no words", "acc of 0.5", "acc of 2"])
def test_values_no_model_produces_stop_the_evaluation(side: str, fault: str) -> None:
    """Each is exit 3 naming the task, the side and the items: never a smaller n, and
    never a silent switch of test (a 0.5 in acc would move the task to the t test)."""
    from gate.errors import EXIT_INFRA, IncompleteEvaluation

    if fault.startswith("acc"):
        base, cand = pair(200, 0.6, 0.05, 0.05)
        rec = base if side == "base" else cand
        rec.num[[3, 17]] = 0.5 if fault == "acc of 0.5" else 2.0
        what = "other than 0 or 1"
        policy = drop(0.05)
    else:
        base, cand = _ppl_pair()
        rec = base if side == "base" else cand
        if fault == "no words":
            rec.den[[3, 17]] = 0.0
            what = "no words or bytes but a nonzero log-likelihood"
        else:
            rec.num[[3, 17]] = 0.25
            what = "a positive log-likelihood"
        policy = drop(relative=0.05, margin=None)  # type: ignore[arg-type]
    with pytest.raises(IncompleteEvaluation) as err:
        judge_task(base, cand, policy)
    text = str(err.value)
    assert f"task {base.task}: 2 of {rec.n} {side} items have" in text and what in text
    assert "doc ids [3, 17]" in text
    assert err.value.exit_code == EXIT_INFRA


def test_different_word_counts_for_one_document_are_a_pairing_error() -> None:
    from gate.errors import PairingError

    base, cand = _ppl_pair()
    cand.den[5] += 1
    with pytest.raises(PairingError, match=r"task text: 1 documents have a different number of words .*\[5\]"):
        judge_task(base, cand, drop(relative=0.05, margin=None))  # type: ignore[arg-type]


def test_a_task_with_no_items_never_reaches_a_verdict() -> None:
    """Under `inconclusive: warn` an INCONCLUSIVE passes the release: a task that
    scored nothing must not get one."""
    from gate.errors import IncompleteEvaluation

    empty = TaskRecords("toy", "acc", True, Aggregation.MEAN, [], np.zeros(0), np.zeros(0))
    with pytest.raises(IncompleteEvaluation, match="task toy: the base has no items and no score"):
        judge_task(empty, empty, drop(0.05, inconclusive="warn"))
    # aggregate-only records (lm-eval run without per-sample output) still get the unpaired test
    agg = TaskRecords("toy", "acc", True, Aggregation.MEAN, [], np.zeros(0), np.zeros(0),
                      reported_score=0.6, reported_stderr=0.01)
    assert judge_task(agg, agg, drop(0.05)).comparison.method == "unpaired_stderr"


# ----------------------------------------------------------------- multiplicity

def test_holm_turns_two_borderline_fails_into_inconclusive() -> None:
    # unpaired, so p_fail is analytic: improvement -0.0388 vs threshold -0.02, se 0.01
    se = 0.01 / math.sqrt(2)
    base, cand = corpus("a", 0.5, se), corpus("a", 0.5 - 0.038808, se)
    alone = judge_task(base, cand, drop(0.02))
    assert alone.comparison.p_fail == pytest.approx(0.03, abs=1e-4)
    assert alone.verdict is Verdict.FAIL
    base_b, cand_b = corpus("b", 0.5, se), corpus("b", 0.5 - 0.038808, se)
    tier = judge_tier("general", [(base, cand, drop(0.02)), (base_b, cand_b, drop(0.02))])
    assert [t.p_fail_adjusted for t in tier.tasks] == pytest.approx([0.06, 0.06], abs=2e-4)
    assert [t.verdict for t in tier.tasks] == [Verdict.INCONCLUSIVE] * 2
    assert tier.verdict is Verdict.INCONCLUSIVE


def test_tier_adjusts_with_holm_and_reports_its_summaries() -> None:
    pairs = [pair(500, 0.8, 0.01, 0.01, task="steady"), pair(300, 0.8, 0.3, 0.0, task="broken"),
             pair(100, 0.8, 0.04, 0.03, task="small")]
    tier = judge_tier("general", [(b, c, drop(0.02)) for b, c in pairs])
    raw = [t.comparison.p_fail for t in tier.tasks]
    assert [t.p_fail_adjusted for t in tier.tasks] == pytest.approx(list(holm(raw)))
    assert tier.verdict is Verdict.FAIL
    assert tier.worst_task == "broken"
    deltas = [0.0, -0.3, -0.01]
    assert tier.mean_delta_tasks == pytest.approx(np.mean(deltas))
    assert tier.mean_delta_items == pytest.approx(np.average(deltas, weights=[500, 300, 100]))


# --------------------------------------------------------------- candidates

def test_inconclusive_resolution_follows_each_policy() -> None:
    base, cand = pair(200, 0.8, 0.05, 0.04)
    warn = judge_candidate("c", "lora", {"general": [(base, cand, drop(inconclusive="warn"))]})
    assert warn.verdict is Verdict.PASS and len(warn.warnings) == 1
    assert warn.tiers[0].verdict is Verdict.INCONCLUSIVE
    assert "counted as a pass" in warn.warnings[0]
    fail = judge_candidate("c", "lora", {"general": [(base, cand, drop(inconclusive="fail"))]})
    assert fail.verdict is Verdict.FAIL
    assert fail.reason.startswith("general tier: toy is inconclusive")
    silent = judge_candidate("c", "lora", {"general": [(base, cand, drop(inconclusive="pass"))]})
    assert silent.verdict is Verdict.PASS and silent.warnings == ()


def test_candidate_reason_names_the_tier_task_and_interval() -> None:
    base, cand = pair(400, 0.9, 0.41, 0.0, task="toy_capitals")
    v = judge_candidate("overfit", "lora", {"general": [(base, cand, drop(0.02))]})
    assert v.verdict is Verdict.FAIL
    assert v.reason.startswith("general tier: toy_capitals dropped 41.0 points (interval -")
    assert v.reason.endswith("beyond the allowed 2.0")


def test_results_do_not_depend_on_task_order() -> None:
    a = pair(300, 0.8, 0.05, 0.03, task="a")
    b = pair(300, 0.7, 0.02, 0.04, task="b")
    one = judge_candidate("c", "lora", {"general": [(*a, drop()), (*b, drop())]})
    two = judge_candidate("c", "lora", {"general": [(*b, drop()), (*a, drop())]})
    by_task = {t["task"]: t for t in one.to_dict()["tiers"][0]["tasks"]}  # type: ignore[index]
    for t in two.to_dict()["tiers"][0]["tasks"]:  # type: ignore[index]
        assert t == by_task[t["task"]]
    threaded = judge_candidate("c", "lora", {"general": [(*a, drop()), (*b, drop())]})
    assert threaded.to_dict() == one.to_dict()


def test_tier_names_are_checked() -> None:
    base, cand = pair(100, 0.8, 0.0, 0.0)
    with pytest.raises(ConfigError, match="unknown tier"):
        judge_candidate("c", "lora", {"genral": [(base, cand, drop())]})
    with pytest.raises(ConfigError, match="listed under tier related"):
        judge_candidate("c", "lora", {"related": [(base, cand, drop(tier="general"))]})
    with pytest.raises(InputError, match="listed twice"):
        judge_tier("general", [(base, cand, drop()), (base, cand, drop())])


def test_to_dict_has_the_results_shape_and_is_strict_json() -> None:
    base, cand = pair(300, 0.8, 0.2, 0.0, task="toy_capitals")
    v = judge_candidate("overfit", "lora", {"general": [(base, cand, drop())]},
                        path="/adapters/overfit", fingerprint="abc")
    d = v.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) == {"name", "kind", "path", "fingerprint", "verdict", "label",
                      "not_shown_safe", "waived", "family", "reason", "warnings", "tiers"}
    tier = d["tiers"][0]  # type: ignore[index]
    assert set(tier) == {"tier", "verdict", "mean_delta_items", "mean_delta_tasks",
                         "worst_task", "tasks"}
    assert set(tier["tasks"][0]) == {
        "task", "metric", "higher_is_better", "aggregation", "base_score", "candidate_score",
        "delta", "ci_low", "ci_high", "ci_level", "method", "p_value", "p_any_difference",
        "changed", "detectable", "infinite_items", "p_fail",
        "p_fail_adjusted", "p_pass", "n", "n_used", "kind", "margin", "threshold", "verdict",
        "inconclusive_policy", "advice", "chance", "flags", "flipped", "sequential", "waiver"}
    assert set(tier["tasks"][0]["flipped"][0]) == {"doc_id", "prompt", "target",
                                                   "base_response", "candidate_response"}


# ------------------------------------------------------------------ release

def _candidate(name: str, verdict: Verdict, warnings: tuple[str, ...] = ()) -> CandidateVerdict:
    return CandidateVerdict(name=name, kind="lora", verdict=verdict, reason=f"{name} reason",
                            tiers=(), warnings=warnings)


def test_release_requires_every_candidate_by_default() -> None:
    good, bad = _candidate("careful", Verdict.PASS), _candidate("overfit", Verdict.FAIL)
    r = judge_release([good, bad])
    assert (r.verdict, r.exit_code) == (Verdict.FAIL, EXIT_FAIL)
    assert r.reason == "overfit fails: overfit reason"
    worse = _candidate("full", Verdict.FAIL)
    assert judge_release([good, bad, worse]).reason == "overfit fails: overfit reason; full fails too"
    r = judge_release([good, bad], release=["careful"])
    assert (r.verdict, r.exit_code, r.candidates) == (Verdict.PASS, EXIT_PASS, ("careful",))
    assert r.to_dict() == {"verdict": "PASS", "label": "PASS", "not_shown_safe": 0, "waived": 0,
                           "exit_code": 0, "candidates": ["careful"], "reason": "careful passes"}


def test_release_counts_warnings_and_rejects_unknown_names() -> None:
    r = judge_release([_candidate("a", Verdict.PASS, ("w1", "w2")), _candidate("b", Verdict.PASS)])
    assert r.reason == "all 2 candidates pass with 2 warnings"
    with pytest.raises(ConfigError, match="unknown candidate 'c'") as info:
        judge_release([_candidate("a", Verdict.PASS)], release=["c"])
    assert info.value.exit_code == 2
    with pytest.raises(InputError):
        judge_release([])


def test_a_corpus_metric_without_stderr_is_inconclusive_and_still_valid_json() -> None:
    bare = TaskRecords("wmt", "bleu", True, Aggregation.CORPUS, [], np.zeros(0), np.zeros(0),
                       reported_score=25.0, reported_stderr=None)
    v = judge_task(bare, bare, drop(0.02, relative=0.05))
    assert v.verdict is Verdict.INCONCLUSIVE and "no_stderr" in v.flags
    assert v.advice is not None and "no standard error" in v.advice.message
    json.dumps(v.to_dict(), allow_nan=False)
