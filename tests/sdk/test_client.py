"""The sync client against a scripted coordinator: paths, headers, bodies and parsing."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from participant_sdk import (
    DEFAULT_TIMEOUT,
    NOT_GIVEN,
    APIResponseValidationError,
    Client,
    FedrecError,
    ModelSignatureError,
    ModelSpec,
    NotGiven,
    RoundPolicy,
    StrategySpec,
    WaitTimeoutError,
)
from participant_sdk._constants import LONG_POLL_READ_MARGIN, USER_AGENT
from participant_sdk.wire import decode_update, encode_weights, mf_spec

from .fake_coordinator import (
    BASE_URL,
    FID,
    TOKEN,
    TS,
    FakeCoordinator,
    federation_json,
    model_version_json,
    participant_json,
    receipt_json,
    respond,
    round_json,
    signed_weights_headers,
)

FED = f"/v1/federations/{FID}"


def _weights_payload(num_items: int = 4, dim: int = 2) -> tuple[bytes, str]:
    data = encode_weights(
        {
            "item_factors": np.arange(num_items * dim, dtype=np.float32).reshape(num_items, dim),
            "item_bias": np.ones(num_items, dtype=np.float32),
        }
    )
    return data, f'"{hashlib.sha256(data).hexdigest()}"'


def _json(request: httpx.Request) -> object:
    return json.loads(request.content)


class TestConstruction:
    def test_env_fallbacks(self, monkeypatch: pytest.MonkeyPatch, fake: FakeCoordinator) -> None:
        monkeypatch.setenv("FEDREC_URL", "http://from-env:9000/")
        monkeypatch.setenv("FEDREC_TOKEN", "env-token")
        fake.add("GET", "/healthz", respond(200, {"status": "ok"}))
        with Client(transport=fake.transport) as client:
            assert client.base_url == "http://from-env:9000"
            assert client.health().status == "ok"
        request = fake.requests[0]
        assert str(request.url) == "http://from-env:9000/healthz"
        assert request.headers["Authorization"] == "Bearer env-token"

    def test_arguments_win_over_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FEDREC_URL", "http://from-env")
        monkeypatch.setenv("FEDREC_TOKEN", "env-token")
        with Client(BASE_URL, TOKEN) as client:
            assert client.base_url == BASE_URL
            assert client._token == TOKEN

    @pytest.mark.parametrize("missing", ["FEDREC_URL", "FEDREC_TOKEN"])
    def test_missing_url_or_token(self, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
        monkeypatch.setenv("FEDREC_URL", BASE_URL)
        monkeypatch.setenv("FEDREC_TOKEN", TOKEN)
        monkeypatch.delenv(missing)
        with pytest.raises(FedrecError, match=missing):
            Client()

    def test_http_client_and_transport_are_exclusive(self, fake: FakeCoordinator) -> None:
        with (
            httpx.Client() as http,
            pytest.raises(ValueError, match="http_client or transport"),
        ):
            Client(BASE_URL, TOKEN, http_client=http, transport=fake.transport)

    def test_rejects_async_http_client(self) -> None:
        http = httpx.AsyncClient()
        with pytest.raises(TypeError, match="httpx.Client"):
            Client(BASE_URL, TOKEN, http_client=http)  # type: ignore[arg-type]

    def test_negative_max_retries(self) -> None:
        with pytest.raises(ValueError, match="max_retries"):
            Client(BASE_URL, TOKEN, max_retries=-1)

    def test_repr_hides_token(self) -> None:
        with Client(BASE_URL, TOKEN) as client:
            assert TOKEN not in repr(client)
            assert BASE_URL in repr(client)

    def test_context_manager_closes_its_own_http_client(self, fake: FakeCoordinator) -> None:
        with Client(BASE_URL, TOKEN, transport=fake.transport) as client:
            assert not client.is_closed
        assert client.is_closed

    def test_context_manager_leaves_injected_http_client_open(self, fake: FakeCoordinator) -> None:
        fake.add("GET", "/healthz", respond(200, {"status": "ok"}))
        with httpx.Client(transport=fake.transport, base_url="http://ignored") as http:
            with Client(BASE_URL, TOKEN, http_client=http) as client:
                client.health()
            assert not http.is_closed
        # the SDK builds absolute URLs: the injected client's base_url does not apply
        assert str(fake.requests[0].url) == f"{BASE_URL}/healthz"

    def test_resources_are_cached(self, client: Client) -> None:
        assert client.rounds is client.rounds
        assert client.models is client.models


class TestWithOptions:
    def test_copy_overrides_and_shares(self, client: Client) -> None:
        copy = client.with_options(max_retries=7, timeout=3.0)
        assert (copy.max_retries, copy.timeout) == (7, 3.0)
        assert (client.max_retries, client.timeout) == (2, DEFAULT_TIMEOUT)
        assert copy._http is client._http
        assert copy._weights_cache is client._weights_cache
        assert copy._sleep is client._sleep
        assert copy.base_url == client.base_url

    def test_closing_the_copy_keeps_the_pool(self, client: Client) -> None:
        copy = client.with_options(max_retries=0)
        copy.close()
        assert not client.is_closed

    def test_not_given_keeps_values(self, client: Client) -> None:
        copy = client.with_options()
        assert (copy.max_retries, copy.timeout) == (client.max_retries, client.timeout)


class TestRequests:
    def test_default_headers(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds", respond(200, {"items": []}))
        client.rounds.list(FID)
        headers = fake.requests[0].headers
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Accept"] == "application/json"
        assert headers["User-Agent"] == USER_AGENT
        assert "Idempotency-Key" not in headers  # GETs are idempotent by nature

    def test_default_timeout(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds", respond(200, {"items": []}))
        client.rounds.list(FID)
        timeout = fake.requests[0].extensions["timeout"]
        assert timeout == {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 60.0}

    def test_per_call_timeout_none_differs_from_not_given(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("GET", f"{FED}/rounds", respond(200, {"items": []}))
        client.rounds.list(FID, timeout=None)
        client.rounds.list(FID, timeout=NOT_GIVEN)
        client.rounds.list(FID, timeout=2.5)
        none, default, short = (r.extensions["timeout"] for r in fake.requests)
        assert none == {"connect": None, "read": None, "write": None, "pool": None}
        assert default["read"] == 60.0
        assert short == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}

    def test_not_given_is_a_falsy_singleton(self) -> None:
        assert NotGiven() is NOT_GIVEN
        assert not NOT_GIVEN
        assert repr(NOT_GIVEN) == "NOT_GIVEN"

    def test_ids_are_quoted_as_one_path_segment(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("GET", "/v1/federations/a%2F..%2Fb", respond(200, federation_json()))
        client.federations.get("a/../b")
        assert fake.requests[0].url.raw_path == b"/v1/federations/a%2F..%2Fb"

    def test_base_url_with_path_prefix(self, fake: FakeCoordinator) -> None:
        fake.add("GET", "/fedrec/healthz", respond(200, {"status": "ok"}))
        with Client(f"{BASE_URL}/fedrec/", TOKEN, transport=fake.transport) as client:
            client.health()
        assert fake.requests[0].url.path == "/fedrec/healthz"

    def test_non_json_success_body(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, content=b"<html>"))
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            client.rounds.current(FID)

    def test_body_that_breaks_the_contract(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, {"number": "x"}))
        with pytest.raises(APIResponseValidationError, match="Round") as excinfo:
            client.rounds.current(FID)
        assert excinfo.value.status_code == 200
        assert excinfo.value.body == {"number": "x"}


class TestFederations:
    def test_options_set_to_none_on_purpose_are_sent_as_null(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("POST", "/v1/federations", respond(201, federation_json()))
        client.federations.create(
            "secure",
            ModelSpec(kind="mf", num_items=4, dim=2),
            strategy=StrategySpec(weighting="uniform", update_norm_clip=None),
            rounds=RoundPolicy(max_rounds=5, deadline_seconds=None),
        )
        body = _json(fake.requests[0])
        assert isinstance(body, dict)
        # the coordinator's default clip (10,000) is what secure aggregation refuses
        assert body["strategy"] == {"weighting": "uniform", "update_norm_clip": None}
        assert body["rounds"] == {"max_rounds": 5, "deadline_seconds": None}
        assert "privacy" not in body

    def test_create_sends_only_given_options(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("POST", "/v1/federations", respond(201, federation_json()))
        federation = client.federations.create(
            "movies",
            ModelSpec(kind="mf", num_items=4, dim=2),
            rounds=RoundPolicy(min_participants=2, max_rounds=5),
            catalog=["a", "b", "c", "d"],
            target={"metric": "ndcg@10", "value": 0.05},
        )
        request = fake.requests[0]
        assert request.headers["Content-Type"] == "application/json"
        assert _json(request) == {
            "name": "movies",
            "model": {"kind": "mf", "num_items": 4, "dim": 2},
            "rounds": {"min_participants": 2, "max_rounds": 5},
            "target": {"metric": "ndcg@10", "value": 0.05},
            "catalog": ["a", "b", "c", "d"],
        }
        uuid.UUID(request.headers["Idempotency-Key"])
        assert federation.id == FID
        assert federation.model.num_items == 4
        assert federation.state == "active"

    def test_list_get_catalog(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", "/v1/federations", respond(200, {"items": [federation_json()]}))
        fake.add("GET", FED, respond(200, federation_json()))
        fake.add("GET", f"{FED}/catalog", respond(200, {"items": ["m1", "m2"]}))
        assert [f.id for f in client.federations.list()] == [FID]
        assert client.federations.get(FID).current_round == 1
        assert client.federations.catalog(FID) == ["m1", "m2"]

    def test_unknown_fields_are_kept(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", FED, respond(200, {**federation_json(), "shiny_new_field": 42}))
        federation = client.federations.get(FID)
        assert federation.model_extra == {"shiny_new_field": 42}


class TestParticipants:
    def test_enrol(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add(
            "POST",
            f"{FED}/participants",
            respond(201, {**participant_json(), "token": "secret-participant-token"}),
        )
        enrolled = client.participants.enrol(FID, "shop-a")
        assert _json(fake.requests[0]) == {"name": "shop-a"}
        assert enrolled.token == "secret-participant-token"
        assert "secret-participant-token" not in repr(enrolled)

    def test_list_me_revoke(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/participants", respond(200, {"items": [participant_json()]}))
        fake.add("GET", f"{FED}/participants/me", respond(200, participant_json()))
        fake.add("DELETE", f"{FED}/participants/p-1", respond(200, participant_json("revoked")))
        assert [p.name for p in client.participants.list(FID)] == ["shop-a"]
        assert client.participants.me(FID).id == "p-1"
        assert client.participants.revoke(FID, "p-1").state == "revoked"
        assert "Idempotency-Key" in fake.requests[-1].headers


class TestRounds:
    def test_current_list_get(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(3)))
        fake.add("GET", f"{FED}/rounds", respond(200, {"items": [round_json(1), round_json(2)]}))
        fake.add("GET", f"{FED}/rounds/2", respond(200, round_json(2, "closed")))
        current = client.rounds.current(FID)
        assert current.number == 3
        assert not fake.requests[0].url.params
        assert [r.number for r in client.rounds.list(FID)] == [1, 2]
        assert client.rounds.get(FID, 2).state == "closed"

    def test_long_poll_params_and_read_timeout(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(4)))
        client.rounds.current(FID, wait=55, after=3)
        request = fake.requests[0]
        assert dict(request.url.params) == {"wait": "55", "after": "3"}
        timeout = request.extensions["timeout"]
        assert timeout["read"] == 55 + LONG_POLL_READ_MARGIN
        assert timeout["connect"] == 5.0

    def test_long_poll_wait_is_capped_at_60(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(4)))
        client.rounds.current(FID, wait=600, after=3)
        assert fake.requests[0].url.params["wait"] == "60"
        assert fake.requests[0].extensions["timeout"]["read"] > 60

    def test_long_poll_keeps_a_longer_read_timeout(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(4)))
        client.rounds.current(FID, wait=5, after=3, timeout=120.0)
        assert fake.requests[0].extensions["timeout"]["read"] == 120.0

    def test_aggregate(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("POST", f"{FED}/rounds/2/aggregate", respond(201, model_version_json(2)))
        version = client.rounds.aggregate(FID, 2)
        assert version.version == 2
        assert version.parent == 1
        assert fake.requests[0].content == b""


class TestWaitForNext:
    def test_polls_until_a_newer_round(
        self, client: Client, fake: FakeCoordinator, sleeps: list[float]
    ) -> None:
        fake.add(
            "GET",
            f"{FED}/rounds/current",
            respond(200, round_json(2, "aggregating")),
            respond(200, round_json(2, "aggregating")),
            respond(200, round_json(3)),
        )
        fake.add("GET", FED, respond(200, federation_json()))
        new = client.rounds.wait_for_next(FID, after=2, timeout=600)
        assert new.number == 3
        polls = fake.requests_to("GET", f"{FED}/rounds/current")
        assert len(polls) == 3
        for poll in polls:
            assert poll.url.params["after"] == "2"
            assert int(poll.url.params["wait"]) == 60
            assert poll.extensions["timeout"]["read"] > 60
        # the fake answers at once, unlike a long-poll: the client paced itself
        assert sleeps == [1.0, 1.0]

    def test_returns_the_last_round_once_completed(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(5, "closed")))
        fake.add("GET", FED, respond(200, federation_json("completed", None)))
        last = client.rounds.wait_for_next(FID, after=5, timeout=600)
        assert last.number == 5
        assert last.state == "closed"

    def test_times_out(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", f"{FED}/rounds/current", respond(200, round_json(2)))
        fake.add("GET", FED, respond(200, federation_json()))
        with pytest.raises(WaitTimeoutError, match="no round after 2") as excinfo:
            client.rounds.wait_for_next(FID, after=2, timeout=0)
        assert excinfo.value.after == 2
        assert isinstance(excinfo.value, TimeoutError)
        assert fake.requests_to("GET", f"{FED}/rounds/current")[0].url.params["wait"] == "0"

    def test_rejects_negative_timeout(self, client: Client) -> None:
        with pytest.raises(ValueError, match="timeout"):
            client.rounds.wait_for_next(FID, after=1, timeout=-1)


class TestModels:
    def test_list_and_get_latest(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add(
            "GET",
            f"{FED}/models",
            respond(200, {"items": [model_version_json(0), model_version_json(1)]}),
        )
        fake.add("GET", f"{FED}/models/latest", respond(200, model_version_json(1)))
        versions = client.models.list(FID)
        assert [v.version for v in versions] == [0, 1]
        assert versions[0].round is None
        assert versions[0].parent is None
        assert client.models.get(FID, "latest").version == 1

    def test_weights_are_revalidated_by_etag(self, client: Client, fake: FakeCoordinator) -> None:
        data, etag = _weights_payload()
        fake.add(
            "GET",
            f"{FED}/models/1/weights",
            respond(200, content=data, headers=signed_weights_headers(data, version=1)),
            respond(304, headers={"ETag": etag}),
        )
        first = client.models.weights(FID, 1)
        second = client.models.weights(FID, 1)
        first_request, second_request = fake.requests
        assert first_request.headers["Accept"] == "application/octet-stream"
        assert "If-None-Match" not in first_request.headers
        assert second_request.headers["If-None-Match"] == etag
        for weights in (first, second):
            assert weights["item_factors"].shape == (4, 2)
            np.testing.assert_array_equal(weights["item_bias"], np.ones(4, dtype=np.float32))
        # each call decodes fresh arrays: mutating one result cannot poison the cache
        assert first["item_factors"] is not second["item_factors"]

    def test_cache_is_per_version(self, client: Client, fake: FakeCoordinator) -> None:
        data, etag = _weights_payload()
        for version in (1, 2):
            fake.add(
                "GET",
                f"{FED}/models/{version}/weights",
                respond(200, content=data, headers=signed_weights_headers(data, version=version)),
            )
        client.models.weights(FID, 1)
        client.models.weights(FID, 2)
        assert all("If-None-Match" not in r.headers for r in fake.requests)

    def test_etag_mismatch_is_rejected(self, client: Client, fake: FakeCoordinator) -> None:
        data, _ = _weights_payload()
        headers = {**signed_weights_headers(data, version=1), "ETag": f'"{"0" * 64}"'}
        fake.add("GET", f"{FED}/models/1/weights", respond(200, content=data, headers=headers))
        with pytest.raises(ModelSignatureError, match="do not match their ETag"):
            client.models.weights(FID, 1)
        assert len(client._weights_cache) == 0

    def test_invalid_weights_bytes(self, client: Client, fake: FakeCoordinator) -> None:
        data = b"not safetensors"
        headers = signed_weights_headers(data, version=1)
        fake.add("GET", f"{FED}/models/1/weights", respond(200, content=data, headers=headers))
        with pytest.raises(APIResponseValidationError, match="not valid safetensors"):
            client.models.weights(FID, 1)


class TestUpdates:
    def test_submit_dense(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("PUT", f"{FED}/rounds/3/update", respond(201, receipt_json(3)))
        deltas: dict[str, npt.NDArray[Any]] = {
            "item_factors": np.full((4, 2), 0.5, dtype=np.float64),
            "item_bias": np.zeros(4, dtype=np.float32),
        }
        receipt = client.updates.submit(FID, 3, deltas, base_version=2, num_examples=10)
        assert receipt.round == 3
        request = fake.requests[0]
        assert request.headers["Content-Type"] == "application/octet-stream"
        uuid.UUID(request.headers["Idempotency-Key"])
        update = decode_update(request.content, mf_spec(num_items=4, dim=2))
        assert (update.round, update.base_version, update.num_examples) == (3, 2, 10)
        assert update.kind == "dense"
        np.testing.assert_array_equal(update.tensors["item_factors"], deltas["item_factors"])

    def test_submit_row_sparse(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("PUT", f"{FED}/rounds/1/update", respond(201, receipt_json(1)))
        deltas = {
            "item_factors": np.ones((2, 2), dtype=np.float32),
            "item_bias": np.ones(2, dtype=np.float32),
        }
        # numpy scalars work at runtime too, though the signature says int
        client.updates.submit(
            FID,
            1,
            deltas,
            base_version=np.int64(0),  # type: ignore[arg-type]
            num_examples=np.int64(7),  # type: ignore[arg-type]
            rows=[1, 3],
        )
        update = decode_update(fake.requests[0].content, mf_spec(num_items=4, dim=2))
        assert update.kind == "row_sparse"
        assert update.rows is not None
        assert update.rows.tolist() == [1, 3]
        assert update.num_examples == 7

    def test_each_submit_has_its_own_idempotency_key(
        self, client: Client, fake: FakeCoordinator
    ) -> None:
        fake.add("PUT", f"{FED}/rounds/1/update", respond(201, receipt_json(1)))
        deltas: dict[str, npt.NDArray[Any]] = {
            "item_factors": np.ones((4, 2)),
            "item_bias": np.ones(4),
        }
        client.updates.submit(FID, 1, deltas, base_version=0, num_examples=1)
        client.updates.submit(FID, 1, deltas, base_version=0, num_examples=1)
        first, second = (r.headers["Idempotency-Key"] for r in fake.requests)
        assert first != second


class TestEvaluationsMetricsDeployment:
    def test_submit_evaluation(self, client: Client, fake: FakeCoordinator) -> None:
        evaluation = {
            "version": 2,
            "split": "validation",
            "metrics": {"ndcg@10": 0.25},
            "num_users": 120,
            "participant_id": "p-1",
            "created_at": TS,
        }
        fake.add("POST", f"{FED}/models/2/evaluations", respond(201, evaluation))
        # numpy scalars (as metric code returns them) are converted to JSON numbers
        metrics: dict[str, Any] = {"ndcg@10": np.float32(0.25)}
        num_users: Any = np.int64(120)
        result = client.evaluations.submit(FID, 2, "validation", metrics, num_users)
        assert _json(fake.requests[0]) == {
            "split": "validation",
            "metrics": {"ndcg@10": 0.25},
            "num_users": 120,
        }
        assert result.metrics == {"ndcg@10": 0.25}

    def test_metrics(self, client: Client, fake: FakeCoordinator) -> None:
        row = {
            "version": 1,
            "round": 1,
            "split": "validation",
            "metrics": {"ndcg@10": 0.1, "hr@10": 0.3},
            "num_users": 200,
            "participants": 2,
        }
        fake.add("GET", f"{FED}/metrics", respond(200, {"items": [row]}))
        (result,) = client.metrics(FID)
        assert result.metrics["hr@10"] == 0.3
        assert result.participants == 2

    def test_deployment(self, client: Client, fake: FakeCoordinator) -> None:
        deployment = {
            "version": 3,
            "policy": "best",
            "deployed_at": TS,
            "deployed_by": "admin",
            "history": [
                {
                    "version": 2,
                    "actor": "policy",
                    "reason": "best",
                    "metric_value": 0.1,
                    "created_at": TS,
                },
                {
                    "version": 3,
                    "actor": "admin",
                    "reason": "promote",
                    "metric_value": None,
                    "created_at": TS,
                },
            ],
        }
        fake.add("GET", f"{FED}/deployment", respond(200, deployment))
        fake.add("POST", f"{FED}/deployment", respond(200, {**deployment, "version": 2}))
        live = client.deployment.get(FID)
        assert live.version == 3
        assert [event.version for event in live.history] == [2, 3]
        assert live.history[0].metric_value == 0.1
        assert client.deployment.promote(FID, 2).version == 2
        assert _json(fake.requests[-1]) == {"version": 2}

    def test_health(self, client: Client, fake: FakeCoordinator) -> None:
        fake.add("GET", "/healthz", respond(200, {"status": "ok"}))
        assert client.health().status == "ok"
