"""Are two results.json files the same verdicts and numbers? (exit 0 yes, 1 no)

    python scripts/same_results.py BEFORE/results.json AFTER/results.json

For refactors that must not change behaviour: compares every field except
the ones that differ between any two runs (creation time, gate version,
git commit, absolute paths of the output and log folders). Prints each
difference as a JSON path with both values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: keys whose values differ between two runs of the same thing
VOLATILE = {"created", "gate_version", "git_commit"}


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                out += differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text(encoding="utf-8")) for p in argv)
    diffs = differences(before, after)
    for d in diffs:
        print(d)
    print(f"{len(diffs)} difference(s) outside {sorted(VOLATILE)}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
