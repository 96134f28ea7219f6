"""FEDREC_MAX_LONG_POLL_STARTS (api/long_poll_starts.py): a crowd of first long-polls gets
back-pressure (503 ``overloaded``, problem+json, ``Retry-After``) instead of queueing for
the worker threads that authenticate them; every refused poll, asked again by the SDK
after its Retry-After, is answered: nothing errors, nothing is lost.

The authentications are held by an event until the test releases them (no timing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import coordinator.api.admission as admission
from coordinator.app import create_app
from coordinator.config import Settings
from participant_sdk import Client, Round
from tests.conftest import ADMIN_TOKEN
from tests.factories import assert_problem, create_federation, enrol

BURST = 12
BOUND = 20.0  # seconds any wait here may take before the test fails (not a timing)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"max_long_poll_starts": 1}), run_timer=False)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _until(condition: Any) -> None:
    deadline = time.monotonic() + BOUND
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_burst_of_first_long_polls_gets_back_pressure_and_every_one_is_answered(
    coordinator: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    fid = create_federation(coordinator, admin)["id"]
    crowd = [enrol(coordinator, admin, fid, f"device-{i}")[1] for i in range(BURST)]
    _, other = enrol(coordinator, admin, fid, "other")
    held_tokens = {h["Authorization"].removeprefix("Bearer ") for h in crowd}

    # the crowd's authentications (tokens new to the process) wait until released
    released = threading.Event()
    real = admission.authenticate  # type: ignore[attr-defined]

    def slow(ctx: Any, token: str | None, **kwargs: Any) -> Any:
        if token in held_tokens:
            released.wait(BOUND)
        return real(ctx, token, **kwargs)

    monkeypatch.setattr(admission, "authenticate", slow)

    refusals: list[float] = []  # the Retry-After waits the SDK clients took
    answers: list[Round] = []
    lock = threading.Lock()

    def join(headers: dict[str, str]) -> None:
        token = headers["Authorization"].removeprefix("Bearer ")
        # once released, the refused polls retry in turn for the one slot: enough retries,
        # a few milliseconds apart, for eleven of them on a loaded machine (a slot's poll
        # can take a while there: authentication and answer on a busy event loop)
        sdk = Client(str(coordinator.base_url), token, http_client=coordinator, max_retries=1000)

        def wait_out(seconds: float) -> None:  # stands in for time.sleep(Retry-After)
            with lock:
                refusals.append(seconds)
            released.wait(BOUND)
            time.sleep(0.005)

        sdk._sleep = wait_out
        # the SDK's join: after=0, in_cohort; round 1 is open and takes everyone: answered
        # at once once admitted
        round_ = sdk.rounds.wait_for_next(fid, after=0, timeout=BOUND, in_cohort=True)
        with lock:
            answers.append(round_)

    threads = [threading.Thread(target=join, args=(h,)) for h in crowd]
    for thread in threads:
        thread.start()
    # one poll holds the only slot (its authentication waits); the other eleven are refused
    _until(lambda: len(refusals) >= BURST - 1)
    assert all(seconds >= 1 for seconds in refusals)  # Retry-After (1 s at the least)

    # what a refused poll reads: 503 overloaded, problem+json, Retry-After, what to do
    refused = coordinator.get(
        f"/v1/federations/{fid}/rounds/current",
        params={"after": 0, "wait": 30, "in_cohort": "true"},
        headers=crowd[0],
    )
    assert_problem(refused, 503, "overloaded")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "FEDREC_MAX_LONG_POLL_STARTS" in refused.json()["detail"]
    assert "ask again" in refused.json()["detail"]
    # other requests are not concerned (FEDREC_MAX_REQUESTS_IN_FLIGHT bounds them)
    assert coordinator.get(f"/v1/federations/{fid}/rounds/current", headers=other).is_success

    released.set()
    for thread in threads:
        thread.join(BOUND)
    assert not any(thread.is_alive() for thread in threads)
    assert len(answers) == BURST  # nothing lost: every refused poll was answered
    assert {(r.number, r.state, r.in_cohort) for r in answers} == {(1, "open", True)}


def test_a_bound_of_zero_refuses_no_long_poll(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_long_poll_starts": 0}), run_timer=False)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(app) as coordinator:
        fid = create_federation(coordinator, admin)["id"]
        _, headers = enrol(coordinator, admin, fid)
        answer = coordinator.get(
            f"/v1/federations/{fid}/rounds/current",
            params={"after": 0, "wait": 5},
            headers=headers,
        )
    assert answer.status_code == 200
