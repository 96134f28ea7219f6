"""An opt-in transport for the blocking client: HTTP/1.1 on the standard library's ``http.client``.

httpx's default transport (httpcore over the pure-Python h11 state machine) costs ~0.5 ms
of CPU per request; ``http.client`` parses a response in a fraction of that. A
participant makes three requests a round (current round, weights, upload), so in a
cross-device federation of thousands of participants in one process this is most of
the SDK's CPU besides training (``bench/RESULTS.md``, "sdk-overhead"). Nothing on the
wire changes: httpx still builds every request (URL, headers, body) and every response
goes back through httpx (decoding, ``raise_for_status``, the SDK's retries), and the
errors are httpx's own, so :class:`~participant_sdk.Client` retries and reports them as
before.

Only plain ``http://`` goes through ``http.client``; ``https://`` (certificates, the
trust store) and a streamed request body are handed to httpx's own transport. Idle
connections are kept per host and re-used; one the server closed meanwhile (uvicorn
drops idle keep-alive connections after 5 s) is noticed before re-use and replaced.
With a proxy in the environment (``HTTP_PROXY``, ``ALL_PROXY``...)
:func:`keep_alive_transport` gives ``None``: httpx's transports, which honour it.

It is opt-in, not the client's default: httpx's own transport is the well-kept path for
real deployments (which use https anyway); this one pays off where one process holds
hundreds of simulated participants on loopback (``fedrec simulate``, the benches).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import urllib.request
from collections.abc import Mapping

import httpx

__all__ = ["KeepAliveTransport", "keep_alive_transport"]

# idle connections kept per (host, port): a client is normally used by one thread
MAX_IDLE_PER_HOST = 8


def keep_alive_transport() -> httpx.BaseTransport | None:
    """This transport, or ``None`` (httpx's own, which routes through the environment's
    proxies) when a proxy is configured there: ``Client(url, token,
    transport=keep_alive_transport())``."""
    if urllib.request.getproxies():
        return None
    return KeepAliveTransport()


def _seconds(timeouts: Mapping[str, float | None], phase: str) -> float | None:
    value = timeouts.get(phase)
    return None if value is None else float(value)


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can no longer carry a request (the server closed it,
    or sent bytes nobody asked for): then its socket is readable."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class KeepAliveTransport(httpx.BaseTransport):
    """An httpx transport sending plain-HTTP requests with ``http.client``, keep-alive.

    Parameters
    ----------
    fallback:
        The transport for everything else (``https://``, streamed request bodies);
        httpx's default ``HTTPTransport()`` when not given.
    """

    def __init__(self, fallback: httpx.BaseTransport | None = None) -> None:
        self._fallback = fallback if fallback is not None else httpx.HTTPTransport()
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http" or "transfer-encoding" in request.headers:
            return self._fallback.handle_request(request)
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout", {})
        address = (request.url.host, request.url.port or 80)
        connection = self._idle_connection(address) or self._connect(
            request, address, _seconds(timeouts, "connect")
        )
        try:
            response, body = self._exchange(request, connection, timeouts)
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._release(address, connection)
        return httpx.Response(
            response.status,
            headers=response.getheaders(),
            stream=httpx.ByteStream(body),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": response.reason.encode("latin-1", "replace"),
            },
        )

    # --- one request on one connection ----------------------------------------------------

    def _exchange(
        self,
        request: httpx.Request,
        connection: http.client.HTTPConnection,
        timeouts: Mapping[str, float | None],
    ) -> tuple[http.client.HTTPResponse, bytes]:
        sock = connection.sock
        assert sock is not None  # nosec B101 # connected by _connect or kept connected
        body = request.read()
        try:
            sock.settimeout(_seconds(timeouts, "write"))
            connection.putrequest(
                request.method,
                request.url.raw_path.decode("ascii"),
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in request.headers.raw:
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
            connection.endheaders(body or None)
        except TimeoutError as err:
            raise httpx.WriteTimeout(str(err) or "timed out writing", request=request) from err
        except OSError as err:
            raise httpx.WriteError(str(err), request=request) from err
        try:
            sock.settimeout(_seconds(timeouts, "read"))
            response = connection.getresponse()
            # read whole: the next request may reuse the connection
            body = response.read()
        except TimeoutError as err:
            raise httpx.ReadTimeout(str(err) or "timed out reading", request=request) from err
        except http.client.RemoteDisconnected as err:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from err
        except http.client.HTTPException as err:
            raise httpx.RemoteProtocolError(repr(err), request=request) from err
        except OSError as err:
            raise httpx.ReadError(str(err), request=request) from err
        return response, body

    # --- the pool -----------------------------------------------------------------------------

    def _connect(
        self, request: httpx.Request, address: tuple[str, int], timeout: float | None
    ) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(*address, timeout=timeout)
        try:
            connection.connect()
        except TimeoutError as err:
            connection.close()
            raise httpx.ConnectTimeout(str(err) or "timed out connecting", request=request) from err
        except OSError as err:
            connection.close()
            raise httpx.ConnectError(str(err), request=request) from err
        assert connection.sock is not None  # nosec B101 # connect() set it or raised
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _idle_connection(self, address: tuple[str, int]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(address)
                if not idle:
                    return None
                connection = idle.pop()
            if not _closed_by_peer(connection):
                return connection
            connection.close()

    def _release(self, address: tuple[str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if self._closed or len(idle) >= MAX_IDLE_PER_HOST:
                connection.close()
            else:
                idle.append(connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()
        self._fallback.close()
