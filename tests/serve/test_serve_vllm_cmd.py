"""The vllm engine without vLLM: command line, ports, env, and the process lifecycle.

The lifecycle tests run a stand-in server (a stdlib HTTP server that forks a
child, like vLLM's engine core) so start-up, health, the watchdog and teardown
are checked in seconds.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from gate.errors import EngineError, InfraError, InputError
from gate.serve.base import ModelSpec, weight_bytes
from gate.serve.completions import ServerGone, ServerHealth
from gate.serve.vllm_server import (
    COMPUTE_BOUND_BYTES,
    CPU_DEFAULT_MEMORY_UTILIZATION,
    VllmOptions,
    VllmServer,
    build_command,
    build_env,
    pick_port,
)

BASE = ModelSpec("base", "base", "/models/base", "/models/base")
A = ModelSpec("cand-a", "lora", "/adapters/a", "/models/base")
B = ModelSpec("cand-b", "lora", "/adapters/b", "/models/base")
FULL = ModelSpec("full-1", "full", "/models/full", "/models/base")


def _arg(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_base_and_loras_in_one_server_with_unique_lora_modules():
    cmd = build_command([BASE, A, B], VllmOptions(), 8123, cpu=False, lora_rank=16,
                        cpu_lora_fix=False)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert _arg(cmd, "--model") == "/models/base"
    assert _arg(cmd, "--served-model-name") == "base"
    assert _arg(cmd, "--host") == "127.0.0.1" and _arg(cmd, "--port") == "8123"
    assert "--enable-lora" in cmd
    i = cmd.index("--lora-modules")
    assert cmd[i + 1: i + 3] == ["cand-a=/adapters/a", "cand-b=/adapters/b"]
    assert _arg(cmd, "--max-loras") == "2" and _arg(cmd, "--max-lora-rank") == "16"


def test_options_reach_the_command_line():
    opts = VllmOptions(tensor_parallel_size=2, pipeline_parallel_size=3, data_parallel_size=4,
                       gpu_memory_utilization=0.85, max_model_len=4096, dtype="bfloat16",
                       quantization="bitsandbytes", max_num_seqs=64, enforce_eager=True,
                       kv_cache_memory_bytes=2**30, trust_remote_code=True,
                       extra_args=["--seed", "7"])
    cmd = build_command([BASE], opts, 1, cpu=False, lora_rank=None, cpu_lora_fix=False)
    assert _arg(cmd, "--tensor-parallel-size") == "2"
    assert _arg(cmd, "--pipeline-parallel-size") == "3"
    assert _arg(cmd, "--data-parallel-size") == "4"
    assert _arg(cmd, "--gpu-memory-utilization") == "0.85"
    assert _arg(cmd, "--kv-cache-memory-bytes") == str(2**30)
    assert _arg(cmd, "--max-model-len") == "4096"
    assert _arg(cmd, "--dtype") == "bfloat16"
    assert _arg(cmd, "--quantization") == "bitsandbytes"
    assert _arg(cmd, "--max-num-seqs") == "64"
    assert "--enforce-eager" in cmd and "--trust-remote-code" in cmd
    assert cmd[-2:] == ["--seed", "7"]
    assert "--enable-lora" not in cmd


def test_nf4_base_maps_to_bitsandbytes():
    qbase = ModelSpec("base", "base", "/m", "/m", quantization="nf4")
    cmd = build_command([qbase], VllmOptions(), 1, cpu=False, lora_rank=None, cpu_lora_fix=False)
    assert _arg(cmd, "--quantization") == "bitsandbytes"


def test_cpu_defaults_low_memory_share_and_one_seq_without_the_fix():
    cmd = build_command([BASE, A], VllmOptions(max_num_seqs=8), 1, cpu=True, lora_rank=8,
                        cpu_lora_fix=False)
    assert _arg(cmd, "--gpu-memory-utilization") == str(CPU_DEFAULT_MEMORY_UTILIZATION)
    assert _arg(cmd, "--max-num-seqs") == "1"  # vllm-project/vllm #16668


def test_cpu_with_the_fix_keeps_the_configured_batch():
    cmd = build_command([BASE, A], VllmOptions(max_num_seqs=8), 1, cpu=True, lora_rank=8,
                        cpu_lora_fix=True)
    assert _arg(cmd, "--max-num-seqs") == "8"
    env = build_env(cpu=True, cpu_lora_fix=True, has_loras=True)
    assert env["GATE_VLLM_CPU_LORA_FIX"] == "1"


def test_env_never_enables_runtime_lora_loading(monkeypatch):
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "1")
    monkeypatch.setenv("GATE_VLLM_CPU_LORA_FIX", "1")
    env = build_env(cpu=False, cpu_lora_fix=True, has_loras=True)
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env
    assert "GATE_VLLM_CPU_LORA_FIX" not in env  # GPU: no patch


def test_on_two_cores_a_real_model_computes_on_both_and_a_users_binding_wins(monkeypatch, tmp_path):
    """vLLM-CPU keeps one core per rank for its scheduler: on a 2-core runner
    that halves a real model's compute, so the gate binds its threads to both.
    A tiny model is bound by the Python processes and keeps vLLM's binding."""
    for k in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(k, raising=False)
    real, tiny = tmp_path / "real", tmp_path / "tiny"
    for folder, size in ((real, COMPUTE_BOUND_BYTES), (tiny, COMPUTE_BOUND_BYTES - 1)):
        folder.mkdir()
        with (folder / "model.safetensors").open("wb") as f:
            f.truncate(size)  # sparse: only the size is read
    big, small = weight_bytes(str(real)), weight_bytes(str(tiny))
    assert (big, small, weight_bytes("org/hub-id")) == (COMPUTE_BOUND_BYTES, COMPUTE_BOUND_BYTES - 1, None)

    def bind(**kw):
        args = {"cpu": True, "cpu_lora_fix": True, "has_loras": True, "model_bytes": big, "cpus": {0, 1}, **kw}
        return build_env(**args).get("VLLM_CPU_OMP_THREADS_BIND")

    assert bind() == "0,1"
    assert bind(cpus={3}, has_loras=False) == "3"
    # vLLM's own binding: a small or unknown model, a larger machine, a multi-rank engine, a GPU
    assert bind(model_bytes=small) is None and bind(model_bytes=None) is None
    assert bind(cpus={0, 1, 2, 3}) is None and bind(ranks=2) is None and bind(cpu=False) is None
    for user in ({"VLLM_CPU_OMP_THREADS_BIND": "1"}, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}):
        with monkeypatch.context() as m:
            for k, v in user.items():
                m.setenv(k, v)
            assert bind() == user.get("VLLM_CPU_OMP_THREADS_BIND")


def test_full_fine_tune_is_served_under_its_own_name():
    cmd = build_command([FULL], VllmOptions(), 1, cpu=False, lora_rank=None, cpu_lora_fix=False)
    assert _arg(cmd, "--model") == "/models/full"
    assert _arg(cmd, "--served-model-name") == "full-1"


def test_loras_without_base_refused():
    with pytest.raises(InputError, match="needs its base"):
        build_command([A], VllmOptions(), 1, cpu=False, lora_rank=8, cpu_lora_fix=False)


def test_groups_put_loras_with_base_and_full_alone():
    from gate.serve.vllm_server import VllmEngine

    groups = VllmEngine().groups([BASE, A, FULL, B])
    assert [[m.name for m in g] for g in groups] == [["base", "cand-a", "cand-b"], ["full-1"]]


def test_port_in_use_names_the_port_and_fix():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InfraError, match=f"port {port} is already in use") as err:
            pick_port(port)
        assert "engine.vllm.port" in str(err.value)


def test_free_port_is_picked_when_unset():
    port = pick_port(None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# --- lifecycle against a stand-in server -------------------------------------------

STANDIN = textwrap.dedent('''
    import json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    names = sys.argv[2].split(",")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    delay = float(sys.argv[3])
    start = time.time()
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if time.time() - start < delay:
                self.send_response(503); self.end_headers(); return
            body = b"{}" if self.path == "/health" else json.dumps(
                {"data": [{"id": n} for n in names]}).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


def _standin(tmp_path: Path, names: str, delay: float = 0.5, script: str = STANDIN,
             timeout: float = 20) -> VllmServer:
    path = tmp_path / "standin.py"
    path.write_text(script)
    port = pick_port(None)
    cmd = [sys.executable, str(path), str(port), names, str(delay)]
    opts = VllmOptions(health_timeout_s=timeout, shutdown_grace_s=3)
    return VllmServer(cmd, dict(os.environ), tmp_path / "vllm-base.log", port,
                      names.split(","), opts)


def _group_alive(pgid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter(["pid"])
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and _pgid(p.pid) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.heavy
def test_start_waits_for_every_name_and_stop_kills_the_whole_group(tmp_path):
    server = _standin(tmp_path, "base,cand-a")
    server.start()
    pgid = server.proc.pid
    assert len(_group_alive(pgid)) == 2  # leader + its child
    server.stop()
    deadline = time.time() + 5
    while _group_alive(pgid) and time.time() < deadline:
        time.sleep(0.1)
    assert _group_alive(pgid) == []


@pytest.mark.heavy
def test_server_exiting_during_startup_raises_with_exit_code_and_log_tail(tmp_path):
    script = "import sys\nprint('CUDA out of memory: the reason')\nsys.exit(3)\n"
    server = _standin(tmp_path, "base", script=script)
    t0 = time.time()
    with pytest.raises(EngineError, match="exit code 3") as err:
        server.start()
    assert "CUDA out of memory: the reason" in str(err.value)
    assert time.time() - t0 < 10
    server.stop()


@pytest.mark.heavy
def test_health_timeout_when_a_name_never_appears(tmp_path):
    server = _standin(tmp_path, "base", timeout=2)
    server.names = ["base", "cand-missing"]
    with pytest.raises(EngineError, match="did not become ready"):
        server.start()
    server.stop()
    assert server.proc.poll() is not None


@pytest.mark.heavy
def test_watchdog_marks_health_dead_and_lms_fail_fast(tmp_path):
    server = _standin(tmp_path, "base")
    server.start()
    try:
        server.health.check()  # alive: no error
        os.kill(server.proc.pid, 9)
        deadline = time.time() + 3
        while not server.health.dead and time.time() < deadline:
            time.sleep(0.05)
        assert server.health.dead
        with pytest.raises(ServerGone):
            server.health.check()
        err = server.died_error("died during the evaluation")
        assert "exit code -9" in str(err)
    finally:
        server.stop()


def test_health_without_probe_is_alive_until_marked():
    health = ServerHealth()
    health.check()
    health.mark_dead(1)
    with pytest.raises(ServerGone):
        health.check()


def test_parallel_settings_in_gate_yaml_reach_the_command_line():
    """The path a user takes: engine.vllm in gate.yaml -> make_engine -> `vllm serve` flags."""
    from gate.config.models import RunConfig
    from gate.serve.factory import make_engine

    cfg = RunConfig.model_validate({
        "base": {"path": "/models/base"}, "candidates": [{"name": "a", "adapter": "/adapters/a"}],
        "suite": "default",
        "engine": {"kind": "vllm", "vllm": {
            "tensor_parallel_size": 8, "pipeline_parallel_size": 2, "data_parallel_size": 2,
            "batch_size": 4, "extra_args": ["--distributed-executor-backend", "ray"]}}})
    engine = make_engine(cfg)
    cmd = build_command([BASE], engine.options, 1, cpu=False, lora_rank=None, cpu_lora_fix=False)  # type: ignore[attr-defined]
    assert _arg(cmd, "--tensor-parallel-size") == "8"
    assert _arg(cmd, "--pipeline-parallel-size") == "2"
    assert _arg(cmd, "--data-parallel-size") == "2"
    assert _arg(cmd, "--distributed-executor-backend") == "ray"
    assert engine.options.batch_size == 4  # type: ignore[attr-defined]
