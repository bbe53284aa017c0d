"""The configuration refuses bad input clearly: file, key and fix, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gate.config.models import RunConfig, Thresholds
from gate.config.yaml_io import load_run_config, load_suite, load_thresholds, parse_model
from gate.errors import ConfigError

GOOD_THRESHOLDS = {
    "tiers": {
        "target": {"required_gain": {"absolute": 0.05}},
        "related": {"allowed_drop": {"absolute": 0.03}},
        "general": {"allowed_drop": {"absolute": 0.02, "relative": 0.05}},
    }
}


def write(tmp: Path, name: str, data: object) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return p


def messages(exc: ConfigError) -> list[str]:
    return [p.render() for p in exc.problems]


def test_misspelled_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    f = write(tmp_path, "gate.yaml", {"base": {"path": "m", "dtyp": "float32"}, "candidates": [{"name": "a", "adapter": "x"}], "suite": "s.yaml"})
    with pytest.raises(ConfigError) as err:
        load_run_config(f)
    assert messages(err.value) == [f"{f}: base.dtyp: unknown key (fix: did you mean `dtype`?)"]
    assert err.value.exit_code == 2


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    f = write(tmp_path, "gate.yaml", {
        "base": {"path": "m", "dtype": "float64"},
        "candidates": [{"name": "a", "adapter": "x", "model": "y"}],
        "suite": "s.yaml",
        "engine": {"kind": "vllm", "vllm": {"tensor_parallel_size": 0}},
        "colour": "blue",
    })
    with pytest.raises(ConfigError) as err:
        load_run_config(f)
    keys = [p.key for p in err.value.problems]
    assert keys == ["base.dtype", "candidates.0", "engine.vllm.tensor_parallel_size", "colour"]
    assert all(p.file == str(f) for p in err.value.problems)


def test_candidate_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one of `adapter`"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "a"}], "suite": "s"}, "gate.yaml")


def test_duplicate_candidate_names() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "a", "adapter": "x"}, {"name": "a", "model": "y"}],
                                "suite": "s"}, "gate.yaml")


def test_reserved_and_bad_names() -> None:
    with pytest.raises(ConfigError, match="reserved for the base"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "base", "adapter": "x"}], "suite": "s"}, "g")
    with pytest.raises(ConfigError, match="candidates.0.name"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "a b", "adapter": "x"}], "suite": "s"}, "g")


def test_release_must_name_candidates() -> None:
    with pytest.raises(ConfigError, match="release names unknown candidates"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "a", "adapter": "x"}], "suite": "s", "release": ["b"]}, "g")


def test_endpoint_engine_needs_url() -> None:
    with pytest.raises(ConfigError, match="engine.endpoint"):
        parse_model(RunConfig, {"base": {"path": "m"}, "candidates": [{"name": "a", "adapter": "x"}], "suite": "s",
                                "engine": {"kind": "endpoint"}}, "g")


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    f = write(tmp_path, "t.yaml", "alpha: 0.05\ntiers: [\n")
    with pytest.raises(ConfigError) as err:
        load_thresholds(f)
    assert "YAML syntax error at line" in str(err.value)
    assert str(f) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1])
def test_alpha_outside_unit_interval(tmp_path: Path, alpha: float) -> None:
    f = write(tmp_path, "t.yaml", {**GOOD_THRESHOLDS, "alpha": alpha})
    with pytest.raises(ConfigError) as err:
        load_thresholds(f)
    assert [p.key for p in err.value.problems] == ["alpha"]


def test_relative_margin_out_of_range(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD_THRESHOLDS))
    data["tiers"]["general"]["allowed_drop"] = {"relative": 1.5}
    with pytest.raises(ConfigError) as err:
        load_thresholds(write(tmp_path, "t.yaml", data))
    assert [p.key for p in err.value.problems] == ["tiers.general.allowed_drop.relative"]


def test_negative_margin(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD_THRESHOLDS))
    data["tiers"]["related"]["allowed_drop"] = {"absolute": -0.01}
    with pytest.raises(ConfigError, match="tiers.related.allowed_drop.absolute"):
        load_thresholds(write(tmp_path, "t.yaml", data))


def test_target_tier_needs_required_gain(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD_THRESHOLDS))
    data["tiers"]["target"] = {"allowed_drop": {"absolute": 0.1}}
    with pytest.raises(ConfigError, match="required_gain"):
        load_thresholds(write(tmp_path, "t.yaml", data))


def test_empty_tier(tmp_path: Path) -> None:
    f = write(tmp_path, "s.yaml", {"name": "x", "tiers": {"target": [{"task": "a"}], "related": [], "general": [{"task": "b"}]}})
    with pytest.raises(ConfigError) as err:
        load_suite(f)
    assert [p.key for p in err.value.problems] == ["tiers.related"]


def test_task_in_two_tiers(tmp_path: Path) -> None:
    f = write(tmp_path, "s.yaml", {"name": "x", "tiers": {"target": [{"task": "a"}], "related": [{"task": "a"}], "general": [{"task": "b"}]}})
    with pytest.raises(ConfigError, match="appears in tier 'target' and in tier 'related'"):
        load_suite(f)


def test_policy_resolution_overrides_and_stricter_margin() -> None:
    th = Thresholds.model_validate({**GOOD_THRESHOLDS, "alpha": 0.1, "inconclusive": "fail",
                                    "tasks": {"hellaswag": {"allowed_drop": {"absolute": 0.01}, "inconclusive": "pass"}}})
    general = th.policy_for("general", "mmlu")
    assert (general.kind, general.alpha, general.inconclusive) == ("drop", 0.1, "fail")
    # absolute 0.02 vs 5% of 0.6 = 0.03: the stricter (smaller) one applies
    assert general.margin(0.6) == pytest.approx(0.02)
    assert general.threshold(0.6) == pytest.approx(-0.02)
    assert general.margin(0.2) == pytest.approx(0.01)
    over = th.policy_for("general", "hellaswag")
    assert (over.margin(0.8), over.inconclusive) == (0.01, "pass")
    target = th.policy_for("target", "x")
    assert (target.kind, target.threshold(0.5)) == ("gain", 0.05)
