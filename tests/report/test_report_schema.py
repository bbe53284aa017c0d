"""results.json validation: the fixtures fit the schema, broken files are
reported with the file and the JSON path of what is wrong."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gate.errors import InputError
from gate.report.results import load_results, validate_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def fixture(name: str = "three_candidates.json") -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_every_fixture_fits_the_schema(path: Path) -> None:
    assert load_results(path)["schema_version"] == 1


def test_fixture_covers_what_the_renderers_must_handle() -> None:
    results = fixture()
    verdicts = {c["verdict"] for c in results["candidates"]}
    tasks = [t for c in results["candidates"] for tier in c["tiers"] for t in tier["tasks"]]
    assert verdicts == {"PASS", "FAIL", "INCONCLUSIVE"}
    assert {tier["tier"] for c in results["candidates"] for tier in c["tiers"]} == {
        "target", "related", "general"}
    assert any(t["flipped"] for t in tasks)
    assert any(t["advice"] for t in tasks)
    assert any(t["method"] == "unpaired_stderr" for t in tasks)
    assert any(not t["higher_is_better"] for t in tasks)
    assert any("base_at_chance" in t["flags"] for t in tasks)


def test_a_wrong_verdict_names_file_and_path(tmp_path: Path) -> None:
    results = fixture()
    results["candidates"][1]["tiers"][2]["tasks"][0]["verdict"] = "MAYBE"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(InputError) as caught:
        load_results(path)
    problem = caught.value.problems[0]
    assert problem.file == str(path)
    assert problem.key == "$.candidates[1].tiers[2].tasks[0].verdict"
    assert "MAYBE" in problem.message
    assert caught.value.exit_code == 2


def test_every_problem_is_reported_at_once() -> None:
    results = fixture()
    del results["release"]["reason"]
    results["candidates"][0]["tiers"][0]["tasks"][0]["surprise"] = 1
    results["candidates"][0]["tiers"][0]["tier"] = "bonus"
    with pytest.raises(InputError) as caught:
        validate_results(results, source="r.json")
    keys = {p.key for p in caught.value.problems}
    assert keys == {"$.release", "$.candidates[0].tiers[0].tier",
                    "$.candidates[0].tiers[0].tasks[0]"}


@pytest.mark.parametrize("mutate", [
    lambda r: r["candidates"][0].__setitem__("kind", "dora"),
    lambda r: r["candidates"][0]["tiers"][0]["tasks"][0].__setitem__("method", "t_test"),
    lambda r: r["candidates"][0]["tiers"][0]["tasks"][0].__setitem__("n", -1),
    lambda r: r["candidates"][0]["tiers"][0]["tasks"][0].__setitem__("p_value", 1.5),
    lambda r: r["candidates"][0]["tiers"][0]["tasks"][0]["flipped"].append({"doc_id": 1}),
    lambda r: r.__setitem__("schema_version", 2),
    lambda r: r["candidates"][1]["training"].__setitem__("optimizer", "adam"),
])
def test_schema_rejects_what_renderers_cannot_trust(mutate) -> None:  # type: ignore[no-untyped-def]
    results = copy.deepcopy(fixture())
    mutate(results)
    with pytest.raises(InputError):
        validate_results(results)


def test_training_is_optional_and_nullable() -> None:
    results = fixture()
    del results["candidates"][0]["training"]
    results["candidates"][2]["training"] = None
    validate_results(results)


def test_truncated_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text((FIXTURES / "passing.json").read_text()[:200])
    with pytest.raises(InputError, match="not valid JSON"):
        load_results(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_results(tmp_path / "nope.json")
