"""PUT .../rounds/{n}/update: receipts, idempotency, and every rejection storing nothing."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from participant_sdk.wire import encode_weights
from tests.factories import (
    DIM,
    NUM_ITEMS,
    assert_problem,
    blob_count,
    create_federation,
    enrol,
    put_update,
    random_deltas,
    stored_update_count,
    update_bytes,
)


@pytest.fixture
def fed(client: TestClient, admin_headers: dict[str, str]) -> dict[str, object]:
    federation = create_federation(client, admin_headers)
    # two participants so that one upload does not close the round
    _, first = enrol(client, admin_headers, federation["id"], "shop")
    _, second = enrol(client, admin_headers, federation["id"], "merchant")
    return {"id": federation["id"], "p1": first, "p2": second}


class TestAccepted:
    def test_receipt(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        body = update_bytes()
        response = put_update(client, fed["id"], 1, body, fed["p1"])
        assert response.status_code == 201, response.text
        receipt = response.json()
        assert set(receipt) >= {"update_id", "sha256", "size", "received_at"}
        assert receipt["size"] == len(body)
        import hashlib

        assert receipt["sha256"] == hashlib.sha256(body).hexdigest()
        assert app.state.context.blobs.get(receipt["sha256"]) == body
        assert stored_update_count(app.state.context) == 1
        rnd = client.get(f"/v1/federations/{fed['id']}/rounds/1", headers=fed["p1"]).json()
        assert rnd["update_count"] == 1
        assert rnd["state"] == "open"

    def test_same_bytes_again_same_receipt(
        self, client: TestClient, app: FastAPI, fed: dict
    ) -> None:
        body = update_bytes()
        first = put_update(client, fed["id"], 1, body, fed["p1"])
        again = put_update(client, fed["id"], 1, body, fed["p1"])
        assert again.status_code == 200
        assert again.json() == first.json()
        assert stored_update_count(app.state.context) == 1

    def test_idempotency_key_retry_gets_original_receipt(
        self, client: TestClient, app: FastAPI, admin_headers: dict, fed: dict
    ) -> None:
        body = update_bytes()
        headers = {**fed["p1"], "Idempotency-Key": "retry-1"}
        first = put_update(client, fed["id"], 1, body, headers)
        assert first.status_code == 201
        # the round moves on before the retry arrives: the key finds the original upload
        aggregated = client.post(
            f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers
        )
        assert aggregated.status_code == 201
        again = put_update(client, fed["id"], 1, body, headers)
        assert again.status_code == 200
        assert again.json()["update_id"] == first.json()["update_id"]
        assert stored_update_count(app.state.context) == 1

    def test_idempotency_key_with_other_bytes_is_422(
        self, client: TestClient, app: FastAPI, admin_headers: dict, fed: dict
    ) -> None:
        headers = {**fed["p1"], "Idempotency-Key": "retry-2"}
        assert put_update(client, fed["id"], 1, update_bytes(seed=1), headers).status_code == 201
        # other bytes under the same key: refused by key, in the same round ...
        same_round = put_update(client, fed["id"], 1, update_bytes(seed=2), headers)
        problem = assert_problem(same_round, 422, "idempotency-key-reused")
        assert problem["round"] == 1
        # ... and in the next round, where the upload would otherwise be new and valid
        client.post(f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers)
        next_round = put_update(
            client, fed["id"], 2, update_bytes(round=2, base_version=1, seed=3), headers
        )
        assert_problem(next_round, 422, "idempotency-key-reused")
        fresh = {**fed["p1"], "Idempotency-Key": "retry-3"}
        assert (
            put_update(
                client, fed["id"], 2, update_bytes(round=2, base_version=1, seed=3), fresh
            ).status_code
            == 201
        )
        assert stored_update_count(app.state.context) == 2

    def test_row_sparse_update_accepted(self, client: TestClient, fed: dict) -> None:
        from participant_sdk.wire import encode_update

        rows = np.array([1, 4, 7], dtype=np.int64)
        deltas = {
            "item_factors": np.ones((3, DIM), dtype=np.float32),
            "item_bias": np.ones(3, dtype=np.float32),
        }
        body = encode_update(deltas, round=1, base_version=0, num_examples=5, rows=rows)
        assert put_update(client, fed["id"], 1, body, fed["p1"]).status_code == 201


class TestConflicts:
    def test_different_bytes_409(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        put_update(client, fed["id"], 1, update_bytes(seed=1), fed["p1"])
        blobs = blob_count(app.state.context)
        response = put_update(client, fed["id"], 1, update_bytes(seed=2), fed["p1"])
        assert_problem(response, 409, "update-conflict")
        assert stored_update_count(app.state.context) == 1
        # the rejected bytes were not kept either
        assert blob_count(app.state.context) == blobs

    def test_future_round_409(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        response = put_update(client, fed["id"], 2, update_bytes(round=2), fed["p1"])
        body = assert_problem(response, 409, "future-round")
        assert body["current_round"] == 1
        assert stored_update_count(app.state.context) == 0

    def test_closed_round_409(
        self, client: TestClient, app: FastAPI, admin_headers: dict[str, str], fed: dict
    ) -> None:
        put_update(client, fed["id"], 1, update_bytes(seed=1), fed["p1"])
        client.post(f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers)
        response = put_update(client, fed["id"], 1, update_bytes(seed=2), fed["p2"])
        body = assert_problem(response, 409, "round-closed")
        assert body["current_round"] == 2
        assert stored_update_count(app.state.context) == 1

    def test_unknown_round_404(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        response = put_update(client, fed["id"], 0, update_bytes(round=1), fed["p1"])
        assert_problem(response, 404, "round-not-found")
        assert stored_update_count(app.state.context) == 0


def _header_only(header: dict[str, object]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def _bad_bodies() -> dict[str, tuple[bytes, str | None]]:
    good = random_deltas()
    cases: dict[str, tuple[bytes, str | None]] = {
        "not safetensors": (b"\x00\x01garbage" * 10, None),
        "truncated": (update_bytes()[:-7], None),
        "header claims too much": (_header_only({"a": 1})[:-2], None),
        "missing tensor": (
            update_bytes(deltas={"item_factors": good["item_factors"]}),
            "item_bias",
        ),
        "unknown tensor": (
            update_bytes(deltas={**good, "user_factors": np.zeros((3, DIM), np.float32)}),
            "user_factors",
        ),
        "wrong shape": (
            update_bytes(
                deltas={**good, "item_factors": np.zeros((NUM_ITEMS, DIM + 1), np.float32)}
            ),
            "item_factors",
        ),
        "NaN": (
            update_bytes(deltas={**good, "item_bias": np.full(NUM_ITEMS, np.nan, np.float32)}),
            "item_bias",
        ),
        "Inf": (
            update_bytes(
                deltas={**good, "item_factors": np.full((NUM_ITEMS, DIM), np.inf, np.float32)}
            ),
            "item_factors",
        ),
        "wrong base_version": (update_bytes(base_version=3), "base_version"),
        "round mismatch": (update_bytes(round=2), "round"),
        "zero num_examples": (update_bytes(num_examples=0), "num_examples"),
    }
    wrong_dtype = encode_weights(
        {**good, "item_bias": good["item_bias"].astype(np.float64)},
        {"round": "1", "base_version": "0", "num_examples": "3"},
    )
    cases["wrong dtype"] = (wrong_dtype, "item_bias")
    no_examples = encode_weights(good, {"round": "1", "base_version": "0"})
    cases["num_examples missing"] = (no_examples, "num_examples")
    negative = encode_weights(good, {"round": "1", "base_version": "0", "num_examples": "-4"})
    cases["negative num_examples"] = (negative, "num_examples")
    text = encode_weights(good, {"round": "1", "base_version": "0", "num_examples": "many"})
    cases["text num_examples"] = (text, "num_examples")
    rows_out = encode_weights(
        {
            "item_factors": np.zeros((1, DIM), np.float32),
            "item_bias": np.zeros(1, np.float32),
            "rows": np.array([NUM_ITEMS], np.int64),
        },
        {"round": "1", "base_version": "0", "num_examples": "1", "update_kind": "row_sparse"},
    )
    cases["row index out of range"] = (rows_out, "rows")
    return cases


class TestRejected:
    @pytest.mark.parametrize("case", sorted(_bad_bodies()))
    def test_invalid_body_422_stores_nothing(
        self, client: TestClient, app: FastAPI, fed: dict, case: str
    ) -> None:
        body, field = _bad_bodies()[case]
        blobs = blob_count(app.state.context)
        response = put_update(client, fed["id"], 1, body, fed["p1"])
        problem = assert_problem(response, 422, "invalid-update")
        if field is not None:
            assert problem["field"] == field
        assert stored_update_count(app.state.context) == 0
        assert blob_count(app.state.context) == blobs

    def test_wrong_content_type_415(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        response = put_update(
            client, fed["id"], 1, update_bytes(), fed["p1"], content_type="application/json"
        )
        assert_problem(response, 415, "unsupported-media-type")
        assert stored_update_count(app.state.context) == 0

    def test_too_large_declared_413(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        limit = app.state.settings.max_upload_bytes
        response = put_update(client, fed["id"], 1, b"\0" * (limit + 1), fed["p1"])
        assert_problem(response, 413, "payload-too-large")
        assert stored_update_count(app.state.context) == 0

    def test_too_large_chunked_413(self, client: TestClient, app: FastAPI, fed: dict) -> None:
        limit = app.state.settings.max_upload_bytes

        def chunks():  # no Content-Length: the body arrives chunked
            for _ in range(limit // 65536 + 2):
                yield b"\0" * 65536

        response = client.put(
            f"/v1/federations/{fed['id']}/rounds/1/update",
            content=chunks(),
            headers={**fed["p1"], "Content-Type": "application/octet-stream"},
        )
        assert_problem(response, 413, "payload-too-large")
        assert stored_update_count(app.state.context) == 0

    def test_norm_bound(self, client: TestClient, app: FastAPI, admin_headers: dict) -> None:
        federation = create_federation(client, admin_headers, privacy={"max_update_norm": 0.5})
        _, participant = enrol(client, admin_headers, federation["id"])
        response = put_update(client, federation["id"], 1, update_bytes(), participant)
        problem = assert_problem(response, 422, "invalid-update")
        assert problem["field"] == "norm"
        assert stored_update_count(app.state.context) == 0
