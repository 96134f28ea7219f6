"""run()'s first contact with the rounds is one request, as bench.load's participants'
is: a long-poll (``after``, ``in_cohort=true``) that the coordinator answers at once when
the participant is drawn into the current round, and holds when it is not. Before, a
join took two: step()'s look at the current round, then the wait.

Counted on the wire (an httpx transport in front of the in-process coordinator).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig
from tests.conftest import ADMIN_TOKEN
from tests.sdk.fake_coordinator import FID, FakeCoordinator, federation_json

CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=1, seed=0)
WAITING_SECONDS = 20  # bound of the test's own waits


class _Counting(httpx.BaseTransport):
    """The in-process coordinator's transport, recording every request sent through it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.inner.handle_request(request)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _paths(requests: list[httpx.Request], fid: str) -> list[str]:
    prefix = f"/v1/federations/{fid}"
    return [f"{r.method} {r.url.path.removeprefix(prefix)}" for r in requests]


def test_a_join_is_one_long_poll_answered_at_once_when_drawn_held_when_not(
    coordinator: TestClient, app: FastAPI
) -> None:
    data = make_synthetic(num_users=40, num_items=60, seed=3)
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    rounds = {
        "max_rounds": 1,
        "min_participants": 2,
        "final_evaluation_seconds": 0,
        "sampling": {"kind": "fixed", "size": 1},
    }
    federation = admin.federations.create(
        "join",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        rounds=rounds,
    )
    fid = federation.id
    tokens = [admin.participants.enrol(fid, f"p{i}").token for i in range(2)]
    app.state.worker.tick()  # both enrolled: the timer draws round 1 (one of them)
    looks = [
        Client(str(coordinator.base_url), t, http_client=coordinator).rounds.current(fid)
        for t in tokens
    ]
    assert sorted(look.in_cohort is True for look in looks) == [False, True]
    drawn, sitting_out = sorted(range(2), key=lambda i: looks[i].in_cohort is not True)
    views = partition_users(data, "iid", 2, seed=0)

    def participant(index: int) -> tuple[FederatedRecommender, _Counting]:
        wire = _Counting(coordinator._transport)
        sdk = Client(str(coordinator.base_url), tokens[index], transport=wire)
        part = FederatedRecommender(sdk, fid, local_view(data, views[index]), config=CONFIG)
        wire.sent.clear()  # the constructor's reads (federation, catalog) are not the join
        return part, wire

    # not drawn: its join is one held poll, sitting round 1 out (no download, no training)
    waiting, waiting_wire = participant(sitting_out)
    finished: list[dict[str, float]] = []
    runner = threading.Thread(target=lambda: finished.append(waiting.run(round_timeout=3600)))
    runner.start()
    deadline = time.monotonic() + WAITING_SECONDS
    while app.state.context.notifier.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.context.notifier.waiting == 1, "the sitting-out participant holds no poll"
    # participants/me is run()'s token-expiry read (the refresh schedule), once per run()
    # (and, once per client, the coordinator's signing key: the poll's answer may carry
    # the round's base weights, which the client verifies)
    assert _paths(waiting_wire.sent, fid) == [
        "GET /participants/me",
        "GET /v1/signing-key",
        "GET /rounds/current/weights",
    ]
    join = waiting_wire.sent[-1].url.params
    assert (join["after"], join["in_cohort"]) == ("0", "true")
    # the first poll already asks for the cohort maximum the federation's answer advertised
    assert 1800 * 0.9 - 1 <= int(join["wait"]) <= 1800

    # drawn: the same one request is answered at once; the next are its round's work
    working, working_wire = participant(drawn)
    working.run(round_timeout=60)
    sent = _paths(working_wire.sent, fid)
    # the join's answer carries round 1's base weights: no download of its own
    assert sent[:4] == [
        "GET /participants/me",
        "GET /v1/signing-key",
        "GET /rounds/current/weights",
        "PUT /rounds/1/update",
    ]
    assert working.progress.last_round == 1
    assert [h["round"] for h in working.progress.history] == [1]

    # round 1 closed, training stopped: the held poll answered, the other one finishes too
    runner.join(timeout=WAITING_SECONDS)
    assert not runner.is_alive()
    assert finished
    assert waiting.progress.history == []  # it never trained
    assert admin.federations.get(fid).state == "completed"


def test_the_federations_answer_teaches_the_long_poll_maxima(
    client: Client, fake: FakeCoordinator
) -> None:
    """A coordinator that advertises its maxima on the federation: the first wait asks
    for the whole one; one that does not (an older one) leaves what the client knew."""
    advertised = {**federation_json(), "max_wait_seconds": 300, "max_cohort_wait_seconds": 1800}
    fake.add("GET", f"/v1/federations/{FID}", lambda _r: httpx.Response(200, json=advertised))
    client.federations.get(FID)
    assert client._wait_param(10_000, in_cohort=True) == 1800
    assert client._wait_param(10_000) == 300
    fake.routes.clear()
    fake.add(
        "GET", f"/v1/federations/{FID}", lambda _r: httpx.Response(200, json=federation_json())
    )
    client.federations.get(FID)
    assert client._wait_param(10_000, in_cohort=True) == 1800
