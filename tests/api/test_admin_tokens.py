"""Admin tokens expire, can be listed (without secrets) and revoked; the bootstrap token
is one of them: registered at the first start with it, replaced by a new one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.auth import register_bootstrap_token
from coordinator.domain.context import Context
from coordinator.store.models import AdminToken, AuditEvent, utc_now
from tests.conftest import ADMIN_TOKEN
from tests.factories import assert_problem, create_federation, enrol

TOKENS = "/v1/admin/tokens"


def _ctx(app: FastAPI) -> Context:
    ctx: Context = app.state.context
    return ctx


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _expire(app: FastAPI, token_id: str) -> None:
    """Time passing, by an edit behind the coordinator's back (so its cache is dropped)."""
    with _ctx(app).sessions.begin() as session:
        session.execute(
            update(AdminToken)
            .where(AdminToken.id == token_id)
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
    _ctx(app).principals.invalidate()


def _create(client: TestClient, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = client.post(TOKENS, json={"name": "ci", **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def _bootstrap(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    rows = client.get(TOKENS, headers=headers).json()["items"]
    (row,) = [r for r in rows if r["kind"] == "bootstrap" and r["state"] == "active"]
    return dict(row)


def test_the_bootstrap_token_is_registered_with_the_default_lifetime(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.get(TOKENS, headers=admin_headers)
    assert response.status_code == 200, response.text
    (row,) = response.json()["items"]
    assert row["kind"] == "bootstrap"
    assert row["state"] == "active"
    assert row["created_by"] == "coordinator"
    assert row["revoked_at"] is None
    lifetime = datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(row["created_at"])
    assert lifetime == timedelta(seconds=_ctx(app).admin_token_ttl_seconds)
    assert ADMIN_TOKEN not in response.text
    assert "token_hash" not in response.text


def test_a_created_token_works_until_its_own_expiry_and_is_listed_without_secret(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    created = _create(client, admin_headers, expires_in_seconds=3600)
    token = str(created["token"])
    assert token.startswith("fra_")
    assert created["kind"] == "issued"
    lifetime = datetime.fromisoformat(str(created["expires_at"])) - datetime.fromisoformat(
        str(created["created_at"])
    )
    assert lifetime == timedelta(hours=1)
    assert created["created_by"] == f"admin-token:{_bootstrap(client, admin_headers)['id']}"
    assert client.get("/v1/federations", headers=_bearer(token)).status_code == 200
    listing = client.get(TOKENS, headers=_bearer(token))
    assert [r["name"] for r in listing.json()["items"]] == ["bootstrap", "ci"]
    assert token not in listing.text
    _expire(app, str(created["id"]))
    refused = client.get("/v1/federations", headers=_bearer(token))
    problem = assert_problem(refused, 401, "token-expired")
    assert "expired at" in problem["detail"]
    assert "fedrec admin-tokens create" in problem["detail"]
    assert problem["admin_token_id"] == created["id"]
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    states = {
        r["id"]: r["state"] for r in client.get(TOKENS, headers=admin_headers).json()["items"]
    }
    assert states[created["id"]] == "expired"
    with _ctx(app).read_sessions() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.actor == f"admin-token:{created['id']}")
        ).all()
    assert [(e.action, e.detail["reason"]) for e in events] == [("auth-failure", "token-expired")]


def test_the_default_lifetime_comes_from_the_settings(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    app = create_app(
        settings.model_copy(update={"admin_token_ttl_seconds": 7200.0}), run_timer=False
    )
    with TestClient(app) as other:
        created = _create(other, admin_headers)
    lifetime = datetime.fromisoformat(str(created["expires_at"])) - datetime.fromisoformat(
        str(created["created_at"])
    )
    assert lifetime == timedelta(hours=2)


def test_a_revoked_token_is_refused_at_once_with_how_to_get_another(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    created = _create(client, admin_headers)
    token = str(created["token"])
    assert client.get("/v1/federations", headers=_bearer(token)).status_code == 200  # cached
    revoked = client.delete(f"{TOKENS}/{created['id']}", headers=admin_headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    problem = assert_problem(
        client.get("/v1/federations", headers=_bearer(token)), 401, "token-revoked"
    )
    assert "was revoked" in problem["detail"]
    assert "POST /v1/admin/tokens" in problem["detail"]
    # revoking twice changes nothing
    again = client.delete(f"{TOKENS}/{created['id']}", headers=admin_headers)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_the_last_active_admin_token_is_not_revoked(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    bootstrap = _bootstrap(client, admin_headers)
    problem = assert_problem(
        client.delete(f"{TOKENS}/{bootstrap['id']}", headers=admin_headers),
        409,
        "last-admin-token",
    )
    assert "create another" in problem["detail"]
    # rotation: create a new token, switch to it, revoke the old one
    new = _create(client, admin_headers, name="ops")
    response = client.delete(f"{TOKENS}/{bootstrap['id']}", headers=_bearer(str(new["token"])))
    assert response.status_code == 200, response.text
    problem = assert_problem(
        client.get("/v1/federations", headers=admin_headers), 401, "token-revoked"
    )
    assert "FEDREC_ADMIN_TOKEN" in problem["detail"]
    assert "restart" in problem["detail"]


def test_an_expired_bootstrap_token_says_how_to_rotate_it(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    _expire(app, str(_bootstrap(client, admin_headers)["id"]))
    problem = assert_problem(
        client.get("/v1/federations", headers=admin_headers), 401, "token-expired"
    )
    assert "bootstrap admin token" in problem["detail"]
    assert "data_dir/admin_token" in problem["detail"]
    assert "restart" in problem["detail"]


def test_a_new_bootstrap_token_revokes_the_one_before(
    settings: Settings, client: TestClient, admin_headers: dict[str, str]
) -> None:
    old_id = _bootstrap(client, admin_headers)["id"]
    rotated = "fra_rotated-admin-token-0123456789abcdef0123456789abcdef"
    new_settings = settings.model_copy(update={"admin_token": SecretStr(rotated)})
    with TestClient(create_app(new_settings, run_timer=False)) as restarted:
        assert_problem(
            restarted.get("/v1/federations", headers=admin_headers), 401, "token-revoked"
        )
        rows = restarted.get(TOKENS, headers=_bearer(rotated)).json()["items"]
    assert [(r["id"] == old_id, r["state"]) for r in rows] == [(True, "revoked"), (False, "active")]
    # a start with the old token again does not bring it back
    with TestClient(create_app(settings, run_timer=False)) as again:
        assert_problem(again.get("/v1/federations", headers=admin_headers), 401, "token-revoked")
        assert again.get("/v1/federations", headers=_bearer(rotated)).status_code == 200


def test_registering_the_bootstrap_token_again_changes_nothing(app: FastAPI) -> None:
    ctx = _ctx(app)
    first = register_bootstrap_token(ctx)
    second = register_bootstrap_token(ctx)
    assert (second.id, second.expires_at) == (first.id, first.expires_at)
    with ctx.read_sessions() as session:
        created = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "admin-token-create")
        ).all()
    assert len(created) == 1
    assert created[0].actor == "coordinator"


@pytest.mark.parametrize("seconds", [0, 59, 366 * 24 * 3600 + 1])
def test_a_lifetime_out_of_bounds_is_a_422(
    client: TestClient, admin_headers: dict[str, str], seconds: int
) -> None:
    response = client.post(
        TOKENS, json={"name": "x", "expires_in_seconds": seconds}, headers=admin_headers
    )
    problem = assert_problem(response, 422, "validation-error")
    assert "expires_in_seconds" in response.text, problem


def test_only_the_admin_manages_admin_tokens(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    assert_problem(client.get(TOKENS, headers=participant), 403, "forbidden")
    assert_problem(client.post(TOKENS, json={"name": "x"}, headers=participant), 403, "forbidden")
    assert_problem(client.get(TOKENS), 401, "unauthorized")
    assert_problem(
        client.delete(f"{TOKENS}/no-such-token", headers=admin_headers),
        404,
        "admin-token-not-found",
    )


def test_a_created_token_is_never_replayed_for_its_idempotency_key(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "create-ci-token"}
    first = client.post(TOKENS, json={"name": "ci"}, headers=headers)
    assert first.status_code == 201
    assert first.headers["Cache-Control"] == "no-store"
    replay = client.post(TOKENS, json={"name": "ci"}, headers=headers)
    assert_problem(replay, 409, "secret-not-replayable")
    assert str(first.json()["token"]) not in replay.text
