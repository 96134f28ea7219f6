"""Hot routes (api/hot_routes.py): the fast-path routes answered without FastAPI's routing,
exactly where FastAPI would have picked them, under the app's exception handlers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

import coordinator.api.hot_routes as hot_routes
from coordinator.api.fast_path import FastPathRoute, fast_path
from coordinator.api.front_door import FrontDoor
from coordinator.api.hot_routes import HotRoutes
from tests.factories import create_federation, enrol, put_update, update_bytes


@pytest.fixture
def matched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths FastAPI's routing matched a route against (one entry per route tried)."""
    calls: list[str] = []
    from fastapi import routing

    original = routing.APIRoute.matches

    def counting(self: Any, scope: Any) -> Any:
        calls.append(scope["path"])
        return original(self, scope)

    monkeypatch.setattr(routing.APIRoute, "matches", counting)
    return calls


def test_participants_hot_requests_skip_fastapis_routing(
    client: TestClient, admin_headers: dict[str, str], matched: list[str]
) -> None:
    fid = create_federation(client, admin_headers, rounds={"min_participants": 2})["id"]
    _, participant = enrol(client, admin_headers, fid)
    matched.clear()
    current = f"/v1/federations/{fid}/rounds/current"
    assert client.get(current, headers=participant).status_code == 200
    assert client.get(f"{current}?after=1&wait=0.01", headers=participant).status_code == 200
    assert (
        client.get(f"/v1/federations/{fid}/models/0/weights", headers=participant).status_code
        == 200
    )
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    assert matched == []
    # the rest, and what a fast handler declines, is routed by FastAPI as before
    assert client.get(f"/v1/federations/{fid}", headers=participant).status_code == 200
    assert client.get(f"{current}?wait=-1", headers=participant).status_code == 422
    assert client.get(current).status_code == 401
    assert matched


def test_the_app_has_four_hot_routes_and_none_is_shadowed(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    client.get(f"/v1/federations/{fid}/rounds/current", headers=participant)
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, FrontDoor):  # built on the first request
        layer = layer.app
    table = layer.routed._hot
    assert table is not None
    assert sorted(hot.matcher.template or "" for hot in table) == [
        "/v1/federations/{federation_id}/models/{version}/weights",
        "/v1/federations/{federation_id}/rounds/current",
        "/v1/federations/{federation_id}/rounds/current/weights",
        "/v1/federations/{federation_id}/rounds/{number}/update",
    ]
    for hot in table:
        method = next(iter(hot.matcher.methods or ()))
        sample = (hot.matcher.template or "").replace("{federation_id}", "f")
        sample = sample.replace("{version}", "3").replace("{number}", "2")
        assert hot.matcher.full(method, sample)
        assert not any(shadow.full(method, sample) for shadow in hot.shadows)


# ------------------------------------------------------------------ a small app of its own


class _Refused(Exception):
    pass


def _small_app() -> FastAPI:
    async def fast(request: Request) -> Response | None:
        item = request.path_params["item"]
        if item == "decline":
            return None  # FastAPI's endpoint answers
        if item == "boom":
            raise _Refused(item)
        return PlainTextResponse(f"fast {item}")

    early = APIRouter()

    @early.get("/items/latest/weights")
    def latest() -> str:
        return "latest, by the earlier route"

    router = APIRouter(route_class=FastPathRoute)

    @router.get("/items/{item}/weights")
    @fast_path(fast)
    def weights(item: str) -> str:
        return f"generic {item}"

    app = FastAPI()

    async def refused(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"refused": str(exc)}, status_code=409)

    app.add_exception_handler(_Refused, refused)
    app.include_router(early, prefix="/v1")
    app.include_router(router, prefix="/v1")
    app.add_middleware(HotRoutes)
    return app


async def test_an_earlier_route_keeps_its_requests_and_handlers_map_exceptions() -> None:
    app = _small_app()
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/v1/items/7/weights")).text == "fast 7"
        # FastAPI picks the literal route declared first: so does the dispatcher
        assert (await client.get("/v1/items/latest/weights")).json() == (
            "latest, by the earlier route"
        )
        # declined: FastAPI's own handler for the same route
        assert (await client.get("/v1/items/decline/weights")).json() == "generic decline"
        # an exception out of the fast handler meets the app's exception handlers
        boom = await client.get("/v1/items/boom/weights")
        assert boom.status_code == 409
        assert boom.json() == {"refused": "boom"}
        # another method is not the hot route's: FastAPI answers (405)
        assert (await client.post("/v1/items/7/weights")).status_code == 405


async def test_switched_off_fast_paths_are_not_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FastPathRoute, "enabled", False)
    app = _small_app()
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/v1/items/7/weights")).json() == "generic 7"


def test_templates_that_differ_in_a_literal_segment_do_not_overlap() -> None:
    import re

    def matcher(template: str) -> Any:
        return hot_routes._Matcher(re.compile("^$"), frozenset({"GET"}), template)

    hot = matcher("/f/{fid}/rounds/current")
    assert hot_routes._may_overlap(matcher("/f/{fid}/rounds/{number}"), hot)
    assert not hot_routes._may_overlap(matcher("/f/{fid}/models/{version}"), hot)
    assert not hot_routes._may_overlap(matcher("/f/{fid}/rounds"), hot)
    assert hot_routes._may_overlap(hot_routes._Matcher(re.compile("^/f/"), None, None), hot)
    post = hot_routes._Matcher(re.compile("^$"), frozenset({"POST"}), "/f/{fid}/rounds/{n}")
    assert not hot_routes._may_overlap(post, hot)
