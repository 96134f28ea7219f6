"""Overload shedding: past a bound of requests in progress, a fast 503 with Retry-After.

Without it, a crowd arriving faster than one process answers (10,000 devices' first polls
at once, on a starved machine) queues inside the process: every request waits for a
worker thread to authenticate it, the queue grows past the clients' timeouts, and the
process then spends its CPU answering clients that have gone (overload collapse: in
``bench.load`` at 10,000 participants the coordinator answered 73 of 10,000 first polls in
600 s). Refusing the excess at once costs a fraction of answering it, and the refused
come back later, spread out.

Two bounds per process, checked before a request is authenticated or its body read:

- ``max_in_flight``: requests in progress that are not long-polls (the ones that use
  worker threads and the database);
- ``max_long_polls``: long-polls (``GET .../rounds/current`` or ``…/current/weights``
  with ``after`` and a positive ``wait``) in progress; each holds a connection and a
  little memory.

Past a bound a request gets 503 ``overloaded`` (problem+json) with ``Retry-After``: a
random whole number of seconds from ``retry_after_seconds`` up to the time this process
needs, at its recent pace, to answer the requests it recently refused (at most
``retry_after_max_seconds``), so the refused do not all come back in the same second.
``/healthz``, ``/readyz`` and ``/metrics`` are never shed. A bound of 0 disables it.

Why not uvicorn's ``--limit-concurrency``: it counts connections, held long-polls and
idle keep-alive connections included (10,000 waiting participants would shut everyone
out), and answers a plain-text 503 without ``Retry-After``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from coordinator.api import telemetry
from coordinator.api.problems import problem_response

__all__ = [
    "LONG_POLL",
    "NEVER_SHED_PATHS",
    "REQUEST",
    "Shedding",
    "is_long_poll",
]

NEVER_SHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# the two bounds' kinds (also the label of fedrec_requests_shed_total)
LONG_POLL = "long-poll"
REQUEST = "request"
# the round alone, or with its base weights (``…/rounds/current/weights``): same long-poll
_LONG_POLL_SUFFIXES = ("/rounds/current", "/rounds/current/weights")


def is_long_poll(scope: Scope) -> bool:
    """A ``GET .../rounds/current?after=n&wait=s`` (or ``…/current/weights?…``) with
    ``s > 0``: it waits, cheaply, for the next round (the route validates the values; here
    only their presence)."""
    if scope.get("method") != "GET" or not scope["path"].endswith(_LONG_POLL_SUFFIXES):
        return False
    query = scope.get("query_string") or b""
    if b"wait=" not in query or b"after=" not in query:
        return False
    params = dict(parse_qsl(query.decode("latin-1")))
    try:
        return float(params.get("wait", "0")) > 0 and "after" in params
    except ValueError:
        return False


class Pace:
    """Events per second over the last one to two seconds (two one-second buckets)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._second = math.floor(clock())
        self._current = 0
        self._previous = 0

    def _roll(self) -> None:
        second = math.floor(self._clock())
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0
            self._current = 0
            self._second = second

    def add(self) -> None:
        self._roll()
        self._current += 1

    def recent(self) -> int:
        """Events in the previous second and this one so far."""
        self._roll()
        return self._previous + self._current


class Shedding:
    """The bounds and counters of one process. The front door (api/front_door.py) asks
    :meth:`enter` before anything else is done for a request, and :meth:`leave` after it."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        max_long_polls: int,
        retry_after_seconds: int = 1,
        retry_after_max_seconds: int = 60,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_long_polls = max_long_polls
        self.retry_after_seconds = retry_after_seconds
        self.retry_after_max_seconds = max(retry_after_max_seconds, retry_after_seconds)
        self._rng = rng or random.SystemRandom()
        self.in_flight = 0
        self.long_polls = 0
        self._served = Pace(clock)
        self._shed = Pace(clock)

    def enter(self, scope: Scope) -> tuple[str | None, bool]:
        """The place an HTTP request takes (LONG_POLL, REQUEST, or None: a path never
        shed), and whether it got it; one it got is given back by :meth:`leave`."""
        if scope["path"] in NEVER_SHED_PATHS:
            return None, True
        # one event loop per process: these counters need no lock
        if is_long_poll(scope):
            if self.max_long_polls and self.long_polls >= self.max_long_polls:
                return LONG_POLL, False
            self.long_polls += 1
            return LONG_POLL, True
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            return REQUEST, False
        self.in_flight += 1
        return REQUEST, True

    def leave(self, kind: str | None) -> None:
        if kind == LONG_POLL:
            self.long_polls -= 1
        elif kind == REQUEST:
            self.in_flight -= 1
            self._served.add()

    def retry_after(self) -> int:
        """Whole seconds a refused caller waits: at least ``retry_after_seconds``, spread
        over the time this process needs to answer the requests it recently refused."""
        refused = self._shed.recent()
        answered = max(self._served.recent(), 1)
        spread = math.ceil(2 * refused / answered)  # both counted over the same ~2 s
        longest = min(self.retry_after_max_seconds, self.retry_after_seconds + spread)
        return self._rng.randint(self.retry_after_seconds, longest)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        """Answer 503 ``overloaded`` to a request :meth:`enter` did not let in."""
        self._shed.add()
        telemetry.REQUESTS_SHED.labels(kind).inc()
        wait = self.retry_after()
        if kind == LONG_POLL:
            detail = (
                f"this coordinator process already holds {self.max_long_polls} long-polls "
                f"(FEDREC_MAX_LONG_POLLS); retry in {wait} s"
            )
        else:
            detail = (
                f"this coordinator process is answering {self.max_in_flight} requests "
                f"already (FEDREC_MAX_REQUESTS_IN_FLIGHT); retry in {wait} s"
            )
        response = problem_response(
            None,
            status=503,
            slug="overloaded",
            title="Overloaded",
            detail=detail,
            instance=scope.get("path"),
            headers={"Retry-After": str(wait)},
        )
        await response(scope, receive, send)
