"""Federations with compressed transport end to end: a real coordinator over HTTP, SDK
participants uploading row-sparse updates and downloading models in float16 or int8."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.partition import local_view
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender, UnprocessableEntityError
from participant_sdk.wire import Encoding
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

DIM = 8
ROUNDS = 3


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_compressed_federation_trains_over_http(server: ServerProcess, encoding: str) -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=5)
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            encoding,
            {"kind": "mf", "num_items": data.num_items, "dim": DIM, "seed": 1},
            rounds={"max_rounds": ROUNDS},
            catalog=data.item_ids,
            transport={"encoding": encoding},
        ).id
        assert admin.federations.get(fid).transport.encoding == encoding
        tokens = [admin.participants.enrol(fid, f"silo-{k}").token for k in range(2)]
        clients = [Client(server.url, token) for token in tokens]
        try:
            halves = (np.arange(0, 30), np.arange(30, 60))
            participants = [
                FederatedRecommender(client, fid, local_view(data, users))
                for client, users in zip(clients, halves, strict=True)
            ]
            assert all(p.encoding == encoding for p in participants)
            for number in range(1, ROUNDS + 1):
                assert [p.step() for p in participants] == ["uploaded", "uploaded"]
                admin.rounds.wait_for_next(fid, after=number, timeout=60)
            assert [p.step() for p in participants] == ["waiting", "waiting"]
            assert admin.federations.get(fid).state == "completed"
            test = [p.finish() for p in participants]
        finally:
            for client in clients:
                client.close()
        assert all("ndcg@10" in metrics for metrics in test)
        assert [r.update_count for r in admin.rounds.list(fid)] == [2] * ROUNDS
        versions = admin.models.list(fid)
        assert all(set(v.encodings or {}) == {encoding} for v in versions)
        # the coordinator refuses any other encoding, so every accepted upload was in this
        # one; the SDK verified each download against the signed manifest
        canonical = admin.models.weights(fid, ROUNDS, encoding="float32")["item_factors"]
        compressed = admin.models.weights(fid, ROUNDS)["item_factors"]
        assert compressed.dtype == np.float32
        peak = float(np.abs(canonical).max())
        np.testing.assert_allclose(
            np.asarray(compressed, np.float64), np.asarray(canonical, np.float64), atol=peak / 200
        )
        last = versions[-1]
        assert last.encodings is not None
        # at dim 8 int8's float32 scale per row costs half a byte per value; at dim 128
        # it is 1/32 (bench/compression.py measures the real sizes)
        assert last.encodings[encoding].size < last.size * 0.55
        # an encoding the federation does not serve is a 422 naming what it serves
        other: Encoding = "int8" if encoding == "float16" else "float16"
        with pytest.raises(UnprocessableEntityError, match="float32"):
            admin.models.weights(fid, ROUNDS, encoding=other)
