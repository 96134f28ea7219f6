"""Federated evaluation: participants report metrics per version; the weighted aggregate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation, enrol, evaluate


class TestEvaluations:
    def test_weighted_aggregate_per_version(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid, "a")
        _, b = enrol(client, admin_headers, fid, "b")
        assert (
            evaluate(
                client, fid, 0, a, metrics={"ndcg@10": 0.2, "hr@10": 0.5}, num_users=30
            ).status_code
            == 201
        )
        assert (
            evaluate(
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
        evaluate(client, fid, 0, a, metrics={"ndcg@10": 0.2})
        evaluate(client, fid, 0, a, metrics={"ndcg@10": 0.4})
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
        problem = assert_problem(evaluate(client, fid, 0, a, **body), 422, "validation-error")
        assert where in problem["detail"]
        assert client.get(f"/v1/federations/{fid}/metrics", headers=a).json()["items"] == []

    def test_unknown_version_404(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        assert_problem(evaluate(client, fid, 7, a), 404, "model-version-not-found")

    def test_admin_cannot_report(self, client: TestClient, admin_headers: dict) -> None:
        fid = create_federation(client, admin_headers)["id"]
        assert_problem(evaluate(client, fid, 0, admin_headers), 403, "forbidden")


class TestTestFiguresAreWrittenOnce:
    """A re-run participant must not silently rewrite the federation's final result."""

    def test_a_different_test_report_is_refused(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        first = {"split": "test", "metrics": {"ndcg@10": 0.2}, "num_users": 30}
        assert evaluate(client, fid, 0, a, **first).status_code == 201
        again = evaluate(client, fid, 0, a, split="test", metrics={"ndcg@10": 0.9}, num_users=3)
        body = assert_problem(again, 409, "evaluation-exists")
        assert "version 0" in body["detail"]
        assert body["reported"] == {"ndcg@10": 0.2}
        rows = client.get(f"/v1/federations/{fid}/metrics", headers=admin_headers).json()["items"]
        assert [(r["split"], r["metrics"]["ndcg@10"], r["num_users"]) for r in rows] == [
            ("test", 0.2, 30)
        ]

    def test_the_same_test_report_again_is_accepted(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        _, a = enrol(client, admin_headers, fid)
        report = {"split": "test", "metrics": {"ndcg@10": 0.2}, "num_users": 30}
        assert evaluate(client, fid, 0, a, **report).status_code == 201
        assert evaluate(client, fid, 0, a, **report).status_code == 201
