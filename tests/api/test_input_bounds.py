"""Every participant-supplied number is bounded, and every bad one is a 4xx (issue 12,
findings 2, 3 and 8): nothing is stored on a refusal, and no input reaches the database
as a number its column cannot hold."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from participant_sdk.wire import encode_weights
from tests.factories import (
    assert_problem,
    blob_count,
    create_federation,
    enrol,
    evaluate,
    put_update,
    random_deltas,
    stored_update_count,
    update_bytes,
)

INT32_OVER = 2**31
INT64_OVER = 2**63


def _update_with_metadata(**metadata: str) -> bytes:
    base = {"round": "1", "base_version": "0", "num_examples": "10", "update_kind": "dense"}
    return encode_weights(random_deltas(0), {**base, **metadata})


class TestNumExamples:
    @pytest.mark.parametrize(
        "raw",
        [
            "²",  # passes str.isdigit()
            "١٢",  # Arabic-Indic digits: isdigit() too
            "9" * 5000,  # beyond int()'s default digit limit
            str(INT64_OVER),  # does not fit a 64-bit column
            str(INT64_OVER - 1),  # fits, but far over any federation's cap
            "-5",
            "",
        ],
    )
    def test_refused_and_nothing_stored(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str], raw: str
    ) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        blobs = blob_count(app.state.context)
        response = put_update(
            client, fed["id"], 1, _update_with_metadata(num_examples=raw), participant
        )
        problem = assert_problem(response, 422, "invalid-update")
        assert problem["field"] == "num_examples"
        assert stored_update_count(app.state.context) == 0
        assert blob_count(app.state.context) == blobs  # no orphan blob

    def test_capped_per_federation(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers, limits={"max_num_examples": 1000})
        assert fed["limits"]["max_num_examples"] == 1000
        _, participant = enrol(client, admin_headers, fed["id"])
        over = put_update(client, fed["id"], 1, update_bytes(num_examples=1001), participant)
        assert "at most 1000" in assert_problem(over, 422, "invalid-update")["detail"]
        assert stored_update_count(app.state.context) == 0
        at_cap = put_update(client, fed["id"], 1, update_bytes(num_examples=1000), participant)
        assert at_cap.status_code == 201, at_cap.text
        assert at_cap.json()["num_examples"] == 1000

    def test_above_32_bits_is_stored_when_the_federation_allows_it(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        # PostgreSQL's INTEGER overflowed here before the column became 64-bit
        fed = create_federation(client, admin_headers, limits={"max_num_examples": 2**40})
        _, participant = enrol(client, admin_headers, fed["id"])
        response = put_update(client, fed["id"], 1, update_bytes(num_examples=2**33), participant)
        assert response.status_code == 201, response.text
        assert response.json()["num_examples"] == 2**33

    def test_default_cap(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        fed = create_federation(client, admin_headers)
        assert fed["limits"]["max_num_examples"] == 100_000_000


class TestSafetensorsHeader:
    def test_deeply_nested_header_is_a_422(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        header = b"[" * 100_000
        body = struct.pack("<Q", len(header)) + header
        response = put_update(client, fed["id"], 1, body, participant)
        assert "nests too deeply" in assert_problem(response, 422, "invalid-update")["detail"]
        assert stored_update_count(app.state.context) == 0


class TestPathIntegers:
    @pytest.mark.parametrize("number", [INT32_OVER, INT64_OVER, 10**30])
    @pytest.mark.parametrize(
        ("method", "template"),
        [
            ("GET", "/rounds/{n}"),
            ("PUT", "/rounds/{n}/update"),
            ("POST", "/rounds/{n}/aggregate"),
            ("GET", "/models/{n}"),
            ("GET", "/models/{n}/weights"),
            ("POST", "/models/{n}/evaluations"),
        ],
    )
    def test_beyond_the_column_is_a_422(
        self,
        client: TestClient,
        admin_headers: dict[str, str],
        method: str,
        template: str,
        number: int,
    ) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        headers = admin_headers if template.endswith("aggregate") else participant
        kwargs: dict[str, Any] = {}
        if template.endswith("evaluations"):
            kwargs["json"] = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 1}
        if template.endswith("update"):
            kwargs["content"] = update_bytes()
            headers = {**headers, "Content-Type": "application/octet-stream"}
        url = f"/v1/federations/{fed['id']}" + template.format(n=number)
        response = client.request(method, url, headers=headers, **kwargs)
        assert_problem(response, 422, "validation-error")

    @pytest.mark.parametrize("version", [INT32_OVER, INT64_OVER])
    def test_deployment_version_beyond_the_column_is_a_422(
        self, client: TestClient, admin_headers: dict[str, str], version: int
    ) -> None:
        fed = create_federation(client, admin_headers)
        response = client.post(
            f"/v1/federations/{fed['id']}/deployment",
            json={"version": version},
            headers=admin_headers,
        )
        assert_problem(response, 422, "validation-error")

    def test_the_largest_number_the_column_holds_is_a_404(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        for path in (f"/rounds/{INT32_OVER - 1}", f"/models/{INT32_OVER - 1}"):
            response = client.get(f"/v1/federations/{fed['id']}{path}", headers=admin_headers)
            assert response.status_code == 404, response.text


class TestEvaluations:
    def test_num_users_capped_per_federation(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers, limits={"max_num_users": 500})
        _, participant = enrol(client, admin_headers, fed["id"])
        # the audit: ndcg 1.0 with 2^62 users ended a federation after round 1
        for users in (501, 2**62):
            response = evaluate(
                client, fed["id"], 0, participant, metrics={"ndcg@10": 1.0}, num_users=users
            )
            assert_problem(response, 422, "validation-error")
        assert evaluate(client, fed["id"], 0, participant, num_users=500).status_code == 201
        rows = client.get(f"/v1/federations/{fed['id']}/metrics", headers=admin_headers).json()
        assert [r["num_users"] for r in rows["items"]] == [500]

    def test_only_declared_metrics(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        response = evaluate(client, fed["id"], 0, participant, metrics={"ndcg@20": 0.1})
        problem = assert_problem(response, 422, "validation-error")
        assert "ndcg@20" in problem["detail"]
        assert "limits.metrics" in problem["detail"]

    def test_every_metric_the_sdk_reports_is_declared_by_default(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        from participant_sdk.recsys.metrics import evaluate_loo, evaluate_sampled
        from tests.sdk.recsys.test_metrics import _fixed, _inter

        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        # what FederatedRecommender.test_metrics posts at its default k
        scores = np.arange(8, dtype=np.float32)[None, :]
        target = _inter([(0, 2)], 1, 8)
        names = set(evaluate_loo(_fixed(scores), _inter([(0, 1)], 1, 8), target)) | set(
            evaluate_sampled(_fixed(scores), target, np.array([[3, 4, 5]]))
        )
        assert any(name.startswith("sampled_") for name in names)
        response = evaluate(
            client, fed["id"], 0, participant, split="test", metrics=dict.fromkeys(names, 0.5)
        )
        assert response.status_code == 201, response.text

    def test_declared_metrics_at_another_k(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(
            client,
            admin_headers,
            limits={"metrics": ["ndcg@20", "hr@20"]},
            deploy={"policy": "best", "metric": "ndcg@20"},
        )
        _, participant = enrol(client, admin_headers, fed["id"])
        ok = evaluate(client, fed["id"], 0, participant, metrics={"ndcg@20": 0.2, "hr@20": 0.3})
        assert ok.status_code == 201, ok.text
        refused = evaluate(client, fed["id"], 0, participant, metrics={"ndcg@10": 0.2})
        assert_problem(refused, 422, "validation-error")

    def test_many_names_refused_before_anything_is_stored(
        self, client: TestClient, admin_headers: dict[str, str]
    ) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        # the audit posted 200k names per evaluation (+20 MB, GET …/metrics 0.02 s -> 5.2 s)
        many = {f"ndcg@{k}": 0.1 for k in range(1, 10_000)}
        assert_problem(
            evaluate(client, fed["id"], 0, participant, metrics=many), 422, "validation-error"
        )
        rows = client.get(f"/v1/federations/{fed['id']}/metrics", headers=admin_headers).json()
        assert rows["items"] == []

    @pytest.mark.parametrize(
        "overrides",
        [
            {"target": {"metric": "ndcg@20", "value": 0.5}},
            {"deploy": {"policy": "best", "metric": "recall@5"}},
        ],
    )
    def test_target_and_deploy_metric_must_be_declared(
        self, client: TestClient, admin_headers: dict[str, str], overrides: dict[str, Any]
    ) -> None:
        from tests.factories import federation_body

        response = client.post(
            "/v1/federations", json=federation_body(**overrides), headers=admin_headers
        )
        assert "limits.metrics" in assert_problem(response, 422, "validation-error")["detail"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"deploy": {"policy": "best", "metric": "ndcg@10", "window": 2}}, "window"),
        ({"deploy": {"policy": "best", "metric": "ndcg@10", "window": 0}}, "window"),
        ({"strategy": {"name": "fedavg", "plateau_decay": 1.0}}, "plateau_decay"),
        ({"strategy": {"name": "fedavg", "plateau_patience": 0}}, "plateau_patience"),
    ],
)
def test_smoothing_window_and_plateau_decay_are_bounded(
    client: TestClient, admin_headers: dict[str, str], overrides: dict[str, Any], field: str
) -> None:
    from tests.factories import federation_body

    response = client.post(
        "/v1/federations", json=federation_body(**overrides), headers=admin_headers
    )
    assert field in assert_problem(response, 422, "validation-error")["detail"]


def test_smoothing_window_and_plateau_decay_are_stored_and_shown(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fed = create_federation(
        client,
        admin_headers,
        deploy={"policy": "best", "metric": "ndcg@10", "window": 3},
        strategy={"name": "fedavg", "plateau_decay": 0.5, "plateau_patience": 4},
    )
    shown = client.get(f"/v1/federations/{fed['id']}", headers=admin_headers).json()
    assert shown["deploy"]["window"] == 3
    assert (shown["strategy"]["plateau_decay"], shown["strategy"]["plateau_patience"]) == (0.5, 4)
