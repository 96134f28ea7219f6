"""Two coordinator processes (two apps) on one database: a token one of them authenticated
(and cached) stops working on it once the other revokes, re-enrols or refreshes it. Both
backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.auth import hash_token
from tests.factories import assert_problem, create_federation, enrol


@pytest.fixture
def first(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_timer=False)) as client:
        yield client


@pytest.fixture
def second(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, run_timer=False)
    with TestClient(app) as client:
        # re-read the generation on every request: the test needs no clock; the default
        # (0.5 s) bounds how late another process's revocation is honoured
        app.state.context.principals.check_seconds = 0.0
        yield client


def _current(client: TestClient, fid: str, headers: dict[str, str]) -> int:
    return client.get(f"/v1/federations/{fid}/rounds/current", headers=headers).status_code


def test_a_revocation_elsewhere_reaches_the_cache(
    first: TestClient, second: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(first, admin_headers)["id"]
    pid, token = enrol(first, admin_headers, fid)
    assert _current(second, fid, token) == 200
    assert len(second.app.state.context.principals) == 1  # type: ignore[attr-defined]
    assert _current(second, fid, token) == 200  # served from the cache
    response = first.delete(f"/v1/federations/{fid}/participants/{pid}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert_problem(
        second.get(f"/v1/federations/{fid}/rounds/current", headers=token),
        401,
        "participant-revoked",
    )
    # and in the process that revoked (it had cached the token too)
    assert_problem(
        first.get(f"/v1/federations/{fid}/rounds/current", headers=token),
        401,
        "participant-revoked",
    )


def test_a_reenrolment_elsewhere_retires_the_old_token(
    first: TestClient, second: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(first, admin_headers)["id"]
    pid, old = enrol(first, admin_headers, fid)
    assert _current(second, fid, old) == 200
    response = first.post(
        f"/v1/federations/{fid}/participants/{pid}/reenrol", headers=admin_headers
    )
    assert response.status_code in (200, 201), response.text
    new = {"Authorization": f"Bearer {response.json()['token']}"}
    assert_problem(
        second.get(f"/v1/federations/{fid}/rounds/current", headers=old), 401, "unauthorized"
    )
    assert _current(second, fid, new) == 200


def test_the_process_that_revokes_honours_it_at_once(
    first: TestClient, admin_headers: dict[str, str]
) -> None:
    # the default check interval: this process's own revocation needs no re-read
    fid = create_federation(first, admin_headers)["id"]
    pid, token = enrol(first, admin_headers, fid)
    assert _current(first, fid, token) == 200
    assert first.delete(
        f"/v1/federations/{fid}/participants/{pid}", headers=admin_headers
    ).is_success
    assert _current(first, fid, token) == 401


@pytest.mark.parametrize("seconds", [0.0, 90.0])
def test_the_cache_keeps_entries_as_long_as_configured(
    settings: Settings, admin_headers: dict[str, str], seconds: float
) -> None:
    """FEDREC_TOKEN_CACHE_SECONDS: how long an authenticated token is answered from
    memory (0: every request looks it up)."""
    app = create_app(settings.model_copy(update={"token_cache_seconds": seconds}), run_timer=False)
    with TestClient(app) as client:
        ctx = app.state.context
        assert ctx.principals.ttl_seconds == seconds
        fid = create_federation(client, admin_headers)["id"]
        _pid, token = enrol(client, admin_headers, fid)
        ctx.principals.check_seconds = 0.0  # the lookup re-reads the generation
        assert _current(client, fid, token) == 200
        ctx.principals.check_seconds = 3600.0  # ... which stays fresh for this check
        digest = hash_token(ctx.secret_key, token["Authorization"].removeprefix("Bearer "))
        assert (ctx.principals.get(digest) is not None) == (seconds > 0)
