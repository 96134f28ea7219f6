"""Idempotency-Key on non-GET requests: a retry gets the original response."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from tests.factories import assert_problem, create_federation, federation_body


def _post(client: TestClient, headers: dict, key: str | None, **overrides: object) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(
        "/v1/federations", json=federation_body(**overrides), headers={**headers, **extra}
    )


def _count(client: TestClient, headers: dict) -> int:
    return len(client.get("/v1/federations", headers=headers).json()["items"])


def test_retry_with_same_key_replays_the_original(client: TestClient, admin_headers: dict) -> None:
    first = _post(client, admin_headers, "create-1")
    again = _post(client, admin_headers, "create-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(client, admin_headers) == 1


def test_without_a_key_each_request_acts(client: TestClient, admin_headers: dict) -> None:
    _post(client, admin_headers, None)
    _post(client, admin_headers, None)
    assert _count(client, admin_headers) == 2


def test_same_key_different_body_422(client: TestClient, admin_headers: dict) -> None:
    _post(client, admin_headers, "create-2", name="one")
    response = _post(client, admin_headers, "create-2", name="two")
    assert_problem(response, 422, "idempotency-key-reused")
    assert _count(client, admin_headers) == 1


def test_enrol_retry_enrols_once_and_never_replays_the_token(
    client: TestClient, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    url = f"/v1/federations/{fid}/participants"
    headers = {**admin_headers, "Idempotency-Key": "enrol-1"}
    first = client.post(url, json={"name": "shop"}, headers=headers)
    assert first.status_code == 201
    assert first.headers["cache-control"] == "no-store"
    again = client.post(url, json={"name": "shop"}, headers=headers)
    problem = assert_problem(again, 409, "secret-not-replayable")
    assert problem["created_id"] == first.json()["id"]
    assert "reenrol" in problem["detail"]
    assert first.json()["token"] not in again.text
    assert len(client.get(url, headers=admin_headers).json()["items"]) == 1
    assert _stored_bodies(client)
    assert not _token_at_rest(client, first.json()["token"])


def test_reenrol_response_is_not_stored_either(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers)["id"]
    pid = client.post(
        f"/v1/federations/{fid}/participants", json={"name": "p"}, headers=admin_headers
    ).json()["id"]
    url = f"/v1/federations/{fid}/participants/{pid}/reenrol"
    headers = {**admin_headers, "Idempotency-Key": "re-1"}
    first = client.post(url, headers=headers)
    assert first.status_code == 200
    assert_problem(client.post(url, headers=headers), 409, "secret-not-replayable")
    assert not _token_at_rest(client, first.json()["token"])
    # the token of the first answer still works: the replay did not re-enrol again
    me = client.get(
        f"/v1/federations/{fid}/participants/me",
        headers={"Authorization": f"Bearer {first.json()['token']}"},
    )
    assert me.status_code == 200


def _stored_bodies(client: TestClient) -> list[str]:
    from sqlalchemy import select

    from coordinator.store.models import IdempotencyRecord

    with client.app.state.context.read_sessions() as session:  # type: ignore[attr-defined]
        return [b or "" for b in session.scalars(select(IdempotencyRecord.response_body))]


def _token_at_rest(client: TestClient, token: str) -> bool:
    """Whether the token appears anywhere in the database file or the blobs."""
    if any(token in body for body in _stored_bodies(client)):
        return True
    settings = client.app.state.settings  # type: ignore[attr-defined]
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        files += list(database.parent.glob(database.name + "*"))
    return any(token.encode() in p.read_bytes() for p in files)


def test_an_expired_key_acts_again(settings: Settings, admin_headers: dict) -> None:
    app = create_app(settings.model_copy(update={"idempotency_ttl_seconds": 0.5}), run_timer=False)
    with TestClient(app) as client:
        first = _post(client, admin_headers, "ttl-1")
        assert _post(client, admin_headers, "ttl-1").headers["idempotent-replayed"] == "true"
        time.sleep(0.6)
        again = _post(client, admin_headers, "ttl-1")
        assert again.status_code == 201
        assert "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]


def test_the_timer_sweeps_expired_records(settings: Settings, admin_headers: dict) -> None:
    app = create_app(settings.model_copy(update={"idempotency_ttl_seconds": 0.5}), run_timer=False)
    with TestClient(app) as client:
        _post(client, admin_headers, "sweep-1")
        _post(client, admin_headers, "sweep-2")
        assert _records(client) == 2
        time.sleep(0.6)
        _post(client, admin_headers, "sweep-3")  # fresh: kept
        app.state.worker.tick()
        assert _records(client) == 1


def test_errors_are_replayed_too(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers)["id"]
    url = f"/v1/federations/{fid}/rounds/1/aggregate"
    headers = {**admin_headers, "Idempotency-Key": "agg-1"}
    assert_problem(client.post(url, headers=headers), 409, "no-updates")
    assert_problem(client.post(url, headers=headers), 409, "no-updates")


def test_keys_are_scoped_to_the_caller(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers)["id"]
    url = f"/v1/federations/{fid}/participants"
    a = client.post(url, json={"name": "a"}, headers={**admin_headers, "Idempotency-Key": "k"})
    token = a.json()["token"]
    # the participant's own use of the same key is not answered with the admin's response
    other = client.post(
        f"/v1/federations/{fid}/models/0/evaluations",
        json={"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 1},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k"},
    )
    assert other.status_code == 201
    assert "split" in other.json()


def _records(client: TestClient) -> int:
    from sqlalchemy import func, select

    from coordinator.store.models import IdempotencyRecord

    with client.app.state.context.read_sessions() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0)


def test_no_record_before_authentication(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers)["id"]
    url = f"/v1/federations/{fid}/participants"
    before = _records(client)
    # the audit's 200 junk-token POSTs left 200 rows; now guesses beyond the address's
    # burst are throttled (429) before their token is even checked: neither is recorded
    statuses = set()
    for i in range(200):
        auth = {"Authorization": f"Bearer junk-{i}"} if i % 2 else {}
        response = client.post(
            url, json={"name": "x"}, headers={**auth, "Idempotency-Key": f"j{i}"}
        )
        if response.status_code == 429:
            assert_problem(response, 429, "too-many-requests")
        else:
            assert_problem(response, 401, "unauthorized")
        statuses.add(response.status_code)
    assert 401 in statuses
    assert _records(client) == before


def test_revoked_participant_gets_no_replay(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers)["id"]
    enrolled = client.post(
        f"/v1/federations/{fid}/participants", json={"name": "p"}, headers=admin_headers
    ).json()
    headers = {"Authorization": f"Bearer {enrolled['token']}", "Idempotency-Key": "ev-1"}
    url = f"/v1/federations/{fid}/models/0/evaluations"
    body = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 1}
    assert client.post(url, json=body, headers=headers).status_code == 201
    client.delete(f"/v1/federations/{fid}/participants/{enrolled['id']}", headers=admin_headers)
    replay = client.post(url, json=body, headers=headers)
    assert_problem(replay, 401, "participant-revoked")
    assert "idempotent-replayed" not in replay.headers
