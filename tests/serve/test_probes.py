"""Sanity probes: the checks that stop the gate from trusting a wrong number."""

from __future__ import annotations

import pytest

from gate.errors import EngineError
from gate.serve.probes import adapter_applied, chance_floor, engine_parity, raise_on_mismatch


def test_noop_adapter_is_reported() -> None:
    same = adapter_applied("zero", [-10.0, -20.5], [-10.0, -20.5])
    assert same.status == "noop" and same.to_dict()["severity"] == "warning"
    assert "not applied" in same.detail
    moved = adapter_applied("tuned", [-10.0, -20.5], [-10.4, -20.5])
    assert moved.status == "ok"


def test_parity_mismatch_stops_the_run_showing_both_numbers() -> None:
    ok = engine_parity("base", [-10.0, -20.0], [-10.00001, -20.0], [10, 20], tolerance=1e-3)
    assert ok.status == "ok"
    bad = engine_parity("tuned", [-10.0, -20.0], [-10.0, -23.0], [10, 20], tolerance=1e-3)
    assert bad.status == "mismatch" and bad.to_dict()["severity"] == "error"
    with pytest.raises(EngineError) as err:
        raise_on_mismatch([ok, bad])
    assert err.value.exit_code == 3
    message = str(err.value)
    assert "-20.000000" in message and "-23.000000" in message  # both numbers, served and reference
    raise_on_mismatch([ok])  # no mismatch: nothing raised


def test_chance_floor() -> None:
    assert chance_floor("mc4", 0.26, 0.25, 400) is not None
    assert chance_floor("mc4", 0.60, 0.25, 400) is None
    assert chance_floor("gen", 0.10, None, 400) is None
