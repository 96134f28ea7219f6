"""A federation of model kind ``ials`` end to end: real coordinator, HTTP, dense uploads."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.partition import local_view
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig, IALSConfig
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

DIM = 8
ROUNDS = 3


@pytest.mark.slow
def test_ials_federation_trains_over_http(server: ServerProcess) -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=5)
    # strengths like play counts: implicit ALS weighs them, splits and metrics do not
    data.ratings = np.random.default_rng(0).integers(1, 50, size=len(data)).astype(np.float64)
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            "ials",
            {"kind": "ials", "num_items": data.num_items, "dim": DIM, "seed": 1},
            rounds={"max_rounds": ROUNDS},
            catalog=data.item_ids,
        ).id
        assert admin.federations.get(fid).model.kind == "ials"
        tokens = [admin.participants.enrol(fid, f"silo-{k}").token for k in range(2)]
        clients = [Client(server.url, token) for token in tokens]
        try:
            halves = (np.arange(0, 30), np.arange(30, 60))
            # the model kind is the federation's: a BPR config cannot join it
            with pytest.raises(ValueError, match="ials"):
                FederatedRecommender(
                    clients[0], fid, local_view(data, halves[0]), config=BPRConfig()
                )
            participants = [
                FederatedRecommender(
                    client, fid, local_view(data, users), config=IALSConfig(alpha=5)
                )
                for client, users in zip(clients, halves, strict=True)
            ]
            assert all(p.config == IALSConfig(dim=DIM, alpha=5) for p in participants)
            for number in range(1, ROUNDS + 1):
                assert [p.step() for p in participants] == ["uploaded", "uploaded"]
                admin.rounds.wait_for_next(fid, after=number, timeout=60)
            # training stopped: each participant reports the final version, which completes it
            assert admin.federations.get(fid).state == "evaluating"
            assert [p.step() for p in participants] == ["waiting", "waiting"]
            assert admin.federations.get(fid).state == "completed"
            test = [p.finish() for p in participants]
        finally:
            for client in clients:
                client.close()
        assert all("ndcg@10" in metrics for metrics in test)
        assert [r.update_count for r in admin.rounds.list(fid)] == [2] * ROUNDS
        assert [v.version for v in admin.models.list(fid)] == list(range(ROUNDS + 1))
        first = np.asarray(admin.models.weights(fid, 0)["item_factors"], dtype=np.float64)
        last = admin.models.weights(fid, ROUNDS)
        # dense updates: every item row moved; the bias stays 0
        moved = np.abs(np.asarray(last["item_factors"], dtype=np.float64) - first).sum(axis=1) > 0
        assert moved.all()
        assert not np.asarray(last["item_bias"]).any()
        assert np.isfinite(last["item_factors"]).all()
        valid = {
            r.version: r.metrics["ndcg@10"] for r in admin.metrics(fid) if r.split == "validation"
        }
        assert valid[ROUNDS - 1] > valid[0]
        assert ROUNDS in valid  # the final version was evaluated too
