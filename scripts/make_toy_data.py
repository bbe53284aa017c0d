"""Regenerate the committed toy suite (gate/suites/toy/) from gate.toy's generators.

Usage: python scripts/make_toy_data.py [OUT_DIR]   (default: gate/suites/toy next to this script)

Training data and evaluation data come from the same generator code
(gate/toy/corpus.py); tests/toy/test_toy_data.py fails when the committed files drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gate.toy.suite import write_suite

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "gate" / "suites" / "toy"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    suite = write_suite(out)
    print(f"wrote {suite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
