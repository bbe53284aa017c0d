"""Mutation check of the calibration grid: a margin off by half a standard error must fail.

`make test` runs tests/verdict/test_calibration.py at CI precision (fewer
replications than `make calibrate`). This loosens the decision functions the
grid calls (`binary_pvalues`: the threshold moved by half the paired
standard error towards PASS; `ratio_pvalues`: by about half of it) and runs
the drop-side cells: each mutant must be caught. Run it after changing the
replication counts (GATE_CALIBRATION unset: CI precision).

    python bench/calibration_mutants.py
"""
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "verdict"))
import test_calibration as tc

real_binary = tc.binary_pvalues
real_ratio = tc.ratio_pvalues

def shifted_binary(won, lost, n, t):
    disc = (np.asarray(won, float) + np.asarray(lost, float)) / np.asarray(n, float)
    se = np.sqrt(np.maximum(disc, 1e-12) / np.asarray(n, float))
    return real_binary(won, lost, n, np.asarray(t, float) - 0.5 * se)  # lenient: PASS sooner

def shifted_ratio(nb, db, nc, dc, agg, sign, thr, *rest):
    """The relative margin loosened by about half the test's standard error (2.5 / sqrt(n) of it)."""
    give = 0.5 * 2.5 / math.sqrt(nb.shape[-1])
    if callable(thr):
        return real_ratio(nb, db, nc, dc, agg, sign, lambda score: thr(score) - give * abs(thr(score)), *rest)
    return real_ratio(nb, db, nc, dc, agg, sign, thr - give * np.abs(thr), *rest)


survived = 0
for name, patch, test, args in (
        ("binary drop side", ("binary_pvalues", shifted_binary), tc.test_binary_error_rates_hold_in_every_cell, ("drop_at_margin",)),
        ("perplexity drop side", ("ratio_pvalues", shifted_ratio), tc.test_perplexity_error_rates_hold_in_every_cell, ("drop_at_margin",))):
    setattr(tc, *patch)
    try:
        test(*args)
        print(name, ": MUTANT SURVIVED")
        survived += 1
    except AssertionError as exc:
        print(name, ": mutant caught:", str(exc).splitlines()[0][:120])
    setattr(tc, patch[0], real_binary if patch[0] == "binary_pvalues" else real_ratio)
sys.exit(1 if survived else 0)
