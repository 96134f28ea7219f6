"""/v1/federations: create (version 0 and round 1), validation, read, catalog."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from coordinator.domain.lineage import GENESIS_CHAIN, chain_hash
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    federation_body,
    weights,
)


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
        initial = weights(client, fed["id"], 0, admin_headers)
        assert initial["item_factors"].shape == (20, 4)
        assert initial["item_factors"].dtype == np.float32
        assert np.all(initial["item_bias"] == 0)
        assert 0 < np.abs(initial["item_factors"]).max() < 0.1
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


class TestRead:
    def test_unknown_federation_404(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        response = client.get("/v1/federations/nope", headers=admin_headers)
        assert_problem(response, 404, "federation-not-found")


class TestCatalog:
    def test_catalog_readable_by_participants(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        catalog = [f"sku-{i}" for i in range(20)]
        fid = create_federation(client, admin_headers, catalog=catalog)["id"]
        _, p = enrol(client, admin_headers, fid)
        assert client.get(f"/v1/federations/{fid}/catalog", headers=p).json()["items"] == catalog

    def test_duplicate_ids_rejected(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json={
                "name": "x",
                "model": {"kind": "mf", "num_items": 2, "dim": 2},
                "catalog": ["a", "a"],
            },
            headers=admin_headers,
        )
        assert_problem(response, 422, "validation-error")


def test_a_catalog_of_integers_is_one_concise_422(client: TestClient, admin_headers: dict) -> None:
    body = federation_body(
        model={"kind": "mf", "num_items": 1682, "dim": 4}, catalog=list(range(1, 1683))
    )
    response = client.post("/v1/federations", json=body, headers=admin_headers)
    problem = assert_problem(response, 422, "validation-error")
    assert len(problem["errors"]) == 1
    assert problem["errors"][0]["count"] == 1682
    assert problem["errors"][0]["loc"] == ["body", "catalog", 0]
    assert "catalog.0" in problem["detail"]
    assert "1681 more" in problem["detail"]
    assert len(response.content) < 2000


def test_distinct_validation_errors_stay_separate(client: TestClient, admin_headers: dict) -> None:
    body = federation_body(model={"kind": "mf", "num_items": 0, "dim": -1})
    response = client.post("/v1/federations", json=body, headers=admin_headers)
    problem = assert_problem(response, 422, "validation-error")
    assert {tuple(e["loc"][-1:]) for e in problem["errors"]} == {("num_items",), ("dim",)}
    assert all(e["count"] == 1 for e in problem["errors"])
