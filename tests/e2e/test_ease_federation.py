"""A federation of model kind ``ease`` end to end: real coordinator, HTTP, one Gram upload
per participant, one version per candidate lambda, the best validated one deployed."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.partition import local_view
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig, leave_one_out
from participant_sdk.recsys.ease import ease_weights, item_gram
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

LAMBDAS = [3.0, 30.0, 300.0]


@pytest.mark.slow
def test_ease_federation_equals_central_over_http(server: ServerProcess) -> None:
    data = make_synthetic(num_users=60, num_items=80, seed=5)
    rounds = len(LAMBDAS)
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            "ease",
            {"kind": "ease", "num_items": data.num_items, "ease_lambdas": LAMBDAS},
            rounds={"max_rounds": rounds},
            catalog=data.item_ids,
        ).id
        assert admin.federations.get(fid).model.kind == "ease"
        tokens = [admin.participants.enrol(fid, f"silo-{k}").token for k in range(2)]
        clients = [Client(server.url, token) for token in tokens]
        halves = (np.arange(0, 30), np.arange(30, 60))
        views = [local_view(data, users) for users in halves]
        try:
            with pytest.raises(ValueError, match="ease"):
                FederatedRecommender(clients[0], fid, views[0], config=BPRConfig())
            participants = [
                FederatedRecommender(client, fid, view)
                for client, view in zip(clients, views, strict=True)
            ]
            for number in range(1, rounds + 1):
                assert [p.step() for p in participants] == ["uploaded", "uploaded"]
                admin.rounds.wait_for_next(fid, after=number, timeout=60)
            assert admin.federations.get(fid).state == "evaluating"
            assert [p.step() for p in participants] == ["waiting", "waiting"]
            assert admin.federations.get(fid).state == "completed"
            test = [p.finish() for p in participants]
        finally:
            for client in clients:
                client.close()
        assert all("ndcg@10" in metrics for metrics in test)
        # round 1 carries the Grams; later rounds only the participants' "ready" updates
        assert [r.update_count for r in admin.rounds.list(fid)] == [2] * rounds
        # B of version r is the centralized EASE at lambda r on the pooled training splits
        trains = [leave_one_out(view).train for view in views]
        gram = item_gram(
            np.concatenate([trains[0].users, trains[1].users + trains[0].num_users]),
            np.concatenate([trains[0].items, trains[1].items]),
            data.num_items,
        )
        for version, lam in enumerate(LAMBDAS, start=1):
            b = np.asarray(admin.models.weights(fid, version)["ease_b"], dtype=np.float64)
            np.testing.assert_allclose(b, ease_weights(gram, lam), atol=1e-6)
        valid = {
            r.version: r.metrics["ndcg@10"] for r in admin.metrics(fid) if r.split == "validation"
        }
        assert set(range(1, rounds + 1)) <= set(valid)  # every lambda validated
        best = max(range(1, rounds + 1), key=lambda v: (valid[v], v))
        assert admin.federations.get(fid).deployed_version == best
