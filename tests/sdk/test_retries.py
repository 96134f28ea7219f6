"""Retries: what is retried, how long the client waits, and idempotency keys across attempts."""

from __future__ import annotations

import email.utils
import random
import time

import httpx
import numpy as np
import pytest

import participant_sdk as sdk
from participant_sdk import AsyncClient, Client
from participant_sdk._base_client import BaseClient
from participant_sdk._constants import (
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    RETRY_AFTER_JITTER,
)

from .fake_coordinator import FID, FakeCoordinator, problem, receipt_json, respond, round_json

FED = f"/v1/federations/{FID}"
UPDATE = f"{FED}/rounds/1/update"
DELTAS = {"item_factors": np.zeros((4, 2)), "item_bias": np.zeros(4)}


def _submit(client: Client) -> sdk.Receipt:
    return client.updates.submit(FID, 1, DELTAS, base_version=0, num_examples=3)


class TestWhatIsRetried:
    def test_503_with_retry_after_then_success(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add(
            "PUT",
            UPDATE,
            problem(503, "service-unavailable", headers={"Retry-After": "3"}),
            respond(201, receipt_json()),
        )
        assert _submit(client).round == 1
        assert len(sleeps) == 1
        assert 3.0 <= sleeps[0] <= 3.0 * (1 + RETRY_AFTER_JITTER)
        first, second = fake.requests
        assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
        assert first.content == second.content

    def test_idempotency_key_is_reused_on_every_retry(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add(
            "PUT",
            UPDATE,
            httpx.ConnectError("refused"),
            problem(502, "bad-gateway"),
            respond(201, receipt_json()),
        )
        _submit(client)
        keys = {r.headers["Idempotency-Key"] for r in fake.requests}
        assert len(fake.requests) == 3
        assert len(keys) == 1

    def test_connect_errors_are_retried(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add(
            "GET",
            f"{FED}/rounds/current",
            httpx.ConnectError("refused"),
            httpx.ConnectError("refused"),
            respond(200, round_json(2)),
        )
        assert client.rounds.current(FID).number == 2
        assert len(sleeps) == 2

    def test_connect_errors_exhaust_retries(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", httpx.ConnectError("refused"))
        with pytest.raises(sdk.APIConnectionError, match="Connection error") as excinfo:
            client.rounds.current(FID)
        assert type(excinfo.value) is sdk.APIConnectionError
        assert isinstance(excinfo.value.__cause__, httpx.ConnectError)
        assert len(fake.requests) == 1 + client.max_retries
        assert len(sleeps) == client.max_retries

    def test_timeouts_become_api_timeout_error(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", httpx.ReadTimeout("slow"))
        with pytest.raises(sdk.APITimeoutError) as excinfo:
            client.rounds.current(FID)
        assert isinstance(excinfo.value.__cause__, httpx.ReadTimeout)
        assert len(fake.requests) == 3

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_transient_statuses_are_retried(
        self, client: Client, fake: FakeCoordinator, status: int
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(status), respond(200, round_json(1)))
        assert client.rounds.current(FID).number == 1
        assert len(fake.requests) == 2

    @pytest.mark.parametrize(
        ("status", "slug"),
        [
            (409, "round-closed"),
            (409, "update-conflict"),
            (400, "bad-request"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "round-not-found"),
            (413, "payload-too-large"),
            (415, "unsupported-media-type"),
            (422, "invalid-update"),
        ],
    )
    def test_other_4xx_are_not_retried(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float], status: int, slug: str
    ) -> None:
        fake.add("PUT", UPDATE, problem(status, slug), respond(201, receipt_json()))
        with pytest.raises(sdk.APIStatusError) as excinfo:
            _submit(client)
        assert excinfo.value.status_code == status
        assert len(fake.requests) == 1
        assert sleeps == []

    def test_status_error_after_exhausted_retries(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("PUT", UPDATE, problem(503, "service-unavailable", "draining"))
        with pytest.raises(sdk.ServiceUnavailableError, match="draining"):
            _submit(client)
        assert len(fake.requests) == 3

    def test_with_options_max_retries_zero(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add("PUT", UPDATE, problem(503, "service-unavailable"))
        with pytest.raises(sdk.ServiceUnavailableError):
            _submit(client.with_options(max_retries=0))
        assert len(fake.requests) == 1
        assert sleeps == []

    def test_with_options_more_retries(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("PUT", UPDATE, problem(500, "internal-error"))
        with pytest.raises(sdk.InternalServerError):
            _submit(client.with_options(max_retries=5))
        assert len(fake.requests) == 6


class TestDelay:
    def test_exponential_backoff_with_jitter(self) -> None:
        for retries_taken in range(8):
            nominal = min(INITIAL_RETRY_DELAY * 2**retries_taken, MAX_RETRY_DELAY)
            for _ in range(50):
                delay = BaseClient._retry_delay(retries_taken, None)
                assert 0.75 * nominal <= delay <= nominal

    def test_backoff_sequence(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(503))
        with pytest.raises(sdk.ServiceUnavailableError):
            client.with_options(max_retries=3).rounds.current(FID)
        assert len(sleeps) == 3
        for retries_taken, delay in enumerate(sleeps):
            nominal = INITIAL_RETRY_DELAY * 2**retries_taken
            assert 0.75 * nominal <= delay <= nominal

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("0", 0.0), ("2.5", 2.5), ("7", 7.0), ("3600", MAX_RETRY_AFTER)],
    )
    def test_retry_after_seconds_is_honoured_up_to_a_cap(
        self, header: str, expected: float
    ) -> None:
        response = httpx.Response(503, headers={"Retry-After": header})
        assert expected <= BaseClient._retry_delay(0, response) <= expected * 1.25

    @pytest.mark.parametrize(("draw", "factor"), [(0.0, 1.0), (0.5, 1.125), (0.999, 1.24975)])
    def test_retry_after_gets_jitter_on_top_never_below(
        self, draw: float, factor: float, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Participants refused in the same second (a shedding coordinator's 503) come back
        spread over a quarter of Retry-After more, never sooner than it asked."""
        monkeypatch.setattr(random, "random", lambda: draw)
        response = httpx.Response(503, headers={"Retry-After": "8"})
        assert BaseClient._retry_delay(0, response) == pytest.approx(8 * factor)
        capped = httpx.Response(503, headers={"Retry-After": "3600"})
        assert BaseClient._retry_delay(0, capped) == pytest.approx(MAX_RETRY_AFTER * factor)

    def test_retry_after_jitter_spreads_the_retries(self) -> None:
        response = httpx.Response(503, headers={"Retry-After": "4"})
        delays = [BaseClient._retry_delay(0, response) for _ in range(100)]
        assert all(4.0 <= d <= 4.0 * (1 + RETRY_AFTER_JITTER) for d in delays)
        assert len(set(delays)) > 50  # not one instant every refused participant retries at

    def test_retry_after_http_date(self) -> None:
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        response = httpx.Response(429, headers={"Retry-After": when})
        assert 25 <= BaseClient._retry_delay(0, response) <= 30 * 1.25

    def test_retry_after_date_in_the_past(self) -> None:
        response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        assert BaseClient._retry_delay(0, response) == 0.0

    @pytest.mark.parametrize("header", ["soon", "-5", "nan", "inf"])
    def test_bad_retry_after_falls_back_to_backoff(self, header: str) -> None:
        response = httpx.Response(503, headers={"Retry-After": header})
        delay = BaseClient._retry_delay(0, response)
        assert 0.75 * INITIAL_RETRY_DELAY <= delay <= INITIAL_RETRY_DELAY

    def test_sleep_is_not_really_called(self, fake: FakeCoordinator) -> None:
        """Guard for the fixtures: without the patched sleep this test would take 60 s."""
        fake.add(
            "GET",
            f"{FED}/rounds/current",
            respond(503, headers={"Retry-After": "60"}),
            respond(200, round_json()),
        )
        slept: list[float] = []
        with Client("http://coordinator.test", "t", transport=fake.transport) as client:
            client._sleep = slept.append
            client.rounds.current(FID)
        assert len(slept) == 1
        assert 60.0 <= slept[0] <= 60.0 * (1 + RETRY_AFTER_JITTER)


class TestAsyncRetries:
    async def test_503_retry_reuses_the_key(
        self, aclient: AsyncClient, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add(
            "PUT",
            UPDATE,
            problem(503, "service-unavailable", headers={"Retry-After": "1"}),
            httpx.ConnectError("reset"),
            respond(201, receipt_json()),
        )
        receipt = await aclient.updates.submit(FID, 1, DELTAS, base_version=0, num_examples=3)
        assert receipt.round == 1
        assert 1.0 <= sleeps[0] <= 1.0 * (1 + RETRY_AFTER_JITTER)
        assert len(sleeps) == 2
        assert len({r.headers["Idempotency-Key"] for r in fake.requests}) == 1

    async def test_409_is_not_retried(
        self, aclient: AsyncClient, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add("PUT", UPDATE, problem(409, "update-conflict"))
        with pytest.raises(sdk.UpdateConflictError):
            await aclient.updates.submit(FID, 1, DELTAS, base_version=0, num_examples=3)
        assert len(fake.requests) == 1
        assert sleeps == []

    async def test_timeouts_exhaust(self, aclient: AsyncClient, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", httpx.ConnectTimeout("slow"))
        with pytest.raises(sdk.APITimeoutError):
            await aclient.rounds.current(FID)
        assert len(fake.requests) == 3
