"""The opt-in keep-alive transport (``participant_sdk._transport``) on real sockets.

A small HTTP/1.1 server on 127.0.0.1 records what arrives. The transport must put the
same request on the wire as httpx's own (method, path, headers, body bytes), re-use one
connection, replace one the server closed, and fail with httpx's errors, so the
client's retries and error types are unchanged.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from participant_sdk import APIConnectionError, APITimeoutError, Client
from participant_sdk._transport import KeepAliveTransport, keep_alive_transport

TOKEN = "fpt_test-token"  # nosec B105 # a fake token of a loopback test server


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int


@dataclass
class Recorder:
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    # what the next responses do: "json", "gzip", "chunked", "close", "slow"
    mode: str = "json"
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(method: str, path: str) -> dict[str, object]:
    """A round for ``GET .../rounds/current``, a receipt for an upload, else an echo."""
    if path.endswith("/rounds/current"):
        return {"number": 3, "state": "open", "base_version": 2}
    if method in ("POST", "PUT"):
        return {
            "update_id": "u1",
            "round": 3,
            "size": 1,
            "num_examples": 9,
            "sha256": "0" * 64,
            "received_at": "2026-12-06T00:00:00Z",
        }
    return {"ok": True, "path": path}


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with recorder.lock:
                recorder.connections += 1
                self.connection_number = recorder.connections

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.requests.append(
                Seen(
                    self.command,
                    self.path,
                    list(self.headers.items()),
                    body,
                    self.connection_number,
                )
            )
            payload = json.dumps(_answer(self.command, self.path)).encode()
            if recorder.mode == "slow":
                time.sleep(1.0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if recorder.mode == "gzip":
                payload = gzip.compress(payload)
                self.send_header("Content-Encoding", "gzip")
            if recorder.mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                half = len(payload) // 2
                for part in (payload[:half], payload[half:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if recorder.mode == "close":
                # an idle keep-alive connection the server drops without saying so
                self.close_connection = True

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's transport is ours only without a proxy in the environment."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the timeout test's client hangs up before the slow answer: expected


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    httpd = _QuietServer(("127.0.0.1", 0), _handler(recorder))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", recorder
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _upload(client: Client) -> None:
    delta: dict[str, npt.NDArray[np.float32]] = {
        "item_factors": (np.arange(12, dtype=np.float32).reshape(3, 4) / 7).astype(np.float32),
        "item_bias": np.array([0.5, -1.0, 2.0], dtype=np.float32),
    }
    client.updates.submit(
        "fed/1", 3, delta, base_version=2, num_examples=9, rows=np.array([0, 4, 9])
    )


def test_puts_the_same_request_on_the_wire_as_httpx(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    recorder.mode = "json"
    with Client(url, TOKEN, transport=httpx.HTTPTransport(), max_retries=0) as theirs:
        _upload(theirs)
        theirs.rounds.current("fed/1")
    with Client(url, TOKEN, max_retries=0, transport=keep_alive_transport()) as ours:
        assert isinstance(ours._http._transport, KeepAliveTransport)
        _upload(ours)
        ours.rounds.current("fed/1")
    httpx_upload, httpx_get, our_upload, our_get = recorder.requests

    def comparable(seen: Seen) -> tuple[str, str, list[tuple[str, str]], bytes]:
        # the Idempotency-Key is a fresh uuid per logical request
        headers = [(k.lower(), v) for k, v in seen.headers if k.lower() != "idempotency-key"]
        return seen.method, seen.path, headers, seen.body

    assert comparable(our_upload) == comparable(httpx_upload)
    assert our_upload.method == "PUT"
    assert our_upload.body
    assert comparable(our_get) == comparable(httpx_get)


def test_reuses_one_connection(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    with Client(url, TOKEN, max_retries=0, transport=KeepAliveTransport()) as client:
        for _ in range(5):
            client.rounds.current("f")
    assert len(recorder.requests) == 5
    assert {seen.connection for seen in recorder.requests} == {1}


def test_replaces_a_connection_the_server_closed(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    recorder.mode = "close"
    with Client(url, TOKEN, max_retries=0, transport=KeepAliveTransport()) as client:
        client.rounds.current("f")
        time.sleep(0.2)  # the server's FIN arrives while the connection is idle
        client.rounds.current("f")
    assert [seen.connection for seen in recorder.requests] == [1, 2]


@pytest.mark.parametrize("mode", ["gzip", "chunked"])
def test_decodes_gzip_and_chunked_bodies(server: tuple[str, Recorder], mode: str) -> None:
    url, recorder = server
    recorder.mode = mode
    transport = KeepAliveTransport()
    with httpx.Client(transport=transport) as http:
        first = http.get(f"{url}/a")
        second = http.get(f"{url}/b")
    assert first.json() == {"ok": True, "path": "/a"}
    assert second.json() == {"ok": True, "path": "/b"}
    assert {seen.connection for seen in recorder.requests} == {1}


def test_a_read_timeout_is_httpx_s(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    recorder.mode = "slow"
    with httpx.Client(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{url}/slow", timeout=httpx.Timeout(5.0, read=0.2))
    with Client(
        url,
        TOKEN,
        max_retries=0,
        timeout=httpx.Timeout(5.0, read=0.2),
        transport=KeepAliveTransport(),
    ) as client:
        with pytest.raises(APITimeoutError):
            client.rounds.current("f")


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with httpx.Client(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            http.get(f"http://127.0.0.1:{port}/")
    with Client(
        f"http://127.0.0.1:{port}", TOKEN, max_retries=0, transport=KeepAliveTransport()
    ) as client:
        with pytest.raises(APIConnectionError):
            client.rounds.current("f")


def test_https_goes_to_httpx_s_transport() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"via": "fallback"})

    transport = KeepAliveTransport(fallback=httpx.MockTransport(answer))
    with httpx.Client(transport=transport) as http:
        assert http.get("https://coordinator.invalid/x").json() == {"via": "fallback"}
    assert seen == ["https://coordinator.invalid/x"]


def test_a_proxy_in_the_environment_keeps_httpx_s_transports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(keep_alive_transport(), KeepAliveTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert keep_alive_transport() is None


def test_the_client_keeps_httpx_s_transport_unless_asked() -> None:
    with Client("http://127.0.0.1:1", TOKEN) as client:
        assert not isinstance(client._http._transport, KeepAliveTransport)
