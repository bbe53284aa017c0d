"""Bad input through the CLI: one clear message, the documented exit code, nothing touched.

DESIGN.md promises that a user-fixable error prints one message naming the
file or key and the fix, with no traceback, and that nothing partial is left
in the output folder or the baseline store. Each case below breaks one thing,
runs `gate run` (or `gate validate`) through CliRunner and checks all four:
exit code, message, no traceback, and both folders byte for byte as before
(file lists + sha256; a folder that did not exist may at most appear empty).

Cost: lm-eval indexes its task registry once per set of include paths (about
6 s), so every case shares one trimmed copy of tests/fixtures/fakesuite; the
tiny real model (scripts/tiny_model.py) is built once per module, for the
cases that need real adapter files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from fakeworld import fake_adapter_dir, fake_model_dir

from gate.cli.main import cli

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parent.parent
FAKESUITE = REPO / "tests" / "fixtures" / "fakesuite"
TINY_SCRIPT = REPO / "scripts" / "tiny_model.py"
ROWS = 40  # documents per fake task: enough for the statistics, quick to evaluate


# --------------------------------------------------------------------------- building blocks


def make_suite(root: Path, rows: int = ROWS) -> Path:
    """A copy of the fake suite with `rows` documents per task; returns suite.yaml."""
    shutil.copytree(FAKESUITE, root)
    for data in (root / "data").glob("*.jsonl"):
        lines = data.read_text(encoding="utf-8").splitlines()[:rows]
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    suite = yaml.safe_load((root / "suite.yaml").read_text(encoding="utf-8"))
    suite["tiers"]["general"][0]["samples"] = rows - 10
    (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return root / "suite.yaml"




def build_tiny(root: Path) -> dict[str, Path]:
    """The tiny random Llama and its LoRAs (scripts/tiny_model.py), built once per root."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_model", TINY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.build_all(root))


@dataclass
class World:
    """What every case shares: the suite (one lm-eval index), fake models, thresholds."""

    root: Path
    suite: Path
    base: Path
    adapters: dict[str, Path]
    thresholds: Path

    def config(self, case: Path, **changes: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "base": {"path": str(self.base)},
            "candidates": [{"name": n, "adapter": str(p)} for n, p in self.adapters.items()],
            "suite": str(self.suite),
            "thresholds": str(self.thresholds),
            "engine": {"kind": "fake"},
            "baseline": {"store": str(case / "store")},
            "cache_dir": str(case / "cache"),
            "out": str(case / "out"),
        }
        cfg.update(changes)
        return cfg


def make_world(root: Path) -> World:
    root.mkdir(parents=True, exist_ok=True)
    suite = make_suite(root / "suite")
    base = fake_model_dir(root / "base")
    adapters = {"good": fake_adapter_dir(root / "good", b"good"), "other": fake_adapter_dir(root / "other", b"other")}
    thresholds = root / "thresholds.yaml"
    shutil.copy(REPO / "thresholds.yaml", thresholds)
    return World(root, suite, base, adapters, thresholds)


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, str] | None:
    """Relative path -> sha256 of every file under `folder` (None when it does not exist).

    Lock files count too: a failed run must not even leave empty locks behind.
    """
    if not folder.exists():
        return None
    if not folder.is_dir():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_untouched(before: dict[str, str] | None, after: dict[str, str] | None, what: str) -> None:
    if before is None:
        assert not after, f"{what} did not exist before the failed run; now it holds {sorted(after or {})}"
    else:
        assert after == before, f"{what} changed during the failed run"


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=True)


def output_of(res: Result) -> str:
    """Everything the user saw (click >= 8.2 keeps stderr in `output` too)."""
    text = res.output
    with contextlib.suppress(ValueError):
        if res.stderr and res.stderr not in text:
            text += res.stderr
    return text


def check_clean_failure(res: Result, code: int, expect: list[str]) -> str:
    """The documented exit code, one `error:` message with the expected parts, no traceback."""
    text = output_of(res)
    assert res.exit_code == code, f"exit {res.exit_code}, expected {code}; output:\n{text}\n{res.exception!r}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in text, text
    assert text.count("error:") == 1, f"expected one error message:\n{text}"
    for part in expect:
        assert part in text, f"{part!r} missing from:\n{text}"
    return text


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def golden(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished fake run: its store, cache and out folders, copied by the baseline cases."""
    case = tmp_path_factory.mktemp("golden")
    cfg = write_yaml(case / "gate.yaml", world.config(case))
    res = invoke(["run", "--config", str(cfg)])
    assert res.exit_code in (0, 1), output_of(res)
    assert (case / "out" / "results.json").is_file()
    return case


@pytest.fixture
def no_spawn(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Refuse to start any vLLM server: every case must fail before spawning one."""
    import gate.serve.vllm_server as vs

    spawned: list[list[str]] = []

    def refuse(cmd: list[str], *args: Any, **kwargs: Any) -> Any:
        spawned.append(list(cmd))
        raise AssertionError(f"a process was spawned: {cmd}")

    # Only vLLM's launcher is guarded: `git rev-parse` may still run for provenance.
    monkeypatch.setattr(vs.subprocess, "Popen", refuse)
    return spawned


# --------------------------------------------------------------------------- the cases


@dataclass
class Ctx:
    """One case's folder and the shared world; cases register clean-ups on `stack`."""

    dir: Path
    world: World
    request: pytest.FixtureRequest
    stack: contextlib.ExitStack
    out: Path = field(init=False)
    store: Path = field(init=False)
    spawned: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = self.dir / "out"
        self.store = self.dir / "store"

    @property
    def tiny(self) -> dict[str, Path]:
        return dict(self.request.getfixturevalue("tiny"))

    def run_config(self, **changes: Any) -> list[str]:
        cfg = write_yaml(self.dir / "gate.yaml", self.world.config(self.dir, **changes))
        return ["run", "--config", str(cfg)]

    def from_golden(self) -> None:
        """Start from a finished run: its store, cache and out folder."""
        golden: Path = self.request.getfixturevalue("golden")
        for sub in ("store", "cache", "out"):
            shutil.copytree(golden / sub, self.dir / sub)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    code: int
    expect: list[str]
    max_seconds: float | None = None


def _cfg_file(ctx: Ctx) -> str:
    return str(ctx.dir / "gate.yaml")


def unknown_key(ctx: Ctx) -> list[str]:
    return ctx.run_config(probes={"enabled": True, "frobnicate": 3})


def misspelled_key(ctx: Ctx) -> list[str]:
    cfg = ctx.world.config(ctx.dir)
    cfg["cache_dri"] = cfg.pop("cache_dir")
    write_yaml(ctx.dir / "gate.yaml", cfg)
    return ["run", "--config", _cfg_file(ctx)]


def wrong_type(ctx: Ctx) -> list[str]:
    return ctx.run_config(engine={"kind": "fake", "vllm": {"port": "eighty"}})


def missing_config(ctx: Ctx) -> list[str]:
    return ["run", "--config", str(ctx.dir / "nope.yaml")]


def missing_suite(ctx: Ctx) -> list[str]:
    return ctx.run_config(suite=str(ctx.dir / "no-such-suite.yaml"))


def empty_tier(ctx: Ctx) -> list[str]:
    suite = yaml.safe_load(ctx.world.suite.read_text(encoding="utf-8"))
    suite["tiers"]["general"] = []
    path = write_yaml(ctx.dir / "suite.yaml", suite)
    return ctx.run_config(suite=str(path))


def duplicate_names(ctx: Ctx) -> list[str]:
    good = str(ctx.world.adapters["good"])
    return ctx.run_config(candidates=[{"name": "twin", "adapter": good}, {"name": "twin", "adapter": good}])


def adapter_without_config(ctx: Ctx) -> list[str]:
    folder = ctx.dir / "not-an-adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    return ctx.run_config(candidates=[{"name": "bare", "adapter": str(folder)}])


def _tiny_adapter_copy(ctx: Ctx) -> Path:
    dest = ctx.dir / "adapter"
    shutil.copytree(ctx.tiny["lora"], dest)
    return dest


def _tiny_run(ctx: Ctx, adapter: Path, engine: dict[str, Any] | None = None, **extra: Any) -> list[str]:
    """A run of the tiny base with one adapter on a real engine kind (nothing is started:
    adapter checks come first; the `no_spawn` fixture guards vLLM)."""
    ctx.spawned = ctx.request.getfixturevalue("no_spawn")
    return ctx.run_config(base={"path": str(ctx.tiny["base"])},
                          candidates=[{"name": "cand", "adapter": str(adapter), **extra}],
                          engine=engine or {"kind": "vllm"})


def adapter_other_hidden_size(ctx: Ctx) -> list[str]:
    """An adapter trained on a base with hidden size 64: every LoRA tensor on the
    residual stream has the wrong size."""
    from safetensors.torch import load_file, save_file

    adapter = _tiny_adapter_copy(ctx)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    shrunk = {}
    for k, v in tensors.items():
        if "lora_A" in k and v.shape[-1] == 128:
            v = v[:, :64].contiguous()
        elif "lora_B" in k and v.shape[0] == 128:
            v = v[:64, :].contiguous()
        shrunk[k] = v
    save_file(shrunk, str(weights))
    return _tiny_run(ctx, adapter)


def adapter_other_architecture(ctx: Ctx) -> list[str]:
    """A GPT-2 style adapter (c_attn/c_proj) offered for a Llama base."""
    from safetensors.torch import load_file, save_file

    adapter = _tiny_adapter_copy(ctx)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in tensors.items() if "q_proj" in k}
    save_file(renamed, str(weights))
    cfg_file = adapter / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["target_modules"] = ["c_attn"]
    cfg_file.write_text(json.dumps(cfg))
    return _tiny_run(ctx, adapter)


def rank_above_vllm_max(ctx: Ctx) -> list[str]:
    adapter = _tiny_adapter_copy(ctx)
    cfg_file = adapter / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["r"] = 1024
    cfg_file.write_text(json.dumps(cfg))
    return _tiny_run(ctx, adapter)


def pickle_weights(ctx: Ctx) -> list[str]:
    import torch
    from safetensors.torch import load_file

    adapter = _tiny_adapter_copy(ctx)
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), adapter / "adapter_model.bin")
    weights.unlink()
    return _tiny_run(ctx, adapter)


def truncated_safetensors(ctx: Ctx) -> list[str]:
    adapter = _tiny_adapter_copy(ctx)
    weights = adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return _tiny_run(ctx, adapter)


def thresholds_out_of_range(ctx: Ctx) -> list[str]:
    data = yaml.safe_load(ctx.world.thresholds.read_text(encoding="utf-8"))
    data["bootstrap_samples"] = 50
    path = write_yaml(ctx.dir / "thresholds.yaml", data)
    return ctx.run_config(thresholds=str(path))


def tier_alpha_outside_unit(ctx: Ctx) -> list[str]:
    data = yaml.safe_load(ctx.world.thresholds.read_text(encoding="utf-8"))
    data["tiers"]["general"]["alpha"] = 1.2
    path = write_yaml(ctx.dir / "thresholds.yaml", data)
    return ctx.run_config(thresholds=str(path))


def _suite_beside_world(ctx: Ctx, name: str, suite: dict[str, Any]) -> Path:
    """A suite file in the shared suite folder, so it shares its include path (and lm-eval index)."""
    path = ctx.world.suite.parent / f"{name}.yaml"
    write_yaml(path, suite)
    return path


def unknown_task(ctx: Ctx) -> list[str]:
    suite = yaml.safe_load(ctx.world.suite.read_text(encoding="utf-8"))
    suite["tiers"]["target"][0]["task"] = "fk_targte"
    return ctx.run_config(suite=str(_suite_beside_world(ctx, "unknown_task", suite)))


EXTRA = "extra"  # a second include folder holding broken task YAMLs (one more lm-eval index)


def _extra_tasks(world: World) -> Path:
    folder = world.suite.parent / EXTRA
    if not folder.exists():
        folder.mkdir()
        target = yaml.safe_load((world.suite.parent / "tasks" / "fk_target.yaml").read_text(encoding="utf-8"))
        target["task"] = "fk_nodata"
        target["dataset_kwargs"]["data_files"]["test"] = "../data/fk_nodata.jsonl"
        write_yaml(folder / "fk_nodata.yaml", target)
        (folder / "broken.yaml").write_text("task: fk_broken\ndataset_path: json\ndoc_to_text: [unclosed\n",
                                            encoding="utf-8")
    return folder


def task_yaml_syntax_error(ctx: Ctx) -> list[str]:
    _extra_tasks(ctx.world)
    suite = yaml.safe_load(ctx.world.suite.read_text(encoding="utf-8"))
    suite["include"] = ["tasks", EXTRA]
    suite["tiers"]["related"][0]["task"] = f"{EXTRA}/broken.yaml"
    return ctx.run_config(suite=str(_suite_beside_world(ctx, "broken_yaml", suite)))


def task_data_missing(ctx: Ctx) -> list[str]:
    _extra_tasks(ctx.world)
    suite = yaml.safe_load(ctx.world.suite.read_text(encoding="utf-8"))
    suite["include"] = ["tasks", EXTRA]
    suite["tiers"]["target"][0]["task"] = "fk_nodata"
    return ctx.run_config(suite=str(_suite_beside_world(ctx, "no_data", suite)))


def _entry_file(store: Path) -> Path:
    manifest = json.loads((store / "manifest.json").read_text(encoding="utf-8"))
    row = next(r for r in manifest["entries"].values() if r["task"] == "fk_general")
    return store / row["name"]


def truncated_baseline(ctx: Ctx) -> list[str]:
    ctx.from_golden()
    entry = _entry_file(ctx.store)
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    return ctx.run_config()


def flipped_baseline(ctx: Ctx) -> list[str]:
    ctx.from_golden()
    entry = _entry_file(ctx.store)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    return ctx.run_config()


def out_under_a_file(ctx: Ctx) -> list[str]:
    blocker = ctx.dir / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    ctx.out = blocker / "out"
    return ctx.run_config(out=str(ctx.out))


def require_baseline_without_one(ctx: Ctx) -> list[str]:
    return [*ctx.run_config(), "--require-baseline"]


def adapter_flag_without_name(ctx: Ctx) -> list[str]:
    return [*ctx.run_config(), "--adapter", str(ctx.world.adapters["good"])]


def release_unknown_candidate(ctx: Ctx) -> list[str]:
    return [*ctx.run_config(), "--release", "nobody"]


def endpoint_without_url(ctx: Ctx) -> list[str]:
    return ctx.run_config(engine={"kind": "endpoint", "endpoint": {"api_key_env": "GATE_TEST_KEY"}})


def port_in_use(ctx: Ctx) -> list[str]:
    sock = ctx.stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    ctx.request.node.port = port
    return _tiny_run(ctx, ctx.tiny["lora"], engine={"kind": "vllm", "vllm": {"port": port}})


class FakeDeployment:
    """A stand-in for a vLLM deployment: /v1/models lists `names`, nothing else works."""

    def __init__(self, names: list[str]) -> None:
        body = json.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in names]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def endpoint_lacks_adapter(ctx: Ctx) -> list[str]:
    deployment = FakeDeployment(["base"])
    ctx.stack.callback(deployment.close)
    return _tiny_run(ctx, ctx.tiny["lora"], engine={"kind": "endpoint", "endpoint": {"base_url": deployment.url}})


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint_unreachable(ctx: Ctx) -> list[str]:
    url = f"http://127.0.0.1:{_closed_port()}"
    return _tiny_run(ctx, ctx.tiny["lora"], engine={"kind": "endpoint", "endpoint": {"base_url": url}})


CASES = [
    Case("unknown-key", unknown_key, 2, ["gate.yaml: probes.frobnicate: unknown key", "remove it; allowed keys here: enabled"]),
    Case("misspelled-key", misspelled_key, 2, ["gate.yaml: cache_dri: unknown key (fix: did you mean `cache_dir`?)"]),
    Case("wrong-type", wrong_type, 2, ["gate.yaml: engine.vllm.port: Input should be a valid integer", "(got 'eighty')", "fix: change the value"]),
    Case("missing-run-config", missing_config, 2, ["nope.yaml: file not found (fix: check the path"]),
    Case("missing-suite", missing_suite, 2, ["no-such-suite.yaml: file not found (fix: check the path"]),
    Case("empty-tier", empty_tier, 2, ["suite.yaml: tiers.general: List should have at least 1 item", "fix: change the value"]),
    Case("duplicate-candidates", duplicate_names, 2, ["gate.yaml: ", "candidate names must be unique; repeated: twin"]),
    Case("adapter-without-config", adapter_without_config, 2, ["candidates.0.adapter: no adapter_config.json in", "not-an-adapter",
                                                               "fix: point `adapter` at a PEFT adapter folder"]),
    Case("adapter-other-hidden-size", adapter_other_hidden_size, 2, ["adapter_model.safetensors", "have input size 64 where the base",
                                                                     "has 128", "fix: use the base model the adapter was trained on"]),
    Case("adapter-other-architecture", adapter_other_architecture, 2, ["adapter_config.json: target_modules:", "'c_attn'",
                                                                       "match no module of the base",
                                                                       "fix: use the base model the adapter was trained on"]),
    Case("rank-above-vllm-max", rank_above_vllm_max, 2, ["adapter_config.json: r: rank 1024 is above vLLM's maximum 512",
                                                         "fix: use the hf engine, or merge the adapter"]),
    Case("pickle-weights", pickle_weights, 2, ["adapter_model.bin: adapter weights are a pickle",
                                               "fix: re-save with save_pretrained(..., safe_serialization=True)"]),
    Case("truncated-safetensors", truncated_safetensors, 2, ["adapter_model.safetensors", "truncated",
                                                             "fix: copy the adapter again from its source"]),
    Case("thresholds-out-of-range", thresholds_out_of_range, 2, ["thresholds.yaml: bootstrap_samples: Input should be greater than or equal to 200",
                                                                 "(got 50)"]),
    Case("tier-alpha-outside-0-1", tier_alpha_outside_unit, 2, ["thresholds.yaml: tiers.general.alpha: Input should be less than 1",
                                                                "(got 1.2)"]),
    Case("unknown-task", unknown_task, 2, ["unknown_task.yaml: tiers.target: unknown lm-eval task 'fk_targte'",
                                           "fix: did you mean fk_target"]),
    Case("task-yaml-syntax-error", task_yaml_syntax_error, 2, ["broken.yaml: task YAML cannot be parsed at line", "fix: fix the YAML syntax"]),
    Case("task-data-missing", task_data_missing, 2, ["fk_nodata.yaml: dataset_kwargs.data_files: task fk_nodata: data file not found",
                                                     "fk_nodata.jsonl", "fix: generate or restore the data file"]),
    Case("truncated-baseline-entry", truncated_baseline, 3, ["baseline entry", "is corrupt", "fix: `gate baseline rm ",
                                                             "`gate baseline verify --repair`"]),
    Case("baseline-checksum-mismatch", flipped_baseline, 3, ["baseline entry", "is corrupt: sha256", "fix: `gate baseline rm ",
                                                             "`gate baseline verify --repair`"]),
    Case("out-under-a-file", out_under_a_file, 2, ["a-file/out: out: output folder cannot be written",
                                                   "fix: choose a writable folder with --out"]),
    Case("require-baseline-missing", require_baseline_without_one, 2, ["store: fk_target: no baseline stored for task fk_target",
                                                                       "fix: run once without --require-baseline"]),
    Case("adapter-flag-without-name", adapter_flag_without_name, 2, ["--adapter: expected NAME=PATH, got ", "fix: write --adapter"]),
    Case("release-unknown-candidate", release_unknown_candidate, 2, ["release names unknown candidates ['nobody']",
                                                                     "known: ['good', 'other']"]),
    Case("endpoint-without-base-url", endpoint_without_url, 2, ["gate.yaml: engine.endpoint.base_url: required key is missing (fix: add it)"]),
    Case("port-in-use", port_in_use, 3, ["is already in use", "engine.vllm.port", "leave engine.vllm.port unset to pick a free port"]),
    Case("endpoint-lacks-adapter", endpoint_lacks_adapter, 2, ["the endpoint does not serve cand; it serves: base",
                                                               "fix: map each model to a name the endpoint serves"]),
    Case("endpoint-unreachable", endpoint_unreachable, 3, ["cannot reach the endpoint http://127.0.0.1:",
                                                           "fix: check the URL and that the deployment is up"], max_seconds=10.0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case: Case, world: World, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tmp_path / "case", world, request, stack)
        ctx.dir.mkdir()
        args = case.build(ctx)
        before = snapshot(ctx.out), snapshot(ctx.store)
        started = time.monotonic()
        res = invoke(args)
        elapsed = time.monotonic() - started
        text = check_clean_failure(res, case.code, case.expect)
        assert_untouched(before[0], snapshot(ctx.out), f"the output folder {ctx.out}")
        assert_untouched(before[1], snapshot(ctx.store), f"the baseline store {ctx.store}")
        if case.max_seconds is not None:
            assert elapsed < case.max_seconds, f"took {elapsed:.1f} s:\n{text}"
        assert not ctx.spawned, f"a vLLM server was started: {ctx.spawned}"


def test_port_in_use_fails_before_spawning(world: World, tmp_path: Path, request: pytest.FixtureRequest,
                                           no_spawn: list[list[str]]) -> None:
    """The port check runs before the server process: nothing to kill, nothing to wait 40 s for."""
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tmp_path / "case", world, request, stack)
        ctx.dir.mkdir()
        res = invoke(port_in_use(ctx))
        text = check_clean_failure(res, 3, [f"port {request.node.port} is already in use"])
    assert no_spawn == [], text


@pytest.mark.parametrize("build,key", [(port_in_use, "engine.vllm.port"),
                                       (endpoint_lacks_adapter, "engine.endpoint.names"),
                                       (endpoint_unreachable, "engine.endpoint.base_url")],
                         ids=["port", "served-names", "base-url"])
def test_engine_errors_name_the_config_key(build: Callable[[Ctx], list[str]], key: str, world: World,
                                           tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tmp_path / "case", world, request, stack)
        ctx.dir.mkdir()
        text = output_of(invoke(build(ctx)))
    assert f": {key}: " in text, text


@pytest.mark.parametrize("build,key", [(duplicate_names, "candidates"), (release_unknown_candidate, "release")],
                         ids=["duplicate-names", "unknown-release"])
def test_config_errors_name_the_key(build: Callable[[Ctx], list[str]], key: str, world: World,
                                    tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tmp_path / "case", world, request, stack)
        ctx.dir.mkdir()
        text = output_of(invoke(build(ctx)))
    assert f"gate.yaml: {key}: " in text, text


def test_adapter_for_another_hidden_size_is_one_short_message(world: World, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tmp_path / "case", world, request, stack)
        ctx.dir.mkdir()
        text = check_clean_failure(invoke(adapter_other_hidden_size(ctx)), 2, ["64", "128"])
    listed = [line for line in text.splitlines() if line.startswith("  - ")]
    assert len(listed) <= 3, f"{len(listed)} problems listed for one cause:\n{text}"


def test_the_matrix_is_broad_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
