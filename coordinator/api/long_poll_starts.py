"""A bound on the worker-thread work of starting long-polls: back-pressure for a crowd.

``FEDREC_MAX_LONG_POLLS`` bounds the long-polls a process holds (each is cheap: a
connection, a little memory) and ``FEDREC_MAX_REQUESTS_IN_FLIGHT`` the other requests;
neither bounded what a long-poll costs before it is held: authenticating a token this
process has not seen in the last seconds, on a worker thread (a keyed hash and a database
read, ~5 ms). The rest of a poll's reads are shared (one read of the current round per
round change for every poll, one of each round's cohort). A crowd of first requests (10,000
devices joining; in ``bench.load`` also their renewals every 300 s) then queued for the
40 worker threads, unbounded, and answers came after the clients' read timeouts.

:class:`LongPollStarts` runs that work for at most ``limit`` long-polls at once (waiting
for a thread or on one); past it a long-poll is answered at once with 503 ``overloaded``
(problem+json, ``Retry-After``), which costs a fraction of authenticating it: the SDK
waits that long (its retries, then ``run()``'s) and asks again. ``Retry-After`` is drawn
at random between ``retry_after_seconds`` and a bound that grows with the refusals of the
last two seconds per slot, so the refused come back spread out. 0 disables the bound.
Other requests are not concerned (``FEDREC_MAX_REQUESTS_IN_FLIGHT`` covers them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from coordinator.api import telemetry
from coordinator.api.overload import Pace, is_long_poll
from coordinator.api.problems import problem_response

__all__ = ["LongPollStarts"]

T = TypeVar("T")


class LongPollStarts:
    """Long-polls whose start is on (or waiting for) a worker thread, at most ``limit``."""

    def __init__(
        self,
        limit: int,
        *,
        retry_after_seconds: int = 1,
        retry_after_max_seconds: int = 60,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.retry_after_max_seconds = max(retry_after_max_seconds, retry_after_seconds)
        self._rng = rng or random.SystemRandom()
        self.starting = 0  # one event loop per process: no lock
        self.refused = 0  # since the process started (tests, the log)
        self._refusals = Pace(clock)  # over the last one to two seconds

    async def run(
        self, scope: Scope, receive: Receive, send: Send, work: Callable[[str], T], token: str
    ) -> T | None:
        """``work(token)`` on a worker thread, within the bound if the request is a
        long-poll; None when refused (the 503 is sent)."""
        if not is_long_poll(scope):
            return await run_in_threadpool(work, token)
        if self.limit and self.starting >= self.limit:
            await self._refuse(scope, receive, send)
            return None
        self.starting += 1
        try:
            return await run_in_threadpool(work, token)
        finally:
            self.starting -= 1

    def retry_after(self) -> int:
        """Whole seconds a refused poll waits: at least ``retry_after_seconds``, spread
        wider the more polls were refused lately per slot of the bound."""
        spread = math.ceil(self._refusals.recent() / max(self.limit, 1))
        longest = min(self.retry_after_max_seconds, self.retry_after_seconds + spread)
        return self._rng.randint(self.retry_after_seconds, longest)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._refusals.add()
        self.refused += 1
        telemetry.REQUESTS_SHED.labels("long-poll-start").inc()
        wait = self.retry_after()
        response = problem_response(
            None,
            status=503,
            slug="overloaded",
            title="Overloaded",
            detail=f"this coordinator process is already starting {self.limit} long-polls "
            f"(authenticating their tokens; FEDREC_MAX_LONG_POLL_STARTS); nothing was "
            f"lost: ask again in {wait} s (Retry-After)",
            instance=scope.get("path"),
            headers={"Retry-After": str(wait)},
        )
        await response(scope, receive, send)
