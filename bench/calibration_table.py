"""The README's calibration table, printed from bench/results/calibration.json.

`make calibrate` runs tests/verdict/test_calibration.py at full precision and
records every cell's measured error rates; this prints the worst cell of each
row as the README shows it, so the figures there are the recorded ones, not
copied by hand.

    python bench/calibration_table.py [bench/results/calibration.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).parent / "results" / "calibration.json"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def worst(cells: list[dict[str, Any]], n: int) -> tuple[float, float]:
    row = [c for c in cells if c["n"] == n]
    return max(c["pass"] for c in row), max(c["fail"] for c in row)


def table(data: dict[str, Any]) -> str:
    tests = data["tests"]
    lines = ["| n | binary, drop side | binary, gain side | binary, no change: FAIL / PASS at 20% flips "
             "| perplexity, drop side | perplexity, gain side |", "|---|---|---|---|---|---|"]
    ns = sorted({c["n"] for c in tests["binary/drop_at_margin"]["cells"]})
    for n in ns:
        cells = []
        for truth in ("drop_at_margin", "gain_at_margin"):
            p, f = worst(tests[f"binary/{truth}"]["cells"], n)
            cells.append(f"{pct(p)} / {pct(f)}")
        zero = next(c for c in tests["binary/zero"]["cells"] if c["n"] == n and c["flips"] == 0.2)
        cells.append(f"{pct(zero['fail'])} / {pct(zero['pass'])}")
        for truth in ("drop_at_margin", "gain_at_margin"):
            p, f = worst(tests[f"perplexity/{truth}"]["cells"], n)
            cells.append("no verdict (< 50 changed)" if p == f == 0 else f"{pct(p)} / {pct(f)}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(data: dict[str, Any]) -> str:
    tests = data["tests"]
    out = [f"precision: {data['precision']}, {data['seconds']:.0f} s"]
    for n in (20, 200, 1000):
        t = tests[f"early_stopping/n{n}"]
        out.append(f"early stopping, n = {n}: worst false PASS {pct(max(c['pass'] for c in t['cells'] if c['truth'] != 'zero'))}"
                   f", worst false FAIL {pct(max(c['fail'] for c in t['cells']))} ({t['reps']} a cell, bound {pct(t['bound'])})")
    for truth in ("drop_at_margin", "gain_at_margin"):
        t = tests[f"perplexity_early_stopping/{truth}"]
        out.append(f"perplexity through the rounds, {truth}: "
                   + ", ".join(f"n = {c['n']}: PASS {pct(c['pass'])} / FAIL {pct(c['fail'])}" for c in t["cells"]))
    c = tests["clustered"]
    out.append(f"clustered ({c['reps']} a cell): worst {pct(max(max(x['pass'], x['fail']) for x in c['cells']))}, "
               f"naive test {pct(c['naive_worst'])}")
    cand, rel = tests["candidate_false_fail"], tests["release_false_pass"]
    out.append(f"candidate false FAIL, two tiers at the margin: family tier {pct(cand['tier'])}, "
               f"family candidate {pct(cand['candidate'])}; release false PASS {pct(rel['false_pass'])}")
    return "\n".join(out)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    data = json.loads(path.read_text())
    print(table(data))
    print()
    print(summary(data))


if __name__ == "__main__":
    main()
