"""The gate's exceptions and the exit codes they map to, in one place.

Exit codes are a contract with CI pipelines (see README, "Exit codes"):

    0    the release passes
    1    the release fails (regression, target not reached, or an
         inconclusive result under a `fail` policy). A regression is a
         *result*, not an exception: it never raises.
    2    bad input: config, suite, thresholds, paths, an adapter that does not
         fit its base, a baseline that does not apply under --require-baseline
    3    infrastructure: the engine died, an evaluation is incomplete, the
         baseline store cannot be written
    130  interrupted (Ctrl-C)

The exception tree::

    GateError                      exit 3 unless a subclass says otherwise
    ├── InputError                 exit 2: the user can fix it
    │   ├── ConfigError            a config/suite/thresholds file is invalid
    │   ├── PairingError           base and candidate items do not pair
    │   ├── AdapterError           an adapter does not fit its base
    │   └── BaselineMismatch       no applicable baseline and one is required
    └── InfraError                 exit 3: the machine or engine failed
        ├── EngineError            the engine died, timed out or misbehaved
        ├── StoreError             the baseline store is corrupt or unwritable
        └── IncompleteEvaluation   scores that cannot be judged (NaN items, a
                                   non-finite threshold or base score)

Each error carries `problems`: one or more `Problem(file, key, message, fix)`
so that every user-fixable error names the file, the key and the fix, and a
validation pass can report all problems at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INPUT = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located precisely enough to fix without a debugger."""

    message: str
    file: str | None = None
    key: str | None = None
    fix: str | None = None

    def render(self) -> str:
        where = ""
        if self.file and self.key:
            where = f"{self.file}: {self.key}: "
        elif self.file:
            where = f"{self.file}: "
        elif self.key:
            where = f"{self.key}: "
        text = f"{where}{self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class GateError(Exception):
    """Base of every error the gate raises on purpose."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str | None = None, *, problems: Iterable[Problem] = (),
                 file: str | None = None, key: str | None = None, fix: str | None = None):
        probs = list(problems)
        if message is not None:
            probs.insert(0, Problem(message=message, file=file, key=key, fix=fix))
        if not probs:
            probs = [Problem(message=self.__class__.__name__)]
        self.problems: list[Problem] = probs
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0].render()
        lines = [f"{len(self.problems)} problems:"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)


class InputError(GateError):
    """The user gave something the gate cannot use; they can fix it."""

    exit_code = EXIT_INPUT


class ConfigError(InputError):
    """A run config, suite or thresholds file is invalid."""


class PairingError(InputError):
    """Base and candidate items do not pair one to one."""


class AdapterError(InputError):
    """An adapter is missing files, unsafe, or does not fit its base model."""


class BaselineMismatch(InputError):
    """No stored baseline applies, and the run requires one."""


class InfraError(GateError):
    """The machine, the engine or the store failed; rerunning may help."""

    exit_code = EXIT_INFRA


class EngineError(InfraError):
    """The engine died, timed out or returned something unusable."""


class StoreError(InfraError):
    """The baseline store or cache is corrupt or cannot be written."""


class IncompleteEvaluation(InfraError):
    """Some scores cannot be judged: NaN items, a non-finite base score or
    threshold. No verdict is issued on the rest (that would be a smaller n
    chosen by the failure), so the run stops with exit 3."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for any exception (the one mapping place)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, GateError):
        return exc.exit_code
    return EXIT_INFRA
