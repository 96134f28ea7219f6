"""Participant tokens expire and rotate (issue 12): a refresh issues a new token, the
old one works for a short grace, an expired token is refused with ``token-expired``."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from coordinator.domain.context import Context
from coordinator.store.models import IdempotencyRecord, Participant, utc_now
from tests.factories import assert_problem, create_federation, enrol


def _ctx(app: FastAPI) -> Context:
    ctx: Context = app.state.context
    return ctx


def _set(app: FastAPI, pid: str, **values: object) -> None:
    with _ctx(app).sessions.begin() as session:
        session.execute(update(Participant).where(Participant.id == pid).values(**values))
    # an edit behind the coordinator's back (it stands for time passing): drop its cache
    _ctx(app).principals.invalidate()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def enrolled(client: TestClient, admin_headers: dict[str, str]) -> tuple[str, str, str]:
    fid = create_federation(client, admin_headers)["id"]
    pid, headers = enrol(client, admin_headers, fid)
    return fid, pid, headers["Authorization"].removeprefix("Bearer ")


def _refresh(client: TestClient, fid: str, token: str, **headers: str) -> dict[str, object]:
    response = client.post(
        f"/v1/federations/{fid}/participants/me/token", headers={**_bearer(token), **headers}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_enrolment_states_the_expiry(
    app: FastAPI, client: TestClient, enrolled: tuple[str, str, str]
) -> None:
    fid, _, token = enrolled
    me = client.get(f"/v1/federations/{fid}/participants/me", headers=_bearer(token)).json()
    expires = datetime.fromisoformat(me["token_expires_at"])
    expected = utc_now() + timedelta(seconds=_ctx(app).token_ttl_seconds)
    assert abs((expires - expected).total_seconds()) < 60


def test_an_expired_token_is_refused_and_audited(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    enrolled: tuple[str, str, str],
) -> None:
    fid, pid, token = enrolled
    _set(app, pid, token_expires_at=utc_now() - timedelta(seconds=1))
    response = client.get(f"/v1/federations/{fid}", headers=_bearer(token))
    body = assert_problem(response, 401, "token-expired")
    assert "re-enrol" in body["detail"]
    # nor can it refresh itself
    refresh = client.post(f"/v1/federations/{fid}/participants/me/token", headers=_bearer(token))
    assert_problem(refresh, 401, "token-expired")
    events = client.get("/v1/audit", headers=admin_headers).json()["items"]
    failures = [e for e in events if e["action"] == "auth-failure"]
    assert [e["detail"] for e in failures] == [{"reason": "token-expired"}] * 2
    assert failures[0]["actor"] == f"participant:{pid}"


def test_refresh_rotates_with_a_grace(
    app: FastAPI, client: TestClient, enrolled: tuple[str, str, str]
) -> None:
    fid, pid, old = enrolled
    refreshed = _refresh(client, fid, old)
    new = str(refreshed["token"])
    assert new != old
    assert refreshed["id"] == pid
    for token in (new, old):  # the old one still works during the grace
        assert client.get(f"/v1/federations/{fid}", headers=_bearer(token)).status_code == 200
    _set(app, pid, previous_token_expires_at=utc_now() - timedelta(seconds=1))
    gone = client.get(f"/v1/federations/{fid}", headers=_bearer(old))
    assert_problem(gone, 401, "unauthorized")
    assert client.get(f"/v1/federations/{fid}", headers=_bearer(new)).status_code == 200


def test_a_lost_refresh_is_retried_with_the_old_token(
    client: TestClient, enrolled: tuple[str, str, str]
) -> None:
    fid, _, old = enrolled
    lost = str(_refresh(client, fid, old)["token"])  # its response never arrived
    retried = str(_refresh(client, fid, old)["token"])
    assert len({old, lost, retried}) == 3
    assert client.get(f"/v1/federations/{fid}", headers=_bearer(retried)).status_code == 200
    assert client.get(f"/v1/federations/{fid}", headers=_bearer(old)).status_code == 200
    assert_problem(client.get(f"/v1/federations/{fid}", headers=_bearer(lost)), 401, "unauthorized")


def test_a_refresh_is_never_stored_for_replay(
    app: FastAPI, client: TestClient, enrolled: tuple[str, str, str]
) -> None:
    fid, _, old = enrolled
    first = _refresh(client, fid, old, **{"Idempotency-Key": "same-key"})
    again = client.post(
        f"/v1/federations/{fid}/participants/me/token",
        headers={**_bearer(old), "Idempotency-Key": "same-key"},
    )
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["token"] != first["token"]
    # the answer carries a token: no cache may keep it either
    assert again.headers["cache-control"] == "no-store"
    with _ctx(app).read_sessions() as session:
        stored = session.scalar(select(func.count()).select_from(IdempotencyRecord))
    assert stored == 0


def test_revoked_participants_cannot_refresh_and_reenrol_ends_the_grace(
    client: TestClient, admin_headers: dict[str, str], enrolled: tuple[str, str, str]
) -> None:
    fid, pid, old = enrolled
    new = str(_refresh(client, fid, old)["token"])
    client.delete(f"/v1/federations/{fid}/participants/{pid}", headers=admin_headers)
    refresh = client.post(f"/v1/federations/{fid}/participants/me/token", headers=_bearer(new))
    assert_problem(refresh, 401, "participant-revoked")
    again = client.post(f"/v1/federations/{fid}/participants/{pid}/reenrol", headers=admin_headers)
    fresh = again.json()["token"]
    assert client.get(f"/v1/federations/{fid}", headers=_bearer(fresh)).status_code == 200
    for stale in (old, new):
        assert client.get(f"/v1/federations/{fid}", headers=_bearer(stale)).status_code == 401


def test_admin_cannot_refresh_a_participant_token(
    client: TestClient, admin_headers: dict[str, str], enrolled: tuple[str, str, str]
) -> None:
    fid, _, _ = enrolled
    response = client.post(f"/v1/federations/{fid}/participants/me/token", headers=admin_headers)
    assert_problem(response, 403, "forbidden")


def test_refresh_is_audited(
    client: TestClient, admin_headers: dict[str, str], enrolled: tuple[str, str, str]
) -> None:
    fid, pid, old = enrolled
    _refresh(client, fid, old)
    events = client.get("/v1/audit", headers=admin_headers).json()["items"]
    assert (events[-1]["action"], events[-1]["subject"]) == ("token-refresh", pid)
