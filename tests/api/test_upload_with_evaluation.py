"""An upload that carries the validation figures of its round's base (X-Base-Evaluation):
one request and one transaction instead of a report and an upload. Both backends (the
``client`` fixture runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from participant_sdk.wire import BASE_EVALUATION_HEADER
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    update_bytes,
)


def _header(**body: Any) -> dict[str, str]:
    payload = {"split": "validation", "metrics": {"ndcg@10": 0.3}, "num_users": 12, **body}
    return {BASE_EVALUATION_HEADER: json.dumps(payload)}


def _metrics(client: TestClient, fid: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"/v1/federations/{fid}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _federation(client: TestClient, admin: dict[str, str]) -> str:
    # two participants needed: the round stays open after the first upload
    fid: str = create_federation(client, admin, rounds={"min_participants": 2, "max_rounds": 3})[
        "id"
    ]
    return fid


class TestUploadWithEvaluation:
    def test_the_round_advertises_it(self, client: TestClient, admin_headers: dict) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid)
        body = client.get(f"/v1/federations/{fid}/rounds/current", headers=a).json()
        assert body["upload_takes_evaluation"] is True

    def test_recorded_with_the_update(self, client: TestClient, admin_headers: dict) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid, "a")
        response = put_update(client, fid, 1, update_bytes(), {**a, **_header()})
        assert response.status_code == 201, response.text
        [row] = _metrics(client, fid, admin_headers)
        assert (row["version"], row["split"], row["participants"], row["num_users"]) == (
            0,
            "validation",
            1,
            12,
        )
        assert row["metrics"]["ndcg@10"] == pytest.approx(0.3)
        # the old endpoint still works and counts the same way
        _, b = enrol(client, admin_headers, fid, "b")
        assert evaluate(client, fid, 0, b, metrics={"ndcg@10": 0.5}, num_users=4).status_code == 201
        [row] = _metrics(client, fid, admin_headers)
        assert (row["participants"], row["num_users"]) == (2, 16)
        assert row["metrics"]["ndcg@10"] == pytest.approx((0.3 * 12 + 0.5 * 4) / 16)

    def test_replaces_an_earlier_report_of_the_base(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid)
        evaluate(client, fid, 0, a, metrics={"ndcg@10": 0.1})
        assert put_update(client, fid, 1, update_bytes(), {**a, **_header()}).status_code == 201
        [row] = _metrics(client, fid, admin_headers)
        assert (row["participants"], row["metrics"]["ndcg@10"]) == (1, pytest.approx(0.3))

    def test_a_replayed_upload_records_nothing_new(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid)
        body = update_bytes()
        assert put_update(client, fid, 1, body, {**a, **_header()}).status_code == 201
        again = put_update(client, fid, 1, body, {**a, **_header(metrics={"ndcg@10": 0.9})})
        assert again.status_code == 200, again.text
        [row] = _metrics(client, fid, admin_headers)
        assert row["metrics"]["ndcg@10"] == pytest.approx(0.3)

    @pytest.mark.parametrize(
        ("header", "where"),
        [
            ("not json", "not JSON"),
            (
                json.dumps({"split": "validation", "metrics": {"ndcg@10": 1.5}, "num_users": 3}),
                "[0, 1]",
            ),
            (json.dumps({"split": "validation", "metrics": {}, "num_users": 3}), "metrics"),
            (json.dumps({"split": "validation", "metrics": {"ndcg@10": 0.1}}), "num_users"),
            (json.dumps({"split": "test", "metrics": {"ndcg@10": 0.1}, "num_users": 3}), "test"),
            # declared by no federation default (limits.metrics): refused like a report
            (
                json.dumps({"split": "validation", "metrics": {"ndcg@20": 0.1}, "num_users": 3}),
                "not declared",
            ),
            # above limits.max_num_users
            (
                json.dumps(
                    {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 10**9}
                ),
                "max_num_users",
            ),
        ],
    )
    def test_an_invalid_evaluation_stores_nothing(
        self, client: TestClient, admin_headers: dict, header: str, where: str
    ) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid)
        response = put_update(client, fid, 1, update_bytes(), {**a, BASE_EVALUATION_HEADER: header})
        problem = assert_problem(response, 422, "validation-error")
        assert where in problem["detail"], problem
        assert _metrics(client, fid, admin_headers) == []
        # nothing stored: the same upload without the header is the first one
        assert put_update(client, fid, 1, update_bytes(), a).status_code == 201

    def test_a_refused_upload_records_no_evaluation(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers)
        _, a = enrol(client, admin_headers, fid)
        # base_version 5 is not the round's base: 422 invalid-update, nothing recorded
        response = put_update(client, fid, 1, update_bytes(base_version=5), {**a, **_header()})
        assert_problem(response, 422, "invalid-update")
        assert _metrics(client, fid, admin_headers) == []
