"""Rounds and model versions: aggregation, auto-close, completion, weights download."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.domain.lineage import GENESIS_CHAIN, chain_hash, verify_lineage
from participant_sdk.wire import decode_weights
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    put_update,
    random_deltas,
    update_bytes,
)


def _weights(client: TestClient, fid: str, version: int | str, headers: dict) -> dict:
    response = client.get(f"/v1/federations/{fid}/models/{version}/weights", headers=headers)
    assert response.status_code == 200
    return decode_weights(response.content)


def _wait_round(client: TestClient, fid: str, number: int, headers: dict) -> dict:
    """Long-poll until the round is no longer open (bounded)."""
    for _ in range(50):
        body = client.get(f"/v1/federations/{fid}/rounds/{number}", headers=headers).json()
        if body["state"] in ("closed", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"round {number} did not close: {body}")


class TestCreate:
    def test_version_zero_and_round_one(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        assert fed["state"] == "active"
        assert fed["current_round"] == 1
        assert fed["latest_version"] == 0
        current = client.get(f"/v1/federations/{fed['id']}/rounds/current", headers=admin_headers)
        assert current.json()["number"] == 1
        assert current.json()["base_version"] == 0
        assert current.json()["state"] == "open"
        weights = _weights(client, fed["id"], 0, admin_headers)
        assert weights["item_factors"].shape == (20, 4)
        assert weights["item_factors"].dtype == np.float32
        assert np.all(weights["item_bias"] == 0)
        assert 0 < np.abs(weights["item_factors"]).max() < 0.1
        version = client.get(f"/v1/federations/{fed['id']}/models/0", headers=admin_headers).json()
        assert version["parent"] is None
        assert version["round"] is None
        assert version["chain_hash"] == chain_hash(GENESIS_CHAIN, version["sha256"], [])

    def test_catalog_must_match_num_items(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json={"name": "x", "model": {"kind": "mf", "num_items": 3, "dim": 2}, "catalog": ["a"]},
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert "catalog" in body["detail"]

    def test_unknown_field_rejected(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json={"name": "x", "model": {"kind": "mf", "num_items": 3, "dim": 2}, "colour": 1},
            headers=admin_headers,
        )
        assert_problem(response, 422, "validation-error")
        assert client.get("/v1/federations", headers=admin_headers).json()["items"] == []


class TestAggregate:
    def test_fedavg_matches_numpy(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(3)]
        base = _weights(client, fid, 0, admin_headers)
        deltas = [random_deltas(seed) for seed in (1, 2)]
        counts = [10, 30]
        for headers, delta, n in zip(parts[:2], deltas, counts, strict=True):
            body = update_bytes(deltas=delta, num_examples=n)
            assert put_update(client, fid, 1, body, headers).status_code == 201
        response = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        assert response.status_code == 201, response.text
        version = response.json()
        assert version["version"] == 1
        assert version["round"] == 1
        assert version["parent"] == 0
        new = _weights(client, fid, 1, admin_headers)
        for name in ("item_factors", "item_bias"):
            expected = base[name].astype(np.float64) + sum(
                n * d[name].astype(np.float64) for n, d in zip(counts, deltas, strict=True)
            ) / sum(counts)
            np.testing.assert_array_equal(new[name], expected.astype(np.float32))
        rounds = client.get(f"/v1/federations/{fid}/rounds", headers=admin_headers).json()["items"]
        assert [(r["number"], r["state"], r["result_version"]) for r in rounds] == [
            (1, "closed", 1),
            (2, "open", None),
        ]
        assert rounds[1]["base_version"] == 1
        assert verify_lineage(app.state.context, fid).ok

    def test_no_updates_409(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        response = client.post(
            f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers
        )
        assert_problem(response, 409, "no-updates")

    def test_closed_round_409(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        _, p1 = enrol(client, admin_headers, fed["id"])
        _, p2 = enrol(client, admin_headers, fed["id"], "other")
        put_update(client, fed["id"], 1, update_bytes(), p1)
        client.post(f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers)
        again = client.post(
            f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers
        )
        assert_problem(again, 409, "round-not-open")
        versions = client.get(f"/v1/federations/{fed['id']}/models", headers=admin_headers)
        assert [v["version"] for v in versions.json()["items"]] == [0, 1]

    def test_round_closes_when_all_uploaded(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(2)]
        for seed, headers in enumerate(parts):
            put_update(client, fid, 1, update_bytes(seed=seed), headers)
        closed = _wait_round(client, fid, 1, admin_headers)
        assert closed["result_version"] == 1
        assert closed["update_count"] == 2

    def test_federation_completes_after_max_rounds(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers, rounds={"max_rounds": 2})
        fid = fed["id"]
        _, headers = enrol(client, admin_headers, fid)
        for number in (1, 2):
            body = update_bytes(round=number, base_version=number - 1, seed=number)
            assert put_update(client, fid, number, body, headers).status_code == 201
            _wait_round(client, fid, number, admin_headers)
        state = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert state["state"] == "completed"
        assert state["current_round"] is None
        assert state["latest_version"] == 2
        late = put_update(client, fid, 3, update_bytes(round=3, base_version=2), headers)
        assert_problem(late, 409, "federation-completed")
        report = verify_lineage(app.state.context, fid)
        assert report.ok
        assert report.checked == 3

    def test_revoked_participant_not_aggregated(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        p1, h1 = enrol(client, admin_headers, fid, "a")
        _, h2 = enrol(client, admin_headers, fid, "b")
        _, h3 = enrol(client, admin_headers, fid, "c")
        put_update(client, fid, 1, update_bytes(seed=1), h1)
        put_update(client, fid, 1, update_bytes(seed=2), h2)
        client.delete(f"/v1/federations/{fid}/participants/{p1}", headers=admin_headers)
        version = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        assert len(version.json()["contributors"]) == 1
        assert version.json()["contributors"] == [hashlib.sha256(update_bytes(seed=2)).hexdigest()]


class TestWeights:
    def test_etag_and_304(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        url = f"/v1/federations/{fed['id']}/models/latest/weights"
        response = client.get(url, headers=admin_headers)
        assert response.headers["content-type"] == "application/octet-stream"
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.headers["etag"] == f'"{digest}"'
        cached = client.get(url, headers={**admin_headers, "If-None-Match": f'"{digest}"'})
        assert cached.status_code == 304
        assert cached.content == b""
        stale = client.get(url, headers={**admin_headers, "If-None-Match": '"abc"'})
        assert stale.status_code == 200

    def test_unknown_version_404(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        response = client.get(
            f"/v1/federations/{fed['id']}/models/9/weights", headers=admin_headers
        )
        assert_problem(response, 404, "model-version-not-found")


class TestLongPoll:
    def test_returns_immediately_when_round_is_newer(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        response = client.get(
            f"/v1/federations/{fed['id']}/rounds/current",
            params={"wait": 30, "after": 0},
            headers=admin_headers,
        )
        assert response.json()["number"] == 1

    def test_times_out_with_current_round(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        started = time.monotonic()
        response = client.get(
            f"/v1/federations/{fed['id']}/rounds/current",
            params={"wait": 0.5, "after": 1},
            headers=admin_headers,
        )
        assert response.json()["number"] == 1
        assert time.monotonic() - started >= 0.4
