"""A participant's round is two requests: ``GET …/rounds/current/weights`` (the round and
its base weights in one answer) and the upload; before, three (the round, the weights,
the upload). Counted on the wire (an httpx transport in front of the in-process
coordinator), for ``step()`` and ``run()``; an older coordinator (404 on the route) gets
the two requests it knows; the combined answer's bytes are verified as a download's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk import (
    APIResponseValidationError,
    AsyncClient,
    Client,
    FederatedRecommender,
    ModelSignatureError,
    NotFoundError,
)
from participant_sdk.recsys import BPRConfig
from participant_sdk.wire import ROUND_HEADER
from tests.conftest import ADMIN_TOKEN

CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=1, seed=0)
ROUND_WEIGHTS = "GET /rounds/current/weights"


class _Wire(httpx.BaseTransport):
    """The in-process coordinator's transport, recording every request (and its answer's
    status); ``rewrite`` may replace an answer."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Request] = []
        self.statuses: list[int] = []
        self.rewrite: Callable[[httpx.Request], httpx.Response | None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.rewrite(request) if self.rewrite else None
        if response is None:
            response = self.inner.handle_request(request)
        self.statuses.append(response.status_code)
        return response


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _paths(wire: _Wire, fid: str) -> list[str]:
    prefix = f"/v1/federations/{fid}"
    return [f"{r.method} {r.url.path.removeprefix(prefix)}" for r in wire.sent]


def _federation(coordinator: TestClient, participants: int, max_rounds: int) -> tuple[str, list]:
    data = make_synthetic(num_users=30, num_items=40, seed=5)
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    fid = admin.federations.create(
        "two requests",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        rounds={
            "max_rounds": max_rounds,
            "min_participants": participants,
            "final_evaluation_seconds": 0,
        },
    ).id
    tokens = [admin.participants.enrol(fid, f"p{i}").token for i in range(participants)]
    views = partition_users(data, "iid", participants, seed=0)
    return fid, [(tokens[i], local_view(data, views[i])) for i in range(participants)]


def _participant(
    coordinator: TestClient, fid: str, token: str, data: object
) -> tuple[FederatedRecommender, _Wire]:
    wire = _Wire(coordinator._transport)
    client = Client(str(coordinator.base_url), token, transport=wire)
    participant = FederatedRecommender(client, fid, data, config=CONFIG)  # type: ignore[arg-type]
    wire.sent.clear()  # the constructor's reads (federation, catalog) are not the round's
    wire.statuses.clear()
    return participant, wire


def test_a_step_is_the_round_with_its_weights_then_the_upload(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    participant, wire = _participant(coordinator, fid, *members[0])
    assert participant.step() == "uploaded"
    # the signing key once per client, before the first weights it verifies
    assert _paths(wire, fid) == ["GET /v1/signing-key", ROUND_WEIGHTS, "PUT /rounds/1/update"]
    assert wire.statuses[1] == 200
    wire.sent.clear()
    wire.statuses.clear()
    # round 1 closed (one participant); round 2's base is version 1: two requests
    assert participant.step() == "uploaded"
    assert _paths(wire, fid) == [ROUND_WEIGHTS, "PUT /rounds/2/update"]
    assert participant.progress.last_round == 2
    # the download the SDK held names the bytes it has: a base it holds is not sent again
    assert wire.sent[0].headers["if-none-match"].count('"') >= 2


def test_a_step_in_a_round_already_done_gets_no_bytes_again(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=2, max_rounds=2)
    participant, wire = _participant(coordinator, fid, *members[0])
    assert participant.step() == "uploaded"  # round 1 waits for the second participant
    wire.sent.clear()
    wire.statuses.clear()
    assert participant.step() == "waiting"
    # the round's base is what it holds (304, no bytes); then, as before, the federation's
    # state (has training stopped?)
    assert _paths(wire, fid) == [ROUND_WEIGHTS, "GET "]
    assert wire.statuses[0] == 304


def test_run_learns_of_its_round_and_gets_the_weights_in_one_request(
    coordinator: TestClient,
) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=1)
    participant, wire = _participant(coordinator, fid, *members[0])
    participant.run(round_timeout=60)
    sent = _paths(wire, fid)
    upload = sent.index("PUT /rounds/1/update")
    assert sent[:upload] == ["GET /participants/me", "GET /v1/signing-key", ROUND_WEIGHTS]
    poll = wire.sent[2].url.params
    assert (poll["after"], poll["in_cohort"]) == ("0", "true")
    assert "GET /rounds/current" not in sent
    assert participant.progress.last_round == 1


def test_an_older_coordinator_gets_the_round_then_the_weights(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    participant, wire = _participant(coordinator, fid, *members[0])

    def unknown_route(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/rounds/current/weights"):
            problem = {"type": "urn:fedrec:problem:not-found", "title": "Not found"}
            return httpx.Response(404, json={**problem, "status": 404, "detail": "Not Found"})
        return None

    wire.rewrite = unknown_route
    assert participant.step() == "uploaded"
    assert _paths(wire, fid) == [
        "GET /v1/signing-key",
        ROUND_WEIGHTS,
        "GET /rounds/current",  # the round: the 404 was the route's, not the federation's
        "GET /models/0/weights",
        "PUT /rounds/1/update",
    ]
    wire.sent.clear()
    assert participant.step() == "uploaded"  # remembered: not asked again
    assert _paths(wire, fid) == [
        "GET /rounds/current",
        "GET /models/1/weights",
        "PUT /rounds/2/update",
    ]


def test_a_404_that_names_what_is_missing_is_raised_and_the_route_kept(
    coordinator: TestClient,
) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    participant, wire = _participant(coordinator, fid, *members[0])

    def version_gone(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/rounds/current/weights"):
            problem = {"type": "urn:fedrec:problem:model-version-not-found", "title": "Not found"}
            return httpx.Response(404, json={**problem, "status": 404, "detail": "gone"})
        return None

    wire.rewrite = version_gone
    with pytest.raises(NotFoundError) as raised:
        participant.step()
    assert raised.value.slug == "model-version-not-found"
    assert "GET /rounds/current" not in _paths(wire, fid)  # not taken for an older coordinator
    wire.rewrite = None
    wire.sent.clear()
    assert participant.step() == "uploaded"
    assert _paths(wire, fid)[:2] == [ROUND_WEIGHTS, "PUT /rounds/1/update"]


def test_bytes_that_do_not_match_their_etag_are_refused(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    participant, wire = _participant(coordinator, fid, *members[0])

    def tampered(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/rounds/current/weights"):
            return None
        genuine = wire.inner.handle_request(request)
        genuine.read()
        body = bytearray(genuine.content)
        body[-1] ^= 1
        return httpx.Response(200, headers=genuine.headers, content=bytes(body))

    wire.rewrite = tampered
    with pytest.raises(ModelSignatureError, match="do not match their ETag"):
        participant.step()
    assert participant.progress.last_round == 0  # nothing trained or uploaded


def test_an_answer_without_its_round_is_refused(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    token, _data = members[0]
    wire = _Wire(coordinator._transport)

    def roundless(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/rounds/current/weights"):
            return None
        genuine = wire.inner.handle_request(request)
        genuine.read()
        headers = {k: v for k, v in genuine.headers.items() if k.lower() != ROUND_HEADER.lower()}
        return httpx.Response(genuine.status_code, headers=headers, content=genuine.content)

    wire.rewrite = roundless
    client = Client(str(coordinator.base_url), token, transport=wire)
    with pytest.raises(APIResponseValidationError, match=ROUND_HEADER):
        client.rounds.current_with_weights(fid)


def test_the_client_methods_answer_the_round_and_its_weights(coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    token, _data = members[0]
    client = Client(str(coordinator.base_url), token, http_client=coordinator)
    work = client.rounds.current_with_weights(fid)
    assert work.round.number == 1
    assert work.weights is not None
    download = client.models.weights(fid, 0)
    assert set(work.weights) == set(download)
    for name, array in download.items():
        np.testing.assert_array_equal(work.weights[name], array)
    # done with round 1: the round, no weights
    done = client.rounds.current_with_weights(fid, after=1)
    assert done.round.number == 1
    assert done.weights is None
    # wait_for_work: answered at once for a round past `after`
    assert client.rounds.wait_for_work(fid, after=0, timeout=10).weights is not None


async def test_the_async_client_answers_the_same(app: FastAPI, coordinator: TestClient) -> None:
    fid, members = _federation(coordinator, participants=1, max_rounds=3)
    token, _data = members[0]
    async with AsyncClient(
        "http://testserver", token, transport=httpx.ASGITransport(app=app)
    ) as client:
        work = await client.rounds.current_with_weights(fid)
        assert work.round.number == 1
        assert work.weights is not None
        again = await client.rounds.wait_for_work(fid, after=0, timeout=10)
        assert again.weights is not None  # the bytes it held: a 304, served from its cache
        for name, array in work.weights.items():
            np.testing.assert_array_equal(again.weights[name], array)
