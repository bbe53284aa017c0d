"""No secret from the environment reaches any file a `gate run` writes, or its output.

Canaries are planted where real secrets live in CI (HF_TOKEN, WANDB_API_KEY,
and the endpoint key whose variable the config names in `api_key_env`); a full
`gate run --engine fake` with offline W&B logging then runs, and every byte
under the output folder, the baseline store, the cache and every W&B folder
(gzip files decompressed) is searched, as is everything the CLI printed.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_bad_input import make_world, output_of, write_yaml

from gate.cli.main import cli

pytestmark = pytest.mark.heavy

CANARIES = {
    "HF_TOKEN": "hf_canaryTOKEN0a1b2c3d4e5f6a7b8c9d0e1f2a3b",
    "HUGGING_FACE_HUB_TOKEN": "hf_canaryHUBTOKEN9f8e7d6c5b4a39281706",
    "WANDB_API_KEY": "canarywandbkey0123456789abcdef0123456789ab",
    "GATE_CANARY_ENDPOINT_KEY": "sk-canary-endpoint-5f0c1e2d3b4a5968",
}
# Not a secret: it must be found, which proves the search reaches into what W&B writes.
CONTROL = "gate-control-marker-7d1e"
WANDB_DIRS = ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR")


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every folder W&B writes to inside tmp_path, offline, with a fresh wandb singleton."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "wandb-home"
    for var in WANDB_DIRS:
        (home / var.lower()).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()
    yield home
    wandb.teardown()


def _contents(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            data += gzip.decompress(data)
    return data


def test_no_canary_in_any_file_or_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         wandb_offline: Path) -> None:
    import wandb

    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    world = make_world(tmp_path / "world")
    case = tmp_path / "case"
    cfg = world.config(case, engine={"kind": "fake", "endpoint": {"base_url": f"http://127.0.0.1:9/{CONTROL}",
                                                                 "api_key_env": "GATE_CANARY_ENDPOINT_KEY"}},
                       wandb={"project": "p", "mode": "offline"})
    config_file = write_yaml(case / "gate.yaml", cfg)

    res = CliRunner().invoke(cli, ["run", "--config", str(config_file)])
    wandb.teardown()  # let wandb-core finish writing, as at process exit
    text = output_of(res)
    assert res.exit_code in (0, 1), text
    assert "W&B: logged to run" in text, text

    searched = [case / "out", case / "store", case / "cache", wandb_offline]
    files = [p for folder in searched for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "W&B wrote no run: the search would prove nothing"
    assert any(p.name == "results.json" for p in files)
    assert any(p.name.endswith(".json.gz") for p in files), "no baseline entry was written"
    assert any(CONTROL.encode() in _contents(p) for p in files if p.suffix == ".wandb"), "the search sees nothing"
    for path in files:
        data = _contents(path)
        for name, value in CANARIES.items():
            assert value.encode() not in data, f"{name} leaked into {path}"
    for name, value in CANARIES.items():
        assert value not in text, f"{name} leaked into the CLI output"
