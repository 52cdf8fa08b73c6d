"""The HTTP judge transport's retries, against a scripted OpenAI-compatible server on 127.0.0.1.

Each fault is injected at the HTTP level (a 429 with ``Retry-After``, a 503, a reply slower than the timeout, a
closed port, a server that comes up late), so what is tested is the real ``openai`` client's retry loop and the
transport's own loop above it. The server reads the ``x-stainless-retry-count`` header the SDK sends, so a test can
tell the SDK's retries (count 1, 2, ...) from the transport's (a fresh SDK call: count 0 again).
"""

import json
import logging
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlrf_nb.llm_judge import JudgeTransportError, OpenAITransport

pytestmark = pytest.mark.timeout(60)
HI = [{"role": "user", "content": "hi"}]


class ScriptedServer:
    """``POST /v1/chat/completions`` answered by ``script`` in order, then "ok" forever. A step is an HTTP status
    with headers (``(429, {"Retry-After": "1"})``), a float (sleep that many seconds, then answer) or a string
    (answer with that text). ``seen`` lists ``(time, SDK retry count)`` per request."""

    def __init__(self, script=(), port: int = 0):
        owner, self.script, self.seen = self, list(script), []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.seen.append((time.monotonic(), int(self.headers.get("x-stainless-retry-count", -1))))
                step = owner.script.pop(0) if owner.script else "ok"
                if isinstance(step, tuple):
                    status, headers, data = *step, b'{"error": {"message": "scripted fault"}}'
                else:
                    if isinstance(step, float):
                        time.sleep(step)
                        step = "late"
                    status, headers = 200, {}
                    data = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": step}}]}).encode()
                try:
                    self.send_response(status)
                    for k, v in {**headers, "Content-Type": "application/json",
                                 "Content-Length": str(len(data))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timed out) before the reply
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def retry_counts(self) -> list[int]:
        return [count for _, count in self.seen]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script=(), port: int = 0) -> ScriptedServer:
        servers.append(ScriptedServer(script, port))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_429_is_retried_by_the_sdk_after_the_servers_retry_after(serve):
    server = serve([(429, {"Retry-After": "1"})])
    sleeps = []
    t = OpenAITransport(server.base_url, "m", max_retries=0, sleep=sleeps.append)  # no retries of ours at all
    assert t.complete(HI) == "ok"
    assert server.retry_counts == [0, 1] and sleeps == [] and t.retries == 1
    gap = server.seen[1][0] - server.seen[0][0]
    assert 1.0 <= gap < 3.0  # the server's Retry-After, not the SDK's 0.5 s backoff


def test_5xx_then_success_is_retried_by_the_sdk(serve):
    server = serve([(503, {}), (500, {})])
    sleeps = []
    t = OpenAITransport(server.base_url, "m", max_retries=0, sleep=sleeps.append)
    assert t.complete(HI) == "ok"
    assert server.retry_counts == [0, 1, 2] and sleeps == [] and t.retries == 2


def test_timeout_is_retried_by_the_sdk(serve):
    server = serve([1.0])  # the first reply comes after 1 s; the transport waits 0.3 s
    t = OpenAITransport(server.base_url, "m", max_retries=0, timeout=0.3, sleep=[].append)
    assert t.complete(HI) == "ok"
    assert server.retry_counts == [0, 1] and t.retries == 1


def test_a_long_outage_is_waited_out_by_our_loop_after_the_sdks_retries(serve, caplog):
    """A server that comes up only after the SDK's retries are spent (a restart): our backoff bridges the gap."""
    port, sleeps = _closed_port(), []

    def restart_during_our_wait(seconds):
        sleeps.append(seconds)
        serve(port=port)  # up again while we wait; the SDK alone had already given up

    t = OpenAITransport(f"http://127.0.0.1:{port}/v1", "m", max_retries=3, sleep=restart_during_our_wait)
    with caplog.at_level(logging.WARNING, logger="rlrf_nb.llm_judge"):
        assert t.complete(HI) == "ok"
    assert sleeps == [1.0] and t.retries == 1
    assert f"judge request to {t.shown_url} failed after the openai SDK's 2 retries" in caplog.text
    assert "answered again after 1 retries of ours" in caplog.text


def test_server_down_fails_after_the_sdks_and_our_retries_naming_the_url(monkeypatch):
    monkeypatch.setenv("RLRF_TRANSPORT_KEY", "sk-transport-test-0123456789")
    url, sleeps = f"http://127.0.0.1:{_closed_port()}/v1", []
    t = OpenAITransport(url, "m", api_key_env="RLRF_TRANSPORT_KEY", max_retries=1, backoff=0.5, sleep=sleeps.append)
    t0 = time.monotonic()
    with pytest.raises(JudgeTransportError, match="did not answer after 2 attempt") as err:
        t.complete(HI)
    assert url in str(err.value) and "APIConnectionError" in str(err.value) and "sk-transport" not in str(err.value)
    assert "feedback.max_retries=1" in str(err.value) and "retried 2 times by the openai SDK" in str(err.value)
    assert sleeps == [0.5] and time.monotonic() - t0 >= 2 * 0.75 * (0.5 + 1.0)  # the SDK's backoff, each attempt


def test_a_retry_after_longer_than_the_sdk_accepts_falls_to_our_loop(serve):
    """The SDK does not retry a Retry-After over 2 minutes; our loop retries it after its own (capped) backoff."""
    server = serve([(429, {"Retry-After": "600"})])
    sleeps = []
    t = OpenAITransport(server.base_url, "m", max_retries=1, sleep=sleeps.append)
    assert t.complete(HI) == "ok"
    assert server.retry_counts == [0, 0] and sleeps == [1.0]  # a fresh SDK call after our wait


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_client_error_is_retried_by_neither(serve, status):
    server = serve([(status, {})])
    sleeps = []
    t = OpenAITransport(server.base_url, "m", max_retries=3, sleep=sleeps.append)
    with pytest.raises(JudgeTransportError, match="not retried") as err:
        t.complete(HI)
    assert server.base_url in str(err.value) and server.retry_counts == [0] and sleeps == []


def test_one_client_per_transport_and_the_key_stays_out_of_a_pickle(serve, monkeypatch):
    secret = "sk-transport-DO-NOT-LEAK-42"
    monkeypatch.setenv("RLRF_TRANSPORT_KEY", secret)
    server = serve(["not JSON at all {", "second"])
    t = OpenAITransport(server.base_url, "m", api_key_env="RLRF_TRANSPORT_KEY")
    assert t.complete(HI) == "not JSON at all {"  # the raw text, as sent: the judge's parser decides
    client = t._client
    assert t.complete(HI) == "second" and t._client is client and t.retries == 0
    blob = pickle.dumps(t)
    assert secret.encode() not in blob and secret not in repr(vars(t))
    copy = pickle.loads(blob)
    assert copy._client is None and copy.complete(HI) == "ok"  # the copy builds its own client
