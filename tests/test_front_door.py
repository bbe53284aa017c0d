"""The front door: a Python user gates a release with `import gate` and nothing else.

Only the names in `gate.__all__` are used here (no submodule imports), with
the fake engine the package ships, so this is what a notebook or a training
script would write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakeworld import fake_adapter_dir, fake_gate_config

import gate

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parents[1]
LMEVAL = REPO / "tests" / "fixtures" / "lmeval"


def _world(tmp: Path) -> Path:
    return fake_gate_config(tmp)


def test_all_names_exist() -> None:
    for name in gate.__all__:
        assert getattr(gate, name) is not None, name
    assert {"run", "compare", "validate", "load_config", "GateResult"} <= set(gate.__all__)


def test_load_validate_run(tmp_path: Path) -> None:
    config = _world(tmp_path)
    setup = gate.load_config(config)
    assert isinstance(setup, gate.GateSetup)
    assert gate.validate(setup) == []
    result = gate.run(setup)
    assert isinstance(result, gate.GateResult)
    assert result.verdict in ("PASS", "FAIL")
    assert result.exit_code == (0 if result.verdict == "PASS" else 1)
    on_disk = json.loads(result.files["results"].read_text(encoding="utf-8"))
    assert on_disk["release"]["verdict"] == result.verdict
    assert result.files["html"].is_file()
    # a path works as well as a loaded setup, and the rerun reuses everything
    again = gate.run(config)
    assert again.verdict == result.verdict
    assert set(again.evaluated.values()) == {0}


def test_validate_returns_problems_instead_of_raising(tmp_path: Path) -> None:
    config = _world(tmp_path)
    shutil.rmtree(tmp_path / "good")
    problems = gate.validate(config)
    assert [p.key for p in problems] == ["candidates.0.adapter"]
    assert all(isinstance(p, gate.Problem) for p in problems)
    missing = gate.validate(tmp_path / "nope.yaml")
    assert missing and "file not found" in missing[0].message


def test_flags_as_keywords(tmp_path: Path) -> None:
    config = _world(tmp_path)
    fake_adapter_dir(tmp_path / "other", b"other")
    setup = gate.load_config(config, adapters={"other": tmp_path / "other"}, out=tmp_path / "elsewhere")
    assert [c.name for c in setup.config.candidates] == ["other"]
    assert Path(setup.config.out) == tmp_path / "elsewhere"


def test_run_raises_gate_errors_with_exit_codes(tmp_path: Path) -> None:
    config = _world(tmp_path)
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(gate.GateError) as err:
        gate.run(config)
    assert err.value.exit_code == 2
    assert any(p.key == "base.path" for p in err.value.problems)
    assert not (tmp_path / "out" / "results.json").exists()


def test_compare_lmeval_folders(tmp_path: Path) -> None:
    result = gate.compare(LMEVAL / "out-base", {"cand": LMEVAL / "out-cand"},
                          thresholds=REPO / "thresholds.yaml", out=tmp_path / "out")
    assert isinstance(result, gate.GateResult)
    assert result.files["results"].is_file()
    (cand,) = result.results["candidates"]
    assert cand["name"] == "cand"
    # lm_eval's hf model loaded a full checkpoint (pretrained=..., no peft=): not a LoRA
    assert cand["kind"] == "full"
