"""Overload shedding (api/overload.py): past FEDREC_MAX_REQUESTS_IN_FLIGHT requests or
FEDREC_MAX_LONG_POLLS long-polls in progress, a fast 503 ``overloaded`` problem+json with
``Retry-After``; health, readiness and metrics never shed.

Requests are held in progress by a body that is not sent until the test says so (or by an
app that waits on an event): no sleeps, no timing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator.api.overload import Shedding, is_long_poll
from coordinator.app import create_app
from coordinator.config import Settings
from tests.factories import assert_problem, federation_body

LONG_POLL = "/v1/federations/f/rounds/current?after=1&wait=30"
BOUND = 10.0  # seconds any single await here may take before the test fails (not a timing)


class OverloadShedding(Shedding):
    """:class:`Shedding` as an ASGI middleware of its own, in front of ``app`` (the front door
    runs the same calls among its other stages)."""

    def __init__(self, app: ASGIApp, **bounds: Any) -> None:
        super().__init__(**bounds)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind, admitted = self.enter(scope)
        if not admitted:
            assert kind is not None
            await self.refuse(scope, receive, send, kind)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave(kind)


class _Held:
    """An ASGI app that answers 200 once ``release`` is set; ``entered`` counts arrivals."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        self.entered += 1
        self.arrived.set()
        if scope["path"] not in ("/healthz", "/readyz", "/metrics", "/quick"):
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class _UpperBound(random.Random):
    """Draws the largest allowed value, so the tests see the spread's upper end."""

    def randint(self, a: int, b: int) -> int:
        assert a <= b
        return b


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://coordinator")


async def _hold(client: httpx.AsyncClient, held: _Held, path: str) -> asyncio.Task[httpx.Response]:
    """Start a request that stays in progress until ``held.release`` is set."""
    held.arrived.clear()
    task = asyncio.create_task(client.get(path))
    await asyncio.wait_for(held.arrived.wait(), BOUND)
    return task


async def test_past_the_bound_a_request_gets_503_overloaded_with_retry_after() -> None:
    held = _Held()
    shedding = OverloadShedding(
        held, max_in_flight=2, max_long_polls=0, retry_after_seconds=3, retry_after_max_seconds=9
    )
    async with _client(shedding) as client:
        first = await _hold(client, held, "/a")
        second = await _hold(client, held, "/b")
        refused = await asyncio.wait_for(client.get("/c"), BOUND)
        body = assert_problem(refused, 503, "overloaded")
        assert body["instance"] == "/c"
        assert "FEDREC_MAX_REQUESTS_IN_FLIGHT" in body["detail"]
        assert 3 <= int(refused.headers["Retry-After"]) <= 9
        assert held.entered == 2  # the refused request never reached the app
        held.release.set()
        assert (await asyncio.wait_for(first, BOUND)).status_code == 200
        assert (await asyncio.wait_for(second, BOUND)).status_code == 200
        # the bound counts requests in progress, not requests ever made
        assert (await asyncio.wait_for(client.get("/d"), BOUND)).status_code == 200
    assert shedding.in_flight == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_health_readiness_and_metrics_are_never_shed(path: str) -> None:
    held = _Held()
    shedding = OverloadShedding(held, max_in_flight=1, max_long_polls=1)
    async with _client(shedding) as client:
        busy = await _hold(client, held, "/a")
        poll = await _hold(client, held, LONG_POLL)
        assert (await asyncio.wait_for(client.get("/b"), BOUND)).status_code == 503
        assert (await asyncio.wait_for(client.get(LONG_POLL), BOUND)).status_code == 503
        answer = await asyncio.wait_for(client.get(path), BOUND)
        assert answer.status_code == 200
        held.release.set()
        await asyncio.wait_for(asyncio.gather(busy, poll), BOUND)


async def test_long_polls_have_their_own_bound() -> None:
    held = _Held()
    shedding = OverloadShedding(held, max_in_flight=1, max_long_polls=2)
    async with _client(shedding) as client:
        polls = [await _hold(client, held, LONG_POLL) for _ in range(2)]
        # held long-polls do not take the places of ordinary requests...
        assert shedding.in_flight == 0
        ordinary = await _hold(client, held, "/a")
        # ...and past their own bound a long-poll is refused, naming the setting
        body = assert_problem(
            await asyncio.wait_for(client.get(LONG_POLL), BOUND), 503, "overloaded"
        )
        assert "FEDREC_MAX_LONG_POLLS" in body["detail"]
        held.release.set()
        await asyncio.wait_for(asyncio.gather(*polls, ordinary), BOUND)
    assert shedding.long_polls == 0


async def test_a_bound_of_zero_sheds_nothing() -> None:
    held = _Held()
    shedding = OverloadShedding(held, max_in_flight=0, max_long_polls=0)
    async with _client(shedding) as client:
        tasks = [await _hold(client, held, "/a") for _ in range(5)]
        tasks += [await _hold(client, held, LONG_POLL) for _ in range(5)]
        assert held.entered == 10
        held.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
    assert {answer.status_code for answer in answers} == {200}


def test_retry_after_spreads_with_the_refusals_up_to_its_maximum() -> None:
    now = [100.0]
    shedding = OverloadShedding(
        _Held(),
        max_in_flight=1,
        max_long_polls=0,
        retry_after_seconds=2,
        retry_after_max_seconds=20,
        clock=lambda: now[0],
        rng=_UpperBound(),
    )
    for _ in range(5):
        shedding._served.add()
    # nothing refused yet: the shortest wait
    assert shedding.retry_after() == 2
    for _ in range(10):
        shedding._shed.add()
    # 10 refused against 5 answered in the same window: spread over 2 x 10 / 5 = 4 s more
    assert shedding.retry_after() == 6
    for _ in range(100):
        shedding._shed.add()
    assert shedding.retry_after() == 20  # capped
    now[0] += 5  # both windows passed: no recent refusals
    assert shedding.retry_after() == 2


def test_retry_after_is_drawn_between_its_bounds() -> None:
    shedding = OverloadShedding(
        _Held(),
        max_in_flight=1,
        max_long_polls=0,
        retry_after_seconds=1,
        retry_after_max_seconds=30,
        rng=random.Random(7),
    )
    for _ in range(200):
        shedding._shed.add()
    drawn = {shedding.retry_after() for _ in range(200)}
    assert min(drawn) >= 1
    assert max(drawn) <= 30
    assert len(drawn) > 10  # spread out, not one value every caller retries at


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/v1/federations/f/rounds/current?after=3&wait=300&in_cohort=true", True),
        ("GET", "/v1/federations/f/rounds/current?wait=60&after=0", True),
        ("GET", "/v1/federations/f/rounds/current", False),
        ("GET", "/v1/federations/f/rounds/current/weights?after=3&wait=30&in_cohort=true", True),
        ("GET", "/v1/federations/f/rounds/current/weights", False),
        ("GET", "/v1/federations/f/rounds/current/weights?after=3&wait=0", False),
        ("GET", "/v1/federations/f/rounds/current?after=3", False),
        ("GET", "/v1/federations/f/rounds/current?after=3&wait=0", False),
        ("GET", "/v1/federations/f/rounds/current?after=3&wait=soon", False),
        ("GET", "/v1/federations/f/rounds?after=3&wait=60", False),
        ("POST", "/v1/federations/f/rounds/current?after=3&wait=60", False),
    ],
)
def test_what_counts_as_a_long_poll(method: str, target: str, expected: bool) -> None:
    path, _, query = target.partition("?")
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode()}
    assert is_long_poll(scope) is expected


async def test_the_coordinator_sheds_with_its_settings(settings: Settings) -> None:
    """The real app: one request in progress (its body not yet sent) fills a bound of 1;
    the next is refused before it is authenticated, and /healthz and /readyz still answer."""
    app = create_app(
        settings.model_copy(
            update={
                "max_requests_in_flight": 1,
                "overload_retry_after_seconds": 4,
                "overload_retry_after_max_seconds": 8,
            }
        ),
        run_timer=False,
    )
    admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}  # type: ignore[union-attr]
    body = httpx.Response(200, json=federation_body()).content
    pulled, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:10]
        pulled.set()
        await release.wait()
        yield body[10:]

    def request(call: Callable[[], Awaitable[httpx.Response]]) -> Awaitable[httpx.Response]:
        return asyncio.wait_for(call(), BOUND)

    async with _client(app) as client:
        creating = asyncio.create_task(
            client.post(
                "/v1/federations",
                content=slow_body(),
                headers={**admin, "Content-Type": "application/json"},
            )
        )
        await asyncio.wait_for(pulled.wait(), BOUND)
        refused = await request(lambda: client.get("/v1/federations", headers=admin))
        assert_problem(refused, 503, "overloaded")
        assert 4 <= int(refused.headers["Retry-After"]) <= 8
        # refused before authentication: a wrong token gets the same 503, not a 401
        wrong = await request(
            lambda: client.get("/v1/federations", headers={"Authorization": "Bearer nope"})
        )
        assert wrong.status_code == 503
        assert (await request(lambda: client.get("/healthz"))).status_code == 200
        assert (await request(lambda: client.get("/readyz"))).status_code == 200
        release.set()
        created = await asyncio.wait_for(creating, BOUND)
        assert created.status_code == 201, created.text
        # the bound is free again
        assert (await request(lambda: client.get("/v1/federations", headers=admin))).is_success
    app.state.context.sessions.kw["bind"].dispose()
