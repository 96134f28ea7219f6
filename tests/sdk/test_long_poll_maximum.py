"""The SDK asks for the long-poll maximum the coordinator advertises
(``Round.max_wait_seconds``), at most the client's ``max_long_poll_wait``."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from participant_sdk import Client
from participant_sdk._constants import MAX_LONG_POLL_WAIT
from tests.sdk.fake_coordinator import (
    FID,
    FakeCoordinator,
    federation_json,
    respond,
    round_json,
)

FED = f"/v1/federations/{FID}"


def _advertising(number: int, max_wait: int | None) -> Any:
    def reply(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**round_json(number), "max_wait_seconds": max_wait})

    return reply


def _waits(fake: FakeCoordinator) -> list[str | None]:
    return [r.url.params.get("wait") for r in fake.requests_to("GET", f"{FED}/rounds/current")]


def test_without_an_advertisement_it_asks_for_60(client: Client, fake: FakeCoordinator) -> None:
    fake.add("GET", f"{FED}/rounds/current", _advertising(3, None))
    client.rounds.current(FID)
    client.rounds.current(FID, wait=600, after=2)
    assert _waits(fake) == [None, str(MAX_LONG_POLL_WAIT)]


def test_it_asks_for_the_advertised_maximum(client: Client, fake: FakeCoordinator) -> None:
    fake.add(
        "GET",
        f"{FED}/rounds/current",
        _advertising(2, 300),  # the first look: learns the maximum
        _advertising(3, 300),
    )
    assert client.rounds.current(FID).max_wait_seconds == 300
    new = client.rounds.wait_for_next(FID, after=2, timeout=3600)
    assert new.number == 3
    poll = fake.requests_to("GET", f"{FED}/rounds/current")[1]
    assert poll.url.params["wait"] == "300"
    assert poll.extensions["timeout"]["read"] > 300  # the read timeout outlasts the wait


def test_the_clients_own_cap_wins_behind_a_proxy(client: Client, fake: FakeCoordinator) -> None:
    fake.add("GET", f"{FED}/rounds/current", _advertising(2, 300))
    client.max_long_poll_wait = 55
    client.rounds.current(FID)
    client.rounds.current(FID, wait=3600, after=2)
    assert _waits(fake) == [None, "55"]


def test_a_held_poll_needs_no_federation_read(
    client: Client, fake: FakeCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll the coordinator held for its whole wait saw nothing; only an early answer
    (training stopped) is worth a federation read."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the wait loop's clock

    def held(number: int) -> Any:
        def reply(request: httpx.Request) -> httpx.Response:
            clock[0] += float(request.url.params.get("wait", 0))  # held the whole wait
            return httpx.Response(200, json={**round_json(number), "max_wait_seconds": 300})

        return reply

    fake.add("GET", f"{FED}/rounds/current", held(2), held(2), held(3))
    fake.add("GET", FED, respond(500, {"detail": "not to be asked"}))
    assert client.rounds.wait_for_next(FID, after=2, timeout=3600).number == 3
    assert _waits(fake) == ["60", "300", "300"]  # 60 until the first answer advertised 300
    assert not fake.requests_to("GET", FED)


def test_an_early_answer_still_reads_the_federation(client: Client, fake: FakeCoordinator) -> None:
    fake.add("GET", f"{FED}/rounds/current", _advertising(5, 300))
    fake.add("GET", FED, respond(200, federation_json("completed", None)))
    assert client.rounds.wait_for_next(FID, after=5, timeout=600).number == 5
    assert len(fake.requests_to("GET", FED)) == 1


def test_wait_for_next_may_sit_out_the_rounds_it_is_not_drawn_into(
    client: Client, fake: FakeCoordinator
) -> None:
    fake.add("GET", f"{FED}/rounds/current", _advertising(4, 300))
    assert client.rounds.wait_for_next(FID, after=3, timeout=600, in_cohort=True).number == 4
    assert client.rounds.wait_for_next(FID, after=3, timeout=600).number == 4
    first, second = fake.requests_to("GET", f"{FED}/rounds/current")
    assert first.url.params["in_cohort"] == "true"
    assert first.url.params["after"] == "3"
    assert "in_cohort" not in second.url.params  # the default: every round wakes it
