"""The hf reference log-likelihoods for the engine-parity probe, computed in a child process.

Why a child process: the reference loads torch, lm-eval's `hf` model, PEFT and
the model weights (about 470 MB of resident memory on the toy world before
any weights), and a process never gives that memory back. Done in the gate's
own process it set the peak RSS of every vLLM run, although the probe needs
it only for a few seconds. The child computes the summed log-likelihood of
each probe text under each model of the group with `HfEngine` exactly as the
in-process probe did, and hands the floats back as JSON (a float's repr round
trips exactly, so the probe's numbers are unchanged).

A GateError raised in the child (say an adapter that does not fit its base)
is raised again in the parent with the same class and problems, so the exit
code is the same as if the reference had run in process.

    python -m gate.serve.hf_reference REQUEST.json RESULT.json   (internal)
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gate import errors
from gate.serve.base import ModelSpec, tail
from gate.serve.hf import HfOptions


def reference_loglikelihoods(group: Sequence[ModelSpec], texts: Sequence[str], options: HfOptions,
                             log_dir: Path) -> dict[str, list[float]]:
    """{model name: summed log-likelihood of each text} under the hf engine, in a child process.

    The child's stderr goes to `log_dir/hf-reference.log`; on an unexpected
    failure its tail is in the EngineError.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "hf-reference.log"
    with tempfile.TemporaryDirectory(prefix="gate-hf-ref-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({
            # the child checks adapters itself: a spec crosses as its plain fields
            "group": [dataclasses.asdict(dataclasses.replace(s, adapter=None)) for s in group], "texts": list(texts),
            "options": dataclasses.asdict(options), "log_dir": str(log_dir),
        }), encoding="utf-8")
        with log_path.open("wb") as log:
            proc = subprocess.run([sys.executable, "-m", "gate.serve.hf_reference", str(request), str(result)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        answer: dict[str, Any] = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else {}
    if "error" in answer:
        raise _rebuild_error(answer["error"])
    if proc.returncode != 0 or "loglikelihoods" not in answer:
        raise errors.EngineError(
            f"the hf reference for the parity probe failed (exit code {proc.returncode}); "
            f"last lines of {log_path}:\n{tail(log_path)}",
            file=str(log_path), key="probes.parity",
            fix="read the log, or set probes.parity: false to skip the engine-parity probe")
    return {name: [float(x) for x in values] for name, values in answer["loglikelihoods"].items()}


def _rebuild_error(data: dict[str, Any]) -> errors.GateError:
    cls = getattr(errors, str(data.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.GateError)):
        cls = errors.EngineError
    return cls(problems=[errors.Problem(**p) for p in data.get("problems", [])])


def _compute(request: dict[str, Any]) -> dict[str, list[float]]:
    from gate.serve.hf import HfEngine
    from gate.serve.probes import rolling_loglikelihoods

    group = [ModelSpec(**s) for s in request["group"]]
    engine = HfEngine(HfOptions(**request["options"]))
    with engine.serve(group, Path(request["log_dir"])) as lms:
        return {spec.name: rolling_loglikelihoods(lms[spec.name], request["texts"]) for spec in group}


def main(argv: Sequence[str]) -> int:
    request_file, result_file = Path(argv[0]), Path(argv[1])
    request = json.loads(request_file.read_text(encoding="utf-8"))
    try:
        answer: dict[str, Any] = {"loglikelihoods": _compute(request)}
    except errors.GateError as exc:
        answer = {"error": {"class": type(exc).__name__,
                            "problems": [dataclasses.asdict(p) for p in exc.problems]}}
    result_file.write_text(json.dumps(answer), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
