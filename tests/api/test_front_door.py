"""The front door (api/front_door.py): one middleware does what six did, in their order.

Each refusal comes from a different stage (overload shedding, admission control, the
anonymous body limit, the body's size limit); every one of them, like every answer, carries
the request's id and is counted by route template; a GET never enters the idempotency
layer, a keyed POST does and replays.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api.front_door import FrontDoor
from coordinator.api.idempotency import IdempotencyMiddleware
from coordinator.api.overload import Shedding
from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import federations as domain_federations
from tests.factories import assert_problem, create_federation, enrol, federation_body

FEDERATIONS = "/v1/federations"
UPLOAD = "/v1/federations/{federation_id}/rounds/{number}/update"


def _requests(client: TestClient, admin: dict[str, str], route: str, status: int) -> float:
    text = client.get("/metrics", headers=admin).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fedrec_http_requests_total"
        and sample.labels.get("route") == route
        and sample.labels.get("status") == str(status)
    )


def _with_id(request_id: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Request-ID": request_id}


def test_the_app_has_one_middleware_of_its_own(settings: Settings) -> None:
    app = create_app(settings, run_timer=False)
    (front,) = app.user_middleware
    assert getattr(front.cls, "__name__", None) == FrontDoor.__name__


def test_each_stage_refuses_with_the_request_id_and_is_counted(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    app = create_app(
        settings.model_copy(update={"anonymous_rate_burst": 1, "anonymous_rate_per_second": 0.001}),
        run_timer=False,
    )
    (front,) = app.user_middleware
    shedding = front.kwargs["shedding"]
    assert isinstance(shedding, Shedding)
    with TestClient(app) as client:
        fid = create_federation(client, admin_headers)["id"]
        _, participant = enrol(client, admin_headers, fid)
        # counters are per process: other tests' requests may have moved them before
        counted = ((FEDERATIONS, 503), (FEDERATIONS, 413), (UPLOAD, 413))
        before = {key: _requests(client, admin_headers, *key) for key in counted}

        # overload shedding: a process at its bound refuses before anything else
        shedding.max_in_flight, shedding.in_flight = 1, 1
        shed = client.get(FEDERATIONS, headers=_with_id("shed-1", admin_headers))
        shedding.max_in_flight, shedding.in_flight = 0, 0
        assert_problem(shed, 503, "overloaded")
        assert shed.headers["X-Request-ID"] == "shed-1"

        # the body's size limit, for an authenticated caller (declared too large)
        too_big = b"\0" * (settings.max_upload_bytes + 1)
        limited = client.put(
            f"/v1/federations/{fid}/rounds/1/update",
            content=too_big,
            headers=_with_id("big-1", {**participant, "Content-Type": "application/octet-stream"}),
        )
        assert_problem(limited, 413, "payload-too-large")
        assert "FEDREC_MAX_UPLOAD_BYTES" in limited.json()["detail"]
        assert limited.headers["X-Request-ID"] == "big-1"

        # the anonymous body limit: without a token, a few kilobytes at most
        anonymous = client.post(
            FEDERATIONS,
            content=b"{" + b" " * (settings.anonymous_max_body_bytes + 1) + b"}",
            headers=_with_id("anon-1", {"Content-Type": "application/json"}),
        )
        assert_problem(anonymous, 413, "payload-too-large")
        assert "FEDREC_ANONYMOUS_MAX_BODY_BYTES" in anonymous.json()["detail"]
        assert anonymous.headers["X-Request-ID"] == "anon-1"

        # admission control: the address's anonymous bucket (burst 1, spent above) is empty
        throttled = client.get(FEDERATIONS, headers=_with_id("slow-1"))
        assert_problem(throttled, 429, "too-many-requests")
        assert int(throttled.headers["Retry-After"]) >= 1
        assert throttled.headers["X-Request-ID"] == "slow-1"

        for key in counted:
            assert _requests(client, admin_headers, *key) == before[key] + 1, key
        assert _requests(client, admin_headers, FEDERATIONS, 429) >= 1
    # every place taken was given back
    assert shedding.in_flight == 0
    assert shedding.long_polls == 0


def test_only_keyed_methods_enter_the_idempotency_layer(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[str] = []
    original = IdempotencyMiddleware.__call__

    async def counting(self: IdempotencyMiddleware, scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["method"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(IdempotencyMiddleware, "__call__", counting)
    assert client.get(FEDERATIONS, headers=admin_headers).status_code == 200
    assert entered == []
    keyed = {**admin_headers, "Idempotency-Key": "front-door-1"}
    first = client.post(FEDERATIONS, json=federation_body(name="keyed"), headers=keyed)
    again = client.post(FEDERATIONS, json=federation_body(name="keyed"), headers=keyed)
    assert first.status_code == 201, first.text
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert entered == ["POST", "POST"]


def test_an_exception_out_of_a_route_is_counted_as_a_500(
    settings: Settings, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No response started inside the front door: it records 500 for the route, and the
    place the request took is given back."""

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(domain_federations, "list_federations", broken)
    app = create_app(settings, run_timer=False)
    (front,) = app.user_middleware
    with TestClient(app, raise_server_exceptions=False) as client:
        before = _requests(client, admin_headers, FEDERATIONS, 500)
        answer = client.get(FEDERATIONS, headers=_with_id("oops-1", admin_headers))
        assert answer.status_code == 500
        assert _requests(client, admin_headers, FEDERATIONS, 500) == before + 1
    shedding = front.kwargs["shedding"]
    assert isinstance(shedding, Shedding)
    assert shedding.in_flight == 0
