"""Compressed transport (``transport.encoding``): creation, strict uploads, aggregation,
downloads per encoding with their own ETags and signed digests; on every backend."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.numpy import load

from coordinator.domain.context import Context
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.specs import ModelSpec, TransportPolicy
from coordinator.domain.transport import check_transport
from participant_sdk.wire import (
    ENCODING_HEADER,
    MANIFEST_HEADER,
    SIGNATURE_HEADER,
    decode_model,
    decode_update,
    encode_update,
    encode_weights,
    mf_spec,
    verify_manifest,
)
from tests.factories import (
    DIM,
    NUM_ITEMS,
    assert_problem,
    create_federation,
    enrol,
    put_update,
    random_deltas,
    tamper_blob,
    wait_round_closed,
)

COMPRESSED = ["float16", "int8"]
SPEC = mf_spec(num_items=NUM_ITEMS, dim=DIM)


def _federation(client: TestClient, admin: dict[str, str], encoding: str) -> str:
    fed = create_federation(
        client, admin, transport={"encoding": encoding}, rounds={"max_rounds": 3}
    )
    assert fed["transport"] == {"encoding": encoding}
    return str(fed["id"])


def _weights(client: TestClient, fid: str, headers: dict[str, str], **params: str) -> Any:
    return client.get(
        f"/v1/federations/{fid}/models/latest/weights", headers=headers, params=params
    )


def _signed(client: TestClient, response: Any, headers: dict[str, str]) -> dict[str, Any]:
    key = client.get("/v1/signing-key", headers=headers).json()["public_key"]
    return verify_manifest(
        response.headers[MANIFEST_HEADER], response.headers[SIGNATURE_HEADER], key
    )


def _update(encoding: str, seed: int = 0, round: int = 1, base: int = 0) -> bytes:
    return encode_update(
        random_deltas(seed), round=round, base_version=base, num_examples=10, encoding=encoding
    )


class TestCreate:
    def test_default_is_float32(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        assert fed["transport"] == {"encoding": "float32"}
        version = client.get(f"/v1/federations/{fed['id']}/models/0", headers=admin_headers).json()
        assert version["encodings"] is None
        assert "encodings" not in json.loads(version["manifest"])

    @pytest.mark.parametrize("encoding", COMPRESSED)
    def test_version_0_is_stored_and_signed_in_the_encoding(
        self, client: TestClient, admin_headers: dict, encoding: str
    ) -> None:
        fid = _federation(client, admin_headers, encoding)
        version = client.get(f"/v1/federations/{fid}/models/0", headers=admin_headers).json()
        assert set(version["encodings"]) == {encoding}
        assert json.loads(version["manifest"])["encodings"] == version["encodings"]

    def test_ease_is_refused(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json={
                "name": "e",
                "model": {"kind": "ease", "num_items": 5},
                "transport": {"encoding": "int8"},
            },
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert body["field"] == "transport.encoding"
        assert "ease" in body["detail"]

    def test_unknown_encoding_is_refused(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json={
                "name": "x",
                "model": {"kind": "mf", "num_items": 5, "dim": 2},
                "transport": {"encoding": "int4"},
            },
            headers=admin_headers,
        )
        assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("encoding", COMPRESSED)
def test_a_secure_aggregation_federation_refuses_compression(
    client: TestClient, admin_headers: dict, encoding: str
) -> None:
    response = client.post(
        "/v1/federations",
        json={
            "name": "s",
            "model": {"kind": "mf", "num_items": 5, "dim": 2},
            "strategy": {
                "name": "fedavg",
                "weighting": "uniform",
                "normalization": "total",
                "update_norm_clip": None,
            },
            "privacy": {"secure_aggregation": {"threshold": 2, "clip_norm": 1.0}},
            "transport": {"encoding": encoding},
        },
        headers=admin_headers,
    )
    body = assert_problem(response, 422, "validation-error")
    assert body["field"] == "transport.encoding"
    assert "fixed-point" in body["detail"]


@pytest.mark.parametrize("encoding", COMPRESSED)
def test_compression_with_secure_aggregation_is_refused(encoding: str) -> None:
    """The rule the secure-aggregation federations hook into (privacy.secure_aggregation)."""
    model = ModelSpec(kind="mf", num_items=5, dim=2)
    with pytest.raises(ValidationFailed, match="fixed-point") as err:
        check_transport(model, TransportPolicy(encoding=encoding), secure_aggregation=True)
    assert err.value.extra["field"] == "transport.encoding"
    check_transport(model, TransportPolicy(), secure_aggregation=True)
    check_transport(model, TransportPolicy(encoding=encoding), secure_aggregation=False)


class TestUpload:
    @pytest.mark.parametrize("encoding", COMPRESSED)
    def test_updates_in_the_encoding_are_aggregated_in_float32(
        self, client: TestClient, admin_headers: dict, encoding: str
    ) -> None:
        fid = _federation(client, admin_headers, encoding)
        base = decode_model(
            _weights(client, fid, admin_headers, encoding="float32").content, "float32"
        )
        participants = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(2)]
        sent = [_update(encoding, seed=i) for i in range(2)]
        for body, headers in zip(sent, participants, strict=True):
            assert put_update(client, fid, 1, body, headers).status_code == 201
        assert wait_round_closed(client, fid, 1, admin_headers)["result_version"] == 1
        new = decode_model(
            _weights(client, fid, admin_headers, encoding="float32").content, "float32"
        )
        decoded = [decode_update(b, SPEC, encoding=encoding).tensors for b in sent]
        for name in SPEC:
            # fedavg, equal weights, server_lr 1: base + the mean of the decoded deltas
            expected = base[name] + (decoded[0][name] + decoded[1][name]) / 2
            np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize(
        ("federation", "sent"),
        [("float32", "float16"), ("float16", "float32"), ("int8", "float16"), ("float16", "int8")],
    )
    def test_another_encoding_is_refused(
        self, client: TestClient, admin_headers: dict, federation: str, sent: str
    ) -> None:
        fid = create_federation(client, admin_headers, transport={"encoding": federation})["id"]
        _, headers = enrol(client, admin_headers, fid)
        body = assert_problem(
            put_update(client, fid, 1, _update(sent), headers), 422, "invalid-update"
        )
        assert body["field"] == "encoding"
        assert federation in body["detail"]

    def test_wrong_dtype_is_refused(self, client: TestClient, admin_headers: dict) -> None:
        fid = _federation(client, admin_headers, "float16")
        _, headers = enrol(client, admin_headers, fid)
        tensors = dict(load(_update("float16")))
        tensors["item_bias"] = tensors["item_bias"].astype(np.float32)
        body = encode_weights(
            tensors,
            {"round": "1", "base_version": "0", "num_examples": "10", "encoding": "float16"},
        )
        problem = assert_problem(put_update(client, fid, 1, body, headers), 422, "invalid-update")
        assert problem["field"] == "item_bias"
        assert "float16" in problem["detail"]

    @pytest.mark.parametrize("bad", [float("nan"), 0.0, float("inf")])
    def test_bad_int8_scales_are_refused(
        self, client: TestClient, admin_headers: dict, bad: float
    ) -> None:
        fid = _federation(client, admin_headers, "int8")
        _, headers = enrol(client, admin_headers, fid)
        tensors = dict(load(_update("int8")))
        tensors["item_factors.scale"] = tensors["item_factors.scale"].copy()
        tensors["item_factors.scale"][0] = bad
        body = encode_weights(
            tensors,
            {"round": "1", "base_version": "0", "num_examples": "10", "encoding": "int8"},
        )
        problem = assert_problem(put_update(client, fid, 1, body, headers), 422, "invalid-update")
        assert problem["field"] == "item_factors.scale"
        assert "finite, positive" in problem["detail"]

    def test_sparse_rows_out_of_range_are_refused(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers, "int8")
        _, headers = enrol(client, admin_headers, fid)
        rows = np.array([1, NUM_ITEMS], dtype=np.int64)
        deltas = {k: v[:2] for k, v in random_deltas().items()}
        body = encode_update(
            deltas, round=1, base_version=0, num_examples=3, rows=rows, encoding="int8"
        )
        problem = assert_problem(put_update(client, fid, 1, body, headers), 422, "invalid-update")
        assert problem["field"] == "rows"


class TestDownload:
    @pytest.mark.parametrize("encoding", COMPRESSED)
    def test_each_encoding_has_its_etag_and_signed_digest(
        self, client: TestClient, admin_headers: dict, encoding: str
    ) -> None:
        fid = _federation(client, admin_headers, encoding)
        _, headers = enrol(client, admin_headers, fid)
        assert put_update(client, fid, 1, _update(encoding), headers).status_code == 201
        wait_round_closed(client, fid, 1, admin_headers)
        default = _weights(client, fid, headers)
        compressed = _weights(client, fid, headers, encoding=encoding)
        canonical = _weights(client, fid, headers, encoding="float32")
        assert default.content == compressed.content
        assert default.headers[ENCODING_HEADER] == encoding
        assert canonical.headers[ENCODING_HEADER] == "float32"
        digests = {
            name: hashlib.sha256(response.content).hexdigest()
            for response, name in ((compressed, encoding), (canonical, "float32"))
        }
        for response, name in ((compressed, encoding), (canonical, "float32")):
            assert response.headers["etag"] == f'"{digests[name]}"'
            # one signed manifest names the bytes of both encodings
            fields = _signed(client, response, headers)
            assert fields["version"] == 1
            assert fields["sha256"] == digests["float32"]
            assert fields["encodings"][encoding]["sha256"] == digests[encoding]
        assert digests[encoding] != digests["float32"]
        assert len(compressed.content) < len(canonical.content)
        # the compressed model decodes close to the canonical one
        near = decode_model(compressed.content, encoding)
        exact = decode_model(canonical.content, "float32")
        for name, value in exact.items():
            np.testing.assert_allclose(near[name], value, atol=np.abs(value).max() / 200)

    @pytest.mark.parametrize("encoding", COMPRESSED)
    def test_304_per_encoding(self, client: TestClient, admin_headers: dict, encoding: str) -> None:
        fid = _federation(client, admin_headers, encoding)
        compressed = _weights(client, fid, admin_headers, encoding=encoding)
        canonical_etag = _weights(client, fid, admin_headers, encoding="float32").headers["etag"]
        same = {**admin_headers, "If-None-Match": compressed.headers["etag"]}
        assert _weights(client, fid, same, encoding=encoding).status_code == 304
        # the float32 ETag does not revalidate the compressed bytes, nor the other way round
        other = {**admin_headers, "If-None-Match": canonical_etag}
        assert _weights(client, fid, other, encoding=encoding).status_code == 200
        assert _weights(client, fid, same, encoding="float32").status_code == 200

    def test_an_encoding_not_served_is_422(self, client: TestClient, admin_headers: dict) -> None:
        fid = _federation(client, admin_headers, "float16")
        body = assert_problem(
            _weights(client, fid, admin_headers, encoding="int8"), 422, "validation-error"
        )
        assert body["field"] == "encoding"
        assert body["offered"] == ["float32", "float16"]
        plain = create_federation(client, admin_headers)["id"]
        assert_problem(
            _weights(client, plain, admin_headers, encoding="float16"), 422, "validation-error"
        )
        assert_problem(
            _weights(client, plain, admin_headers, encoding="bf16"), 422, "validation-error"
        )

    def test_float32_federation_downloads_are_unchanged(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fid = create_federation(client, admin_headers)["id"]
        default = _weights(client, fid, admin_headers)
        assert default.headers[ENCODING_HEADER] == "float32"
        assert default.content == _weights(client, fid, admin_headers, encoding="float32").content
        fields = _signed(client, default, admin_headers)
        assert fields["sha256"] == hashlib.sha256(default.content).hexdigest()
        assert "encodings" not in fields


class TestLineage:
    def _ctx(self, app: FastAPI) -> Context:
        ctx: Context = app.state.context
        return ctx

    def test_compressed_versions_verify(
        self, app: FastAPI, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers, "int8")
        _, headers = enrol(client, admin_headers, fid)
        assert put_update(client, fid, 1, _update("int8"), headers).status_code == 201
        wait_round_closed(client, fid, 1, admin_headers)
        assert verify_lineage(self._ctx(app), fid).ok

    def test_a_changed_compressed_blob_is_reported(
        self, app: FastAPI, client: TestClient, admin_headers: dict
    ) -> None:
        fid = _federation(client, admin_headers, "float16")
        version = client.get(f"/v1/federations/{fid}/models/0", headers=admin_headers).json()
        digest = version["encodings"]["float16"]["sha256"]
        tamper_blob(self._ctx(app), digest)
        report = verify_lineage(self._ctx(app), fid)
        assert not report.ok
        assert report.reason == "the float16 weights blob was changed"

    def test_compressed_bytes_must_encode_the_float32_weights(
        self, app: FastAPI, client: TestClient, admin_headers: dict
    ) -> None:
        """A signed compressed copy that says something else than the float32 version."""
        from sqlalchemy import update

        from coordinator.store.models import ModelVersion
        from participant_sdk.wire import encode_model

        ctx = self._ctx(app)
        fid = _federation(client, admin_headers, "float16")
        other = encode_model(random_deltas(3), "float16", {"kind": "model"})
        digest = ctx.blobs.put(other)
        with ctx.sessions.begin() as session:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.federation_id == fid)
                .values(encodings={"float16": {"sha256": digest, "size": len(other)}})
            )
        report = verify_lineage(ctx, fid)
        # the row no longer matches its signed manifest, and the bytes are not the encoding
        assert not report.ok
        assert "encodings" in (report.reason or "")


def test_manifest_header_is_base64_json(client: TestClient, admin_headers: dict) -> None:
    fid = _federation(client, admin_headers, "int8")
    response = _weights(client, fid, admin_headers)
    manifest = json.loads(base64.b64decode(response.headers[MANIFEST_HEADER]))
    assert manifest["encodings"]["int8"]["size"] == len(response.content)
