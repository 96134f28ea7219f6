"""A waiting participant never gives up on a long-poll that got no answer, and a poll that
sits out rounds (``in_cohort``) asks for the coordinator's longer maximum, jittered.

The mechanism behind bench.load's stalled round at 10,000 participants: a loaded
coordinator answered some long-polls after the client's read timeout; a participant that
stopped on that timeout, and was drawn into the next round, left that round waiting for
its deadline (99 of 100 uploads).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from participant_sdk import AsyncClient, Client
from participant_sdk._constants import WAIT_JITTER
from tests.conftest import ADMIN_TOKEN
from tests.factories import create_federation, enrol, put_update, update_bytes, wait_round_closed
from tests.sdk.fake_coordinator import FID, FakeCoordinator, round_json

FED = f"/v1/federations/{FID}"


def _waits(fake: FakeCoordinator) -> list[str | None]:
    return [r.url.params.get("wait") for r in fake.requests_to("GET", f"{FED}/rounds/current")]


def _advertising(number: int, plain: int = 300, cohort: int | None = 1800) -> Any:
    def reply(_request: httpx.Request) -> httpx.Response:
        body = {**round_json(number), "max_wait_seconds": plain, "max_cohort_wait_seconds": cohort}
        return httpx.Response(200, json=body)

    return reply


def test_a_poll_that_times_out_is_asked_again_past_the_clients_retries(
    client: Client, fake: FakeCoordinator, sleeps: list[float]
) -> None:
    late = [httpx.ReadTimeout("answered after the read timeout") for _ in range(5)]
    fake.add("GET", f"{FED}/rounds/current", *late, _advertising(4))
    new = client.rounds.wait_for_next(FID, after=3, timeout=3600, in_cohort=True)
    assert new.number == 4
    assert len(fake.requests_to("GET", f"{FED}/rounds/current")) == 6
    # the client's own retries (2 per call), then the wait loop's back-off, all bounded
    assert len(sleeps) == 5
    assert all(0 < pause <= 60 for pause in sleeps)


def test_a_dropped_connection_is_asked_again_too(client: Client, fake: FakeCoordinator) -> None:
    dropped = [httpx.RemoteProtocolError("Server disconnected") for _ in range(3)]
    fake.add("GET", f"{FED}/rounds/current", *dropped, _advertising(2))
    assert client.rounds.wait_for_next(FID, after=1, timeout=3600).number == 2


async def test_the_async_wait_asks_again_as_well(
    aclient: AsyncClient, fake: FakeCoordinator
) -> None:
    late = [httpx.ReadTimeout("late") for _ in range(4)]
    fake.add("GET", f"{FED}/rounds/current", *late, _advertising(7))
    assert (await aclient.rounds.wait_for_next(FID, after=6, timeout=3600)).number == 7


def test_past_its_own_timeout_the_wait_still_ends(client: Client, fake: FakeCoordinator) -> None:
    from participant_sdk import WaitTimeoutError

    fake.add("GET", f"{FED}/rounds/current", httpx.ReadTimeout("late"))
    with pytest.raises(WaitTimeoutError):
        client.rounds.wait_for_next(FID, after=1, timeout=0)


def test_sitting_out_asks_for_the_cohort_maximum_less_a_random_tenth(
    client: Client, fake: FakeCoordinator
) -> None:
    fake.add("GET", f"{FED}/rounds/current", _advertising(3, 300, 1800))
    client.rounds.current(FID)  # learns both maxima
    for _ in range(20):
        client.rounds.wait_for_next(FID, after=2, timeout=3600, in_cohort=True)
    client.rounds.wait_for_next(FID, after=2, timeout=3600)
    *cohort, plain = [int(w) for w in _waits(fake)[1:] if w is not None]
    assert all(1800 * (1 - WAIT_JITTER) - 1 <= w <= 1800 for w in cohort)
    assert len(set(cohort)) > 1  # spread, not one value for everyone
    assert plain == 300  # a plain poll: the plain maximum, unjittered
    # a coordinator without a cohort maximum: the plain one applies to both
    fake.routes.clear()
    fake.add("GET", f"{FED}/rounds/current", _advertising(3, 300, None))
    client.rounds.current(FID)
    client.rounds.wait_for_next(FID, after=2, timeout=3600, in_cohort=True)
    assert 300 * (1 - WAIT_JITTER) - 1 <= int(_waits(fake)[-1] or 0) <= 300


class _AnsweredLate(httpx.BaseTransport):
    """The in-process coordinator, except that its first ``late`` long-polls are answered
    after the client's read timeout (as a starved coordinator does): the client sees a
    ReadTimeout instead of the answer."""

    def __init__(self, inner: httpx.BaseTransport, late: int) -> None:
        self.inner = inner
        self.late = late
        self.timed_out = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "wait" in request.url.params and self.timed_out < self.late:
            self.timed_out += 1
            raise httpx.ReadTimeout("answered after the read timeout", request=request)
        return self.inner.handle_request(request)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def test_a_drawn_participant_whose_wait_timed_out_still_makes_its_round(
    coordinator: TestClient, app: FastAPI
) -> None:
    """Small-scale reproduction: the participant drawn into round 2 waits for it with
    in_cohort; its first polls time out (more than the client's retries); it must still
    learn of round 2 and upload, or round 2 waits for its deadline with one upload missing."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    rounds = {
        "max_rounds": 2,
        "final_evaluation_seconds": 0,
        "sampling": {"kind": "fixed", "size": 1},
    }
    fid = create_federation(coordinator, admin, rounds=rounds)["id"]
    _, headers = enrol(coordinator, admin, fid, "only")
    app.state.worker.tick()  # one active participant: the timer draws round 1 (it)
    token = headers["Authorization"].removeprefix("Bearer ")
    late = _AnsweredLate(coordinator._transport, late=4)
    with httpx.Client(base_url=str(coordinator.base_url), transport=late) as http:
        sdk = Client(str(coordinator.base_url), token, http_client=http)
        sdk._sleep = lambda _seconds: None  # the back-off is not what is tested
        assert put_update(coordinator, fid, 1, update_bytes(round=1), headers).status_code == 201
        wait_round_closed(coordinator, fid, 1, admin)
        drawn = sdk.rounds.wait_for_next(fid, after=1, timeout=60, in_cohort=True)
    assert late.timed_out == 4  # past the client's two retries: the wait loop asked again
    assert (drawn.number, drawn.in_cohort, drawn.state) == (2, True, "open")
    upload = update_bytes(round=2, base_version=drawn.base_version, seed=2)
    assert put_update(coordinator, fid, 2, upload, headers).status_code == 201
    wait_round_closed(coordinator, fid, 2, admin)


def test_a_participant_awaiting_the_draw_waits_for_it_instead_of_polling(
    coordinator: TestClient, app: FastAPI
) -> None:
    """Before round 1's sample is drawn, a participant's step finds nothing to do; on a
    coordinator whose in_cohort wait wakes at the draw it waits for its round with one
    held poll (no poll every few seconds), and that poll answers once it is drawn."""
    import threading

    from fedrec.synthetic import make_synthetic
    from participant_sdk import FederatedRecommender
    from participant_sdk.recsys import BPRConfig

    data = make_synthetic(num_users=20, num_items=50, seed=1)
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    rounds = {"min_participants": 2, "max_rounds": 1, "sampling": {"kind": "fixed", "size": 2}}
    federation = admin.federations.create(
        "draw",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        rounds=rounds,
    )
    tokens = [admin.participants.enrol(federation.id, f"p{i}").token for i in range(2)]
    sdk = Client(str(coordinator.base_url), tokens[0], http_client=coordinator)
    part = FederatedRecommender(sdk, federation.id, data, config=BPRConfig(dim=8, epochs=1))
    assert part.step() == "waiting"
    assert part._awaiting_draw
    assert part._draw_wakes_waits
    assert part.waiting_after == 0  # the wait is for round 1 itself
    answer: list[object] = []
    waiting = threading.Thread(
        target=lambda: answer.append(
            sdk.rounds.wait_for_next(federation.id, part.waiting_after, 60, in_cohort=True)
        )
    )
    waiting.start()
    limit = time.monotonic() + 10
    while app.state.context.notifier.waiting < 1 and time.monotonic() < limit:
        time.sleep(0.02)
    app.state.worker.tick()  # both enrolled: the timer draws round 1 (both of them)
    waiting.join(timeout=30)
    assert not waiting.is_alive(), "the held poll did not wake at the draw"
    [drawn] = answer
    assert (drawn.number, drawn.in_cohort) == (1, True)  # type: ignore[attr-defined]
