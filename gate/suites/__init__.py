"""The suites and release policies shipped inside the package.

They travel in the wheel (package data), so an installed gate can name them
without a checkout: `--suite default` is the real-model suite (lm-eval's MMLU,
HellaSwag, ARC, WinoGrande and SCROLLS GovReport as the general tier), and
`gate demo` reads the toy suite's release policy from here.
"""

from __future__ import annotations

from pathlib import Path

#: the shipped suites' folder (a real folder: the wheel is installed unzipped)
ROOT = Path(__file__).resolve().parent

#: suite name -> its YAML, for `suite: NAME` / `--suite NAME`
SHIPPED = {"default": ROOT / "default.yaml", "toy": ROOT / "toy" / "toy.yaml", "real": ROOT / "real" / "real.yaml"}

#: the toy suite's release policy (what `gate demo` judges with)
TOY_THRESHOLDS = ROOT / "toy" / "thresholds.yaml"

#: the real suite's release policy (what `gate demo --real` judges with)
REAL_THRESHOLDS = ROOT / "real" / "thresholds.yaml"


def shipped_suite(value: str, relative_to: Path) -> Path | None:
    """The shipped suite `value` names, when it is a bare name (`default`) and no
    file or folder of that name exists where the config is: a local file wins."""
    if value not in SHIPPED or (relative_to / value).exists():
        return None
    return SHIPPED[value]


__all__ = ["REAL_THRESHOLDS", "ROOT", "SHIPPED", "TOY_THRESHOLDS", "shipped_suite"]
