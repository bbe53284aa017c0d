"""The endpoint engine: an OpenAI-compatible vLLM deployment someone else runs.

The gate starts nothing; it checks before evaluating that the deployment
serves the base and every adapter under the configured names (a missing
adapter would otherwise fail hours into a run, or worse, be silently served
by a resolver plugin). The API key is read from an environment variable
whose *name* is configured, so that the key never enters a config file, a log
or results.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from gate.config.models import BATCH_SIZE, MAX_RETRIES, NUM_CONCURRENT, REQUEST_TIMEOUT_S
from gate.errors import EngineError, InfraError, InputError
from gate.serve.base import Engine, ModelSpec, check_unique_names
from gate.serve.completions import (
    ServerHealth,
    ServerSlots,
    bos_by_default,
    completions_lm,
    served_context,
)

if TYPE_CHECKING:
    from lm_eval.api.model import LM


@dataclass
class EndpointOptions:
    """Where the deployment is and how to reach it."""

    base_url: str  # e.g. http://vllm.internal:8000/v1
    api_key_env: str | None = None  # NAME of the environment variable holding the key
    served_names: Mapping[str, str] = field(default_factory=dict)  # model name -> served name
    connect_timeout_s: float = 5.0
    connect_attempts: int = 3
    connect_deadline_s: float = 8.0  # all attempts together: an unreachable or silent endpoint fails fast
    request_timeout_s: float = REQUEST_TIMEOUT_S
    num_concurrent: int = NUM_CONCURRENT
    batch_size: int = BATCH_SIZE
    max_retries: int = MAX_RETRIES
    max_model_len: int | None = None
    trust_remote_code: bool = False
    version_label: str = "unknown"  # the deployment's vLLM version, for fingerprints


def v1_root(base_url: str) -> str:
    """Normalise http://host:port, .../v1 or .../v1/completions to .../v1."""
    url = base_url.rstrip("/")
    if url.endswith("/completions"):
        url = url[: -len("/completions")]
    if not url.endswith("/v1"):
        url += "/v1"
    return url


class EndpointEngine(Engine):
    """Scores through an existing deployment; nothing to start or stop."""

    kind: ClassVar[str] = "endpoint"
    concurrent: ClassVar[bool] = True

    def __init__(self, options: EndpointOptions) -> None:
        self.options = options

    def version(self) -> str:
        return f"endpoint-{self.options.version_label}"

    def groups(self, models: Sequence[ModelSpec]) -> list[list[ModelSpec]]:
        return [list(models)] if models else []  # the deployment serves them all at once

    def served_name(self, spec: ModelSpec) -> str:
        return self.options.served_names.get(spec.name, spec.name)

    def _api_key(self) -> str | None:
        env = self.options.api_key_env
        if not env:
            return None
        key = os.environ.get(env)
        if not key:
            raise InputError(f"environment variable {env} is not set or empty",
                             key="engine.endpoint.api_key_env",
                             fix=f"export {env}=<the deployment's API key>")
        return key

    def list_models(self, api_key: str | None) -> list[str]:
        url = f"{v1_root(self.options.base_url)}/models"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        last: Exception | None = None
        deadline = time.monotonic() + self.options.connect_deadline_s
        for attempt in range(self.options.connect_attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                req = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(req, timeout=min(self.options.connect_timeout_s, remaining)) as resp:
                    data = json.load(resp)
                return [str(m["id"]) for m in data.get("data", [])]
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise InputError(
                        f"{url} refused the API key (HTTP {exc.code})", key="engine.endpoint.api_key_env",
                        fix="check the key in the variable named by engine.endpoint.api_key_env") from exc
                last = exc
            except (urllib.error.URLError, OSError, ValueError, KeyError, AttributeError) as exc:
                last = exc
            if attempt + 1 < self.options.connect_attempts:
                time.sleep(min(0.5 * (attempt + 1), max(0.0, deadline - time.monotonic())))
        raise InfraError(f"cannot reach the endpoint {url}: {last}", key="engine.endpoint.base_url",
                         fix="check the URL and that the deployment is up")

    def check_served(self, group: Sequence[ModelSpec], api_key: str | None) -> None:
        available = self.list_models(api_key)
        missing = [self.served_name(m) for m in group if self.served_name(m) not in available]
        if missing:
            raise InputError(
                f"the endpoint does not serve {', '.join(missing)}; it serves: "
                f"{', '.join(available) or '(nothing)'}",
                key="engine.endpoint.names",
                fix="map each model to a name the endpoint serves, or load the adapters there",
            )

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, LM]]:
        check_unique_names(group)
        api_key = self._api_key()
        self.check_served(group, api_key)
        health = ServerHealth()  # a remote deployment: failures surface as request errors
        slots = ServerSlots(self.options.num_concurrent, health)  # one budget for the deployment
        add_bos = bos_by_default(group[0].base_path, self.options.trust_remote_code)
        context = served_context(group[0].base_path, self.options.max_model_len, self.options.trust_remote_code)
        lms: dict[str, LM] = {
            m.name: completions_lm(
                base_url=f"{v1_root(self.options.base_url)}/completions",
                served_name=self.served_name(m),
                tokenizer_dir=m.path if m.kind == "full" else m.base_path, health=health, slots=slots,
                num_concurrent=self.options.num_concurrent, max_retries=self.options.max_retries,
                batch_size=self.options.batch_size,
                timeout_s=self.options.request_timeout_s, add_bos_token=add_bos,
                context=context, api_key=api_key,
                trust_remote_code=self.options.trust_remote_code, options_key="engine.endpoint")
            for m in group
        }
        try:
            yield lms
        except (ConnectionError, urllib.error.URLError) as exc:
            raise EngineError(f"the endpoint failed during the evaluation: {exc}",
                              key="engine.endpoint.base_url", fix="check the deployment") from exc
