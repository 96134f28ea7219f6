"""``GET …/rounds/current/weights``: the current round (``X-Round``) and, when it has work
for the caller, its base version's weights download in the same answer; 204 otherwise.

Through the real app (both backends): the body and its ETag/manifest/signature are the
version's own download, the round is ``GET …/rounds/current``'s, the long-poll parameters
are that route's, every refusal is problem+json, and the fast path answers as FastAPI's
generic handler does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.api.fast_path import FastPathRoute
from participant_sdk.wire import MANIFEST_HEADER, ROUND_HEADER, SIGNATURE_HEADER
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
)

# the headers a weights download and the round's answer share with the version's own
WEIGHTS_HEADERS = ("etag", "x-model-version", "x-model-encoding", "cache-control")


def _round(response: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(response.headers[ROUND_HEADER])
    return found


def test_an_open_round_comes_with_its_base_weights_as_the_download_serves_them(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    answer = client.get(f"/v1/federations/{fid}/rounds/current/weights", headers=participant)
    download = client.get(f"/v1/federations/{fid}/models/0/weights", headers=participant)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.content == download.content
    for name in (*WEIGHTS_HEADERS, MANIFEST_HEADER, SIGNATURE_HEADER):
        assert answer.headers[name] == download.headers[name], name
    current = client.get(f"/v1/federations/{fid}/rounds/current", headers=participant).json()
    assert _round(answer) == current
    assert current["state"] == "open"
    assert current["base_version"] == 0


def test_the_next_rounds_answer_carries_the_version_the_last_one_made(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    wait_round_closed(client, fid, 1, admin_headers)
    answer = client.get(f"/v1/federations/{fid}/rounds/current/weights", headers=participant)
    assert answer.status_code == 200
    assert (_round(answer)["number"], _round(answer)["base_version"]) == (2, 1)
    assert answer.headers["x-model-version"] == "1"
    download = client.get(f"/v1/federations/{fid}/models/1/weights", headers=participant)
    assert answer.content == download.content
    assert answer.headers["etag"] == download.headers["etag"]


def test_bytes_the_caller_holds_are_not_sent_again(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    path = f"/v1/federations/{fid}/rounds/current/weights"
    etag = client.get(path, headers=participant).headers["etag"]
    held = client.get(path, headers={**participant, "If-None-Match": f'"{"0" * 64}", {etag}'})
    assert held.status_code == 304
    assert held.content == b""
    assert held.headers["etag"] == etag
    assert _round(held)["number"] == 1
    other = client.get(path, headers={**participant, "If-None-Match": f'"{"0" * 64}"'})
    assert other.status_code == 200
    assert other.content


def test_no_work_is_a_204_with_the_round(client: TestClient, admin_headers: dict[str, str]) -> None:
    fid = create_federation(client, admin_headers, rounds={"min_participants": 1, "max_rounds": 1})[
        "id"
    ]
    _, participant = enrol(client, admin_headers, fid)
    path = f"/v1/federations/{fid}/rounds/current/weights"
    # done with round 1 (after=1): nothing for it in the round, whose wait ran out
    done = client.get(f"{path}?after=1&wait=0.05", headers=participant)
    assert done.status_code == 204
    assert done.content == b""
    assert _round(done)["number"] == 1
    assert _round(done)["state"] == "open"
    # a long-poll past a round it has not done is answered at once, with the weights
    fresh = client.get(f"{path}?after=0&wait=5&in_cohort=true", headers=participant)
    assert fresh.status_code == 200
    assert fresh.content
    assert _round(fresh)["number"] == 1
    # training stopped: the last round is closed, no work for anyone
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    wait_round_closed(client, fid, 1, admin_headers)
    stopped = client.get(path, headers=participant)
    assert stopped.status_code == 204
    assert _round(stopped)["state"] == "closed"
    assert _round(stopped) == client.get(path.removesuffix("/weights"), headers=participant).json()


def test_a_participant_not_drawn_gets_no_weights(
    client: TestClient, admin_headers: dict[str, str], app: FastAPI
) -> None:
    rounds = {"min_participants": 2, "max_rounds": 2, "sampling": {"kind": "fixed", "size": 1}}
    fid = create_federation(client, admin_headers, rounds=rounds)["id"]
    headers = [enrol(client, admin_headers, fid, name)[1] for name in ("a", "b")]
    app.state.worker.tick()  # both enrolled: the timer draws round 1 (one of them)
    path = f"/v1/federations/{fid}/rounds/current/weights"
    answers = [client.get(path, headers=h) for h in headers]
    assert sorted(a.status_code for a in answers) == [200, 204]
    for answer in answers:
        assert _round(answer)["in_cohort"] is (answer.status_code == 200)
    # the admin takes part in no cohort but may read the base of an open round
    assert client.get(path, headers=admin_headers).status_code == 200


def test_refusals_are_problems(client: TestClient, admin_headers: dict[str, str]) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    path = f"/v1/federations/{fid}/rounds/current/weights"
    assert_problem(client.get(path), 401, "unauthorized")
    for headers in (participant, admin_headers):
        assert_problem(
            client.get("/v1/federations/nope/rounds/current/weights", headers=headers),
            404,
            "federation-not-found",
        )
    # a participant of another federation
    other = create_federation(client, admin_headers)["id"]
    assert_problem(
        client.get(f"/v1/federations/{other}/rounds/current/weights", headers=participant),
        403,
        "forbidden",
    )
    for query in ("wait=-1", "after=-1", "wait=301&after=1", "encoding=bf16", "encoding=int8"):
        assert_problem(client.get(f"{path}?{query}", headers=participant), 422, "validation-error")


QUERIES = [
    "",
    "after=0&wait=0",
    "after=1&wait=0.05",
    "after=0&wait=0.5&in_cohort=true",
    "encoding=float32",
    "encoding=float16",
    "unknown=1",
    # not read by the fast path: FastAPI's answers
    "wait=-1",
    "after=abc",
    "encoding=bf16",
    "encoding=float32&encoding=float16",
    "after=1&after=0&wait=0",
]


def test_the_fast_path_answers_as_the_generic_handler(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fid = create_federation(client, admin_headers, transport={"encoding": "float16"})["id"]
    _, participant = enrol(client, admin_headers, fid)
    path = f"/v1/federations/{fid}/rounds/current/weights"
    etag = client.get(path, headers=participant).headers["etag"]

    def answer(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        response = client.get(url, headers=headers)
        kept = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
        return response.status_code, kept, response.content

    cases = [(f"{path}?{q}", participant) for q in QUERIES]
    cases += [(path, {**participant, "If-None-Match": etag}), (path, admin_headers)]
    for url, headers in cases:
        fast = answer(url, headers)
        monkeypatch.setattr(FastPathRoute, "enabled", False)
        slow = answer(url, headers)
        monkeypatch.setattr(FastPathRoute, "enabled", True)
        assert fast == slow, url


def test_the_openapi_document_describes_the_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/federations/{federation_id}/rounds/current/weights"]["get"]
    assert {"200", "204", "304", "401", "403", "404", "422", "429"} <= set(operation["responses"])
    assert ROUND_HEADER in operation["responses"]["204"]["headers"]
    assert "application/octet-stream" in operation["responses"]["200"]["content"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"wait", "after", "in_cohort", "encoding", "if-none-match"} <= names


def test_the_cached_weights_reach_the_server_as_the_cache_holds_them(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Both weights routes hand the server one body message whose bytes are the process
    cache's own object: no copy, no join, no re-chunking on the way (bench/RESULTS.md,
    download-writes: a download's write is the kernel's copy of those bytes)."""
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    paths = [
        f"/v1/federations/{fid}/models/0/weights",
        f"/v1/federations/{fid}/rounds/current/weights",
    ]
    sent: list[dict[str, Any]] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def watching_send(message: Any) -> None:
            sent.append(message)
            await send(message)

        await app(scope, receive, watching_send)

    watcher = TestClient(watched)  # no lifespan: client ran it
    for path in paths:
        client.get(path, headers=participant)  # the first read fills the cache
        sent.clear()
        answer = watcher.get(path, headers=participant)
        assert answer.status_code == 200
        cached = app.state.context.served_versions.cached_weights(answer.headers["etag"][1:-1])
        assert cached is not None
        assert answer.content == cached
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        assert len(bodies) == 1, path
        assert bodies[0]["body"] is cached, path
        assert not bodies[0].get("more_body", False)
