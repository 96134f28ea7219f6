"""The authorisation matrix: every route of the app x every kind of caller.

``ACCESS`` classifies each route; :func:`test_every_route_is_classified` derives the
routes from ``app.routes`` and fails until a new route is added here, so no route can
escape the matrix. Each (route, caller) pair is then called: a caller the route does
not admit gets exactly 401 (no valid token) or 403; a caller it admits is never
answered 401, 403 or a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.api import examples
from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.factories import federation_body, update_bytes

# who may call a route:
# public   - anyone, without a token
# any      - any valid token (a participant sees only its own federation)
# member   - the admin, or a participant of the federation in the path
# admin    - the admin only
# self     - a participant of the federation in the path only (the admin gets 403)
ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    # the scrape token (FEDREC_METRICS_TOKEN) is admitted too: test_metrics_scrape_token
    ("GET", "/metrics"): "admin",
    ("GET", "/v1/signing-key"): "any",
    ("GET", "/v1/audit"): "admin",
    ("POST", "/v1/admin/tokens"): "admin",
    ("GET", "/v1/admin/tokens"): "admin",
    ("DELETE", "/v1/admin/tokens/{token_id}"): "admin",
    ("POST", "/v1/federations/{federation_id}/participants/me/token"): "self",
    # the dashboard: a session cookie in a browser; every page also takes the Bearer header
    # the matrix sends (a cookie session is the same principal, checked in tests/dashboard)
    ("GET", "/signin"): "public",
    ("POST", "/signin"): "public",  # the token is in the form, not the header
    ("POST", "/signout"): "any",
    ("GET", "/"): "any",
    ("GET", "/federations/{federation_id}"): "member",
    ("GET", "/federations/{federation_id}/lineage"): "member",
    ("POST", "/federations/{federation_id}/deployment"): "admin",
    ("POST", "/v1/federations"): "admin",
    ("GET", "/v1/federations"): "any",
    ("GET", "/v1/federations/{federation_id}"): "member",
    ("GET", "/v1/federations/{federation_id}/catalog"): "member",
    ("POST", "/v1/federations/{federation_id}/participants"): "admin",
    ("GET", "/v1/federations/{federation_id}/participants"): "admin",
    ("GET", "/v1/federations/{federation_id}/participants/me"): "self",
    ("DELETE", "/v1/federations/{federation_id}/participants/{participant_id}"): "admin",
    ("POST", "/v1/federations/{federation_id}/participants/{participant_id}/reenrol"): "admin",
    ("GET", "/v1/federations/{federation_id}/rounds/current"): "member",
    ("GET", "/v1/federations/{federation_id}/rounds/current/weights"): "member",
    ("GET", "/v1/federations/{federation_id}/rounds"): "member",
    ("GET", "/v1/federations/{federation_id}/rounds/{number}"): "member",
    ("PUT", "/v1/federations/{federation_id}/rounds/{number}/update"): "self",
    ("POST", "/v1/federations/{federation_id}/rounds/{number}/aggregate"): "admin",
    ("GET", "/v1/federations/{federation_id}/rounds/{number}/secagg"): "member",
    ("POST", "/v1/federations/{federation_id}/rounds/{number}/secagg/keys"): "self",
    ("POST", "/v1/federations/{federation_id}/rounds/{number}/secagg/shares"): "self",
    ("POST", "/v1/federations/{federation_id}/rounds/{number}/secagg/masked-input"): "self",
    ("POST", "/v1/federations/{federation_id}/rounds/{number}/secagg/unmask"): "self",
    ("GET", "/v1/federations/{federation_id}/models"): "member",
    ("GET", "/v1/federations/{federation_id}/models/{version}"): "member",
    ("GET", "/v1/federations/{federation_id}/models/{version}/weights"): "member",
    ("POST", "/v1/federations/{federation_id}/models/{version}/evaluations"): "self",
    ("GET", "/v1/federations/{federation_id}/metrics"): "member",
    ("GET", "/v1/federations/{federation_id}/deployment"): "member",
    ("POST", "/v1/federations/{federation_id}/deployment"): "admin",
}
CALLERS = ("anonymous", "bad-token", "revoked", "other-federation", "participant", "admin")
ADMITTED = {
    "public": set(CALLERS),
    "any": {"other-federation", "participant", "admin"},
    "member": {"participant", "admin"},
    "admin": {"admin"},
    "self": {"participant"},
}


def _flatten(routes: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers (FastAPI keeps them nested)."""
    for route in routes:
        nested = getattr(route, "effective_candidates", None)
        if nested is not None:
            yield from _flatten(nested())
            continue
        original = getattr(route, "original_route", route)
        for method in getattr(route, "methods", None) or getattr(original, "methods", None) or ():
            if method != "HEAD":
                yield method, route.path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """One app on SQLite with a federation and a caller of every kind."""
    tmp: Path = tmp_path_factory.mktemp("authz")
    url = f"sqlite:///{tmp / 'fedrec.db'}"
    upgrade(url)
    settings = Settings(
        environment="test",
        data_dir=tmp / "data",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        # the matrix sends hundreds of unauthenticated requests as fast as the app answers:
        # the per-address throttles (tested on their own) would turn its 401s into 429s
        anonymous_rate_per_second=0,
        auth_failure_rate_per_second=0,
        _env_file=None,
    )
    app: FastAPI = create_app(settings, run_timer=False)
    with TestClient(app) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def federation() -> str:
            return str(
                client.post("/v1/federations", json=federation_body(), headers=admin).json()["id"]
            )

        def enrol(fid: str, name: str) -> dict[str, str]:
            body = client.post(
                f"/v1/federations/{fid}/participants", json={"name": name}, headers=admin
            ).json()
            return {"id": body["id"], "auth": f"Bearer {body['token']}"}

        fid, other = federation(), federation()
        member, victim, revoked = enrol(fid, "member"), enrol(fid, "victim"), enrol(fid, "gone")
        outsider = enrol(other, "outsider")
        client.delete(f"/v1/federations/{fid}/participants/{revoked['id']}", headers=admin)
        auth = {
            "anonymous": None,
            "bad-token": "Bearer frp_not-a-token",
            "revoked": revoked["auth"],
            "other-federation": outsider["auth"],
            "participant": member["auth"],
            "admin": f"Bearer {ADMIN_TOKEN}",
        }
        yield client, {"fid": fid, "victim": victim["id"], "auth": auth}


def test_every_route_is_classified(world: tuple[TestClient, dict]) -> None:
    client, _ = world
    routes = set(_flatten(client.app.routes))  # type: ignore[attr-defined]
    assert len(routes) >= 20
    assert routes == set(ACCESS), (
        f"classify these routes in ACCESS: {sorted(routes - set(ACCESS))}; "
        f"no longer routes: {sorted(set(ACCESS) - routes)}"
    )


def _request(route: tuple[str, str], known: dict) -> dict[str, Any]:
    method, template = route
    path = template.format(
        federation_id=known["fid"],
        participant_id=known["victim"],
        number=1,
        version=0,
        token_id="no-such-admin-token",
    )
    kwargs: dict[str, Any] = {"method": method, "url": path}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    if not template.startswith("/v1/") and method == "POST":  # the dashboard's forms
        fields = {"/signin": f"token={ADMIN_TOKEN}", "/signout": ""}
        kwargs["content"] = fields.get(template, "version=0")
        kwargs["headers"] = form
    elif template.endswith("/update"):
        kwargs["content"] = update_bytes()
        kwargs["headers"] = {"Content-Type": "application/octet-stream"}
    elif "/secagg/" in template:
        kind = template.rsplit("/", 1)[1]
        kwargs["json"] = {
            "keys": examples.SECAGG_KEYS,
            "shares": examples.SECAGG_SHARES,
            "masked-input": examples.SECAGG_MASKED_INPUT,
            "unmask": examples.SECAGG_UNMASK,
        }[kind]
    elif template.endswith("/evaluations"):
        kwargs["json"] = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 1}
    elif template.endswith("/deployment") and method == "POST":
        kwargs["json"] = {"version": 0}
    elif method == "POST" and template == "/v1/federations":
        kwargs["json"] = federation_body()
    elif method == "POST" and (template.endswith("/participants") or template.endswith("/tokens")):
        kwargs["json"] = {"name": "new"}
    return kwargs


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(ACCESS), ids=lambda r: f"{r[0]} {r[1]}")
def test_matrix(world: tuple[TestClient, dict], route: tuple[str, str], caller: str) -> None:
    client, known = world
    kwargs = _request(route, known)
    token = known["auth"][caller]
    headers = {**kwargs.pop("headers", {}), **({"Authorization": token} if token else {})}
    client.cookies.clear()  # the caller is its header alone, never an earlier sign-in
    response = client.request(**kwargs, headers=headers, follow_redirects=False)
    if caller in ADMITTED[ACCESS[route]]:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    elif caller in ("anonymous", "bad-token", "revoked"):
        assert response.status_code == 401, response.text
    else:
        assert response.status_code == 403, response.text


def test_metrics_scrape_token(tmp_path: Path) -> None:
    """The scrape token opens /metrics and nothing else (it is not an admin token)."""
    url = f"sqlite:///{tmp_path / 'fedrec.db'}"
    upgrade(url)
    settings = Settings(
        environment="test",
        data_dir=tmp_path / "data",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        metrics_token="scrape-" + "x" * 32,
        _env_file=None,
    )
    scrape = {"Authorization": "Bearer scrape-" + "x" * 32}
    with TestClient(create_app(settings, run_timer=False)) as client:
        assert client.get("/metrics", headers=scrape).status_code == 200
        assert client.get("/v1/federations", headers=scrape).status_code == 401
        assert client.get("/v1/audit", headers=scrape).status_code == 401
        assert client.get("/", headers=scrape).status_code == 401
