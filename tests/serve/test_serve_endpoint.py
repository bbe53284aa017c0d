"""The endpoint engine's checks, against a stdlib stand-in for a vLLM deployment."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_serve_tiny import tiny_world

from gate.errors import InfraError, InputError
from gate.serve.base import ModelSpec
from gate.serve.endpoint import EndpointEngine, EndpointOptions, v1_root

KEY = "sk-test-secret-123"


class _Deployment:
    """Lists `names` at /v1/models; answers POSTs with `complete(payload)` when given."""

    def __init__(self, names: list[str], require_key: str | None = None,
                 complete: Callable[[dict], dict] | None = None) -> None:
        self.names = names
        self.require_key = require_key
        self.seen_auth: list[str | None] = []
        deployment = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                deployment.seen_auth.append(self.headers.get("Authorization"))
                if deployment.require_key and self.headers.get("Authorization") != f"Bearer {deployment.require_key}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"data": [{"id": n} for n in deployment.names]}).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                assert complete is not None, "this deployment answers no POST"
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps(complete(payload)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def deployment() -> Iterator[_Deployment]:
    d = _Deployment(["base", "cand-a"])
    yield d
    d.server.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp() / "tiny")


def _group(tiny, *names):
    base = str(tiny["base"])
    return [ModelSpec("base", "base", base, base)] + [
        ModelSpec(n, "lora", str(tiny["lora"]), base) for n in names]


@pytest.mark.heavy
def test_missing_names_listed_with_what_exists(deployment, tiny, tmp_path):
    engine = EndpointEngine(EndpointOptions(base_url=deployment.url))
    with pytest.raises(InputError) as err, engine.serve(_group(tiny, "cand-a", "cand-b"), tmp_path):
        pass
    text = str(err.value)
    assert "does not serve cand-b" in text and "it serves: base, cand-a" in text
    assert "engine.endpoint.names" in text


@pytest.mark.heavy
def test_served_names_map_model_names(deployment, tiny, tmp_path):
    opts = EndpointOptions(base_url=deployment.url, served_names={"mine": "cand-a"})
    engine = EndpointEngine(opts)
    with engine.serve(_group(tiny, "mine"), tmp_path) as lms:
        assert set(lms) == {"base", "mine"}
        assert lms["mine"].model == "cand-a"
        assert lms["mine"].base_url == deployment.url + "/completions"
        assert lms["mine"].add_bos_token is True  # the BOS trap: match the tokenizer default


def test_unreachable_endpoint_is_infra_error_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens
    engine = EndpointEngine(EndpointOptions(base_url=f"http://127.0.0.1:{port}",
                                            connect_timeout_s=1, connect_attempts=2))
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="cannot reach the endpoint") as err:
        engine.list_models(None)
    assert time.monotonic() - t0 < 5
    assert "engine.endpoint.base_url" in str(err.value)


@pytest.mark.heavy
def test_silent_endpoint_fails_within_the_deadline():
    """An endpoint that accepts connections but never answers (a hung deployment)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts into the backlog, never replies
        port = listener.getsockname()[1]
        engine = EndpointEngine(EndpointOptions(base_url=f"http://127.0.0.1:{port}"))  # defaults: 3 x 5 s
        t0 = time.monotonic()
        with pytest.raises(InfraError, match="cannot reach the endpoint"):
            engine.list_models(None)
        elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed


@pytest.mark.heavy
def test_api_key_read_from_named_variable_and_never_in_errors(tiny, tmp_path, monkeypatch):
    d = _Deployment(["base"], require_key=KEY)
    try:
        monkeypatch.setenv("MY_VLLM_KEY", KEY)
        engine = EndpointEngine(EndpointOptions(base_url=d.url, api_key_env="MY_VLLM_KEY"))
        with engine.serve(_group(tiny), tmp_path) as lms:
            assert lms["base"].header == {"Authorization": f"Bearer {KEY}"}
        assert d.seen_auth[-1] == f"Bearer {KEY}"

        monkeypatch.setenv("MY_VLLM_KEY", "wrong-key-456")
        with pytest.raises(InputError, match="refused the API key") as err:
            engine.list_models(engine._api_key())
        assert "wrong-key-456" not in str(err.value)
    finally:
        d.server.shutdown()


def test_unset_key_variable_is_input_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    engine = EndpointEngine(EndpointOptions(base_url="http://127.0.0.1:1", api_key_env="NOT_SET_KEY"))
    with pytest.raises(InputError, match="NOT_SET_KEY is not set"):
        engine._api_key()


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1",
                                 "http://h:8000/v1/", "http://h:8000/v1/completions"])
def test_base_url_normalised(url):
    assert v1_root(url) == "http://h:8000/v1"


@pytest.mark.heavy
@pytest.mark.parametrize("num_concurrent", [1, 2], ids=["one-at-a-time", "concurrent"])
def test_an_engine_slower_than_the_timeout_names_the_settings_to_change(tiny, tmp_path, num_concurrent):
    """Every try of a request timed out: lm-eval raises a bare TimeoutError (aiohttp's
    on the concurrent path, requests' on the other); the user gets the keys to change."""
    from gate.errors import EngineError

    def too_slow(payload: dict) -> dict:
        time.sleep(2.5)
        return {"choices": []}

    slow = _Deployment(["base", "cand-a"], complete=too_slow)
    engine = EndpointEngine(EndpointOptions(base_url=slow.url, request_timeout_s=1, max_retries=1,
                                            num_concurrent=num_concurrent, batch_size=1))
    from lm_eval.api.instance import Instance

    try:
        with pytest.raises(EngineError) as err, engine.serve(_group(tiny, "cand-a"), tmp_path) as lms:
            lms["cand-a"].loglikelihood([Instance("loglikelihood", {}, ("question", " yes"), 0)])
    finally:
        slow.server.shutdown()
    problem = err.value.problems[0]
    assert problem.key == "engine.endpoint.request_timeout_s"
    assert "'cand-a' answered no request within 1 s, 1 tries in a row" in problem.message
    assert "engine.endpoint.batch_size" in (problem.fix or "")
