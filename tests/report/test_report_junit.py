"""junit.xml as a CI test viewer reads it (parsed with junitparser)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from junitparser import Failure, JUnitXml, Skipped

from gate.report import render_junit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def fixture(name: str = "three_candidates.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def parse(results: dict[str, Any]) -> dict[tuple[str, str], Any]:
    xml = JUnitXml.fromstring(render_junit(results).encode("utf-8"))
    return {(case.classname, case.name): case for suite in xml for case in suite}


def outcome(case: Any) -> str:
    if not case.result:
        return "pass"
    return {Failure: "failure", Skipped: "skipped"}[type(case.result[0])]


def test_one_testcase_per_candidate_and_task() -> None:
    cases = parse(fixture())
    assert len(cases) == 6 + 6 + 5
    assert ("gate.careful.target", "toy_capitals") in cases
    assert ("gate.small-sample.related", "toy_capital_reverse") in cases


def test_fail_is_a_failure_with_the_numbers() -> None:
    case = parse(fixture())[("gate.overfit.general", "toy_wikitext")]
    assert outcome(case) == "failure"
    assert case.result[0].type == "FAIL"
    assert case.result[0].message == (
        "FAIL: word_perplexity delta +74.2% [+65.4%, +83.5%] (90%), policy rise ≤ 5.0%")


def test_inconclusive_follows_the_task_policy() -> None:
    results = fixture()
    task = results["candidates"][2]["tiers"][1]["tasks"][0]
    task["inconclusive_policy"] = "warn"
    case = parse(results)[("gate.small-sample.related", "toy_country_facts")]
    assert outcome(case) == "skipped"
    assert "Run about 1240 items" in case.system_out
    task["inconclusive_policy"] = "fail"
    case = parse(results)[("gate.small-sample.related", "toy_country_facts")]
    assert outcome(case) == "failure" and case.result[0].type == "INCONCLUSIVE"


def test_inconclusive_without_a_policy_fails_only_a_failed_release() -> None:
    results = fixture()  # release exit 1, candidate small-sample INCONCLUSIVE
    key = ("gate.small-sample.related", "toy_country_facts")
    assert outcome(parse(results)[key]) == "failure"
    results["release"].update(verdict="PASS", exit_code=0)
    assert outcome(parse(results)[key]) == "skipped"


def test_suite_counts_add_up() -> None:
    xml = JUnitXml.fromstring(render_junit(fixture()).encode("utf-8"))
    suites = {suite.name: suite for suite in xml}
    assert (suites["gate.careful"].tests, suites["gate.careful"].failures) == (6, 0)
    assert (suites["gate.overfit"].tests, suites["gate.overfit"].failures) == (6, 5)
    assert suites["gate.small-sample"].failures == 2


def test_all_passing_run_has_no_failures() -> None:
    cases = parse(fixture("passing.json"))
    assert {outcome(c) for c in cases.values()} == {"pass"}
