"""The async client: parity with the sync one, and its main flows."""

from __future__ import annotations

import hashlib
import inspect

import httpx
import numpy as np
import pytest

import participant_sdk as sdk
from participant_sdk import AsyncClient, Client
from participant_sdk.wire import decode_update, encode_weights, mf_spec

from .fake_coordinator import (
    BASE_URL,
    FID,
    TOKEN,
    FakeCoordinator,
    federation_json,
    model_version_json,
    participant_json,
    problem,
    receipt_json,
    respond,
    round_json,
    signed_weights_headers,
)

FED = f"/v1/federations/{FID}"
RESOURCES = [
    "federations",
    "participants",
    "rounds",
    "models",
    "updates",
    "evaluations",
    "deployment",
]
# Lifecycle differs by design: ``close`` vs ``aclose`` (httpx naming), sync vs async context.
SYNC_ONLY = {"close"}
ASYNC_ONLY = {"aclose"}


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _client_pair() -> tuple[Client, AsyncClient]:
    return Client(BASE_URL, TOKEN), AsyncClient(BASE_URL, TOKEN)


class TestParity:
    def test_clients_have_the_same_public_api(self) -> None:
        sync_api = {n for n in dir(Client) if not n.startswith("_")} - SYNC_ONLY
        async_api = {n for n in dir(AsyncClient) if not n.startswith("_")} - ASYNC_ONLY
        assert sync_api == async_api
        assert set(RESOURCES) <= sync_api

    def test_client_methods_have_the_same_signatures(self) -> None:
        sync_methods = _public_methods(Client)
        async_methods = _public_methods(AsyncClient)
        for name in sync_methods.keys() - SYNC_ONLY:
            assert async_methods[name].parameters == sync_methods[name].parameters, name

    @pytest.mark.parametrize("resource", RESOURCES)
    async def test_resources_have_the_same_methods(self, resource: str) -> None:
        client, aclient = _client_pair()
        with client:
            async with aclient:
                sync_cls = type(getattr(client, resource))
                async_cls = type(getattr(aclient, resource))
        assert async_cls.__name__ == f"Async{sync_cls.__name__}"
        sync_methods = _public_methods(sync_cls)
        async_methods = _public_methods(async_cls)
        assert sync_methods, resource
        assert sync_methods.keys() == async_methods.keys()
        for name, signature in sync_methods.items():
            async_signature = async_methods[name]
            assert async_signature.parameters == signature.parameters, f"{resource}.{name}"
            assert not inspect.iscoroutinefunction(getattr(sync_cls, name)), name
            assert inspect.iscoroutinefunction(getattr(async_cls, name)), name

    def test_api_methods_of_async_client_are_coroutines(self) -> None:
        for name in ("health", "metrics", "aclose"):
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


class TestAsyncClient:
    async def test_context_manager_closes_its_own_http_client(self, fake: FakeCoordinator) -> None:
        async with AsyncClient(BASE_URL, TOKEN, transport=fake.transport) as client:
            assert not client.is_closed
        assert client.is_closed

    async def test_leaves_injected_http_client_open(self, fake: FakeCoordinator) -> None:
        fake.add("GET", "/healthz", respond(200, {"status": "ok"}))
        async with httpx.AsyncClient(transport=fake.transport) as http:
            async with AsyncClient(BASE_URL, TOKEN, http_client=http) as client:
                assert (await client.health()).status == "ok"
            assert not http.is_closed

    async def test_rejects_sync_http_client(self) -> None:
        with httpx.Client() as http, pytest.raises(TypeError, match="AsyncClient"):
            AsyncClient(BASE_URL, TOKEN, http_client=http)  # type: ignore[arg-type]

    async def test_with_options(self, aclient: AsyncClient) -> None:
        copy = aclient.with_options(max_retries=0, timeout=None)
        assert (copy.max_retries, copy.timeout) == (0, None)
        assert copy._http is aclient._http
        await copy.aclose()
        assert not aclient.is_closed

    async def test_participant_round_trip(
        self, aclient: AsyncClient, fake: FakeCoordinator
    ) -> None:
        weights = encode_weights(
            {"item_factors": np.zeros((4, 2), np.float32), "item_bias": np.zeros(4, np.float32)}
        )
        etag = f'"{hashlib.sha256(weights).hexdigest()}"'
        fake.add("GET", f"{FED}/participants/me", respond(200, participant_json()))
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(1)))
        fake.add(
            "GET",
            f"{FED}/models/0/weights",
            respond(200, content=weights, headers=signed_weights_headers(weights, version=0)),
            respond(304),
        )
        fake.add("PUT", f"{FED}/rounds/1/update", respond(201, receipt_json(1)))

        assert (await aclient.participants.me(FID)).name == "shop-a"
        current = await aclient.rounds.current(FID)
        base = await aclient.models.weights(FID, current.base_version)
        again = await aclient.models.weights(FID, current.base_version)
        assert again.keys() == base.keys()
        deltas = {name: np.ones_like(array) for name, array in base.items()}
        receipt = await aclient.updates.submit(
            FID, current.number, deltas, base_version=current.base_version, num_examples=9
        )
        assert receipt.update_id == "u-1"

        weights_requests = fake.requests_to("GET", f"{FED}/models/0/weights")
        assert weights_requests[1].headers["If-None-Match"] == etag
        upload = fake.requests_to("PUT", f"{FED}/rounds/1/update")[0]
        assert upload.headers["Content-Type"] == "application/octet-stream"
        assert upload.headers["Authorization"] == f"Bearer {TOKEN}"
        assert decode_update(upload.content, mf_spec(num_items=4, dim=2)).num_examples == 9

    async def test_admin_calls(self, aclient: AsyncClient, fake: FakeCoordinator) -> None:
        fake.add("POST", "/v1/federations", respond(201, federation_json()))
        fake.add(
            "POST",
            f"{FED}/participants",
            respond(201, {**participant_json(), "token": "tok"}),
        )
        fake.add("POST", f"{FED}/rounds/1/aggregate", respond(201, model_version_json(1)))
        fake.add("GET", f"{FED}/metrics", respond(200, {"items": []}))
        federation = await aclient.federations.create(
            "movies", {"kind": "mf", "num_items": 4, "dim": 2}
        )
        enrolled = await aclient.participants.enrol(federation.id, "shop-a")
        version = await aclient.rounds.aggregate(federation.id, 1)
        assert enrolled.token == "tok"
        assert version.version == 1
        assert await aclient.metrics(federation.id) == []

    async def test_wait_for_next(
        self, aclient: AsyncClient, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add(
            "GET",
            f"{FED}/rounds/current",
            respond(200, round_json(1, "aggregating")),
            respond(200, round_json(2)),
        )
        fake.add("GET", FED, respond(200, federation_json()))
        new = await aclient.rounds.wait_for_next(FID, 1, 300.0)
        assert new.number == 2
        assert sleeps == [1.0]

    async def test_wait_for_next_times_out(
        self, aclient: AsyncClient, fake: FakeCoordinator
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(1)))
        fake.add("GET", FED, respond(200, federation_json()))
        with pytest.raises(sdk.WaitTimeoutError):
            await aclient.rounds.wait_for_next(FID, 1, 0)

    async def test_error_mapping(self, aclient: AsyncClient, fake: FakeCoordinator) -> None:
        fake.add(
            "POST",
            f"{FED}/rounds/2/aggregate",
            problem(409, "no-updates", "round 2 has no updates"),
        )
        with pytest.raises(sdk.NoUpdatesError, match="round 2 has no updates"):
            await aclient.rounds.aggregate(FID, 2)
