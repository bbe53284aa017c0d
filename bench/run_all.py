"""`make bench`: every benchmark, each printing its table and recording its JSON under bench/results/.

- bench_compare.py    verdict engine: 50 tasks x 10,000 items, B = 10,000
- bench_toy_build.py  building the whole toy world from scratch
- bench_gate_run.py   `gate run` on the toy world through vLLM: cold run, rerun, gate RSS
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = [
    ["bench_compare.py", "--runs", "5"],
    ["bench_toy_build.py", "--runs", "3"],
    ["bench_gate_run.py", "--runs", "3"],
]


def main() -> int:
    failed = []
    for script, *args in STEPS:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *args], cwd=HERE.parent)
        if rc != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
