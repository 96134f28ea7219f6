"""Evaluations, aggregated metrics, deployment (promote/roll back) and the catalog."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation, enrol, put_update, update_bytes


def _evaluate(client: TestClient, fid: str, version: int, headers: dict, **body: object) -> Any:
    payload = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 10, **body}
    return client.post(
        f"/v1/federations/{fid}/models/{version}/evaluations", json=payload, headers=headers
    )


class TestEvaluations:
    def test_weighted_aggregate_per_version(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid, "a")
        _, b = enrol(client, admin_headers, fid, "b")
        assert (
            _evaluate(
                client, fid, 0, a, metrics={"ndcg@10": 0.2, "hr@10": 0.5}, num_users=30
            ).status_code
            == 201
        )
        assert (
            _evaluate(
                client, fid, 0, b, metrics={"ndcg@10": 0.6, "hr@10": 0.9}, num_users=10
            ).status_code
            == 201
        )
        rows = client.get(f"/v1/federations/{fid}/metrics", headers=a).json()["items"]
        assert len(rows) == 1
        row = rows[0]
        assert (row["version"], row["split"], row["participants"], row["num_users"]) == (
            0,
            "validation",
            2,
            40,
        )
        assert row["metrics"]["ndcg@10"] == pytest.approx((0.2 * 30 + 0.6 * 10) / 40)
        assert row["metrics"]["hr@10"] == pytest.approx((0.5 * 30 + 0.9 * 10) / 40)

    def test_later_report_replaces_earlier(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        _evaluate(client, fid, 0, a, metrics={"ndcg@10": 0.2})
        _evaluate(client, fid, 0, a, metrics={"ndcg@10": 0.4})
        rows = client.get(f"/v1/federations/{fid}/metrics", headers=admin_headers).json()["items"]
        assert [r["metrics"]["ndcg@10"] for r in rows] == [0.4]

    @pytest.mark.parametrize(
        ("body", "where"),
        [
            ({"metrics": {"ndcg@10": 1.5}}, "must lie in [0, 1]"),
            ({"metrics": {"magic": 0.1}}, "unknown metric"),
            ({"num_users": 0}, "num_users"),
            ({"split": "train"}, "split"),
        ],
    )
    def test_invalid_report_422(
        self, client: TestClient, admin_headers: dict, body: dict, where: str
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        problem = assert_problem(_evaluate(client, fid, 0, a, **body), 422, "validation-error")
        assert where in problem["detail"]
        assert client.get(f"/v1/federations/{fid}/metrics", headers=a).json()["items"] == []

    def test_unknown_version_404(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        assert_problem(_evaluate(client, fid, 7, a), 404, "model-version-not-found")

    def test_admin_cannot_report(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        assert_problem(_evaluate(client, fid, 0, admin_headers), 403, "forbidden")


class TestDeployment:
    def _two_versions(self, client: TestClient, admin: dict, **policy: object) -> tuple[str, dict]:
        fid = create_federation(client, admin, rounds={"max_rounds": 2}, **policy)["id"]
        _, p = enrol(client, admin, fid)
        for number in (1, 2):
            _evaluate(client, fid, number - 1, p, metrics={"ndcg@10": 0.5 if number == 2 else 0.1})
            put_update(
                client,
                fid,
                number,
                update_bytes(round=number, base_version=number - 1, seed=number),
                p,
            )
            for _ in range(50):
                if (
                    client.get(f"/v1/federations/{fid}/rounds/{number}", headers=admin).json()[
                        "state"
                    ]
                    == "closed"
                ):
                    break
                time.sleep(0.05)
        return fid, p

    def test_nothing_deployed_404(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        assert_problem(
            client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers), 404, "not-found"
        )

    def test_best_policy_deploys_best_validated_version(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid, p = self._two_versions(client, admin_headers)
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert fed["state"] == "completed"
        deployment = client.get(f"/v1/federations/{fid}/deployment", headers=p).json()
        assert deployment["version"] == 1  # version 1 scored 0.5, version 0 scored 0.1
        assert deployment["policy"] == "best"
        assert deployment["deployed_by"] == "policy:best"
        assert fed["deployed_version"] == 1

    def test_latest_policy(self, client: TestClient, admin_headers: dict) -> None:
        fid, _ = self._two_versions(client, admin_headers, deploy={"policy": "latest"})
        assert (
            client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers).json()["version"]
            == 2
        )

    def test_none_policy_then_promote_and_roll_back(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid, _ = self._two_versions(client, admin_headers, deploy={"policy": "none"})
        url = f"/v1/federations/{fid}/deployment"
        assert client.get(url, headers=admin_headers).status_code == 404
        promoted = client.post(url, json={"version": 2}, headers=admin_headers).json()
        assert (promoted["version"], promoted["history"][-1]["reason"]) == (2, "promote")
        rolled = client.post(url, json={"version": 0}, headers=admin_headers).json()
        assert rolled["version"] == 0
        assert [(h["version"], h["reason"], h["actor"]) for h in rolled["history"]] == [
            (2, "promote", "admin"),
            (0, "rollback", "admin"),
        ]
        assert_problem(
            client.post(url, json={"version": 9}, headers=admin_headers),
            404,
            "model-version-not-found",
        )


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
