"""Federated EASE through the API, on SQLite and PostgreSQL: participants' Grams summed by
the real aggregation path give the centralized B (dense, or pruned to ``ease_top_k`` per
column), one version per candidate lambda, and the deploy policy picks the best validated
lambda; bad specs and non-Gram updates are 422."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.ease_solve import ease_model, solve_cost
from participant_sdk.recsys import Interactions
from participant_sdk.recsys.ease import ease_weights, item_gram
from participant_sdk.recsys.ease_trainer import local_gram_entries
from participant_sdk.wire import encode_update
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    wait_round_closed,
    weights,
)

N = 12
LAMBDAS = [1.0, 10.0, 100.0]
EASE = {"kind": "ease", "num_items": N, "ease_lambdas": LAMBDAS}


def _silo(seed: int, users: int = 15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(users) for i in rng.choice(N, size=4, replace=False)]
    u, i = np.array(pairs).T
    return u.astype(np.int64), i.astype(np.int64)


def _gram_upload(users: np.ndarray, items: np.ndarray, *, round: int, base: int) -> bytes:
    data = Interactions(
        users=users,
        items=items,
        ratings=np.ones(users.size),
        timestamps=np.zeros(users.size),
        user_ids=[str(u) for u in range(int(users.max()) + 1)],
        item_ids=[str(i) for i in range(N)],
    )
    keys, counts = local_gram_entries(data, N)  # the Gram's non-zeros, flat i * N + j
    assert np.array_equal(counts, item_gram(users, items, N).reshape(-1)[keys])
    return encode_update(
        {"ease_gram": counts}, round=round, base_version=base, num_examples=users.size, rows=keys
    )


def _ready(round: int, base: int) -> bytes:
    return encode_update(
        {"ease_gram": np.zeros(0, dtype=np.float32)},
        round=round,
        base_version=base,
        num_examples=1,
        rows=np.zeros(0, dtype=np.int64),
    )


def test_the_closed_forms_of_coordinator_and_sdk_agree() -> None:
    users, items = _silo(0, users=40)
    gram = item_gram(users, items, N)
    central = np.asarray(ease_weights(gram, 3.0), dtype=np.float64)
    np.testing.assert_allclose(ease_model(gram, 3.0)["ease_b"], central, atol=1e-6)


def test_federated_b_equals_centralized_and_best_lambda_deploys(
    client: TestClient, admin_headers: dict
) -> None:
    # the default cap (10 rounds) is more than the 3 lambdas: training stops after the last
    fed = create_federation(client, admin_headers, model=EASE, rounds={"min_participants": 3})
    fid = fed["id"]
    assert fed["model"]["ease_lambdas"] == LAMBDAS
    silos = [_silo(seed) for seed in range(3)]
    headers = [enrol(client, admin_headers, fid, f"p{k}")[1] for k in range(3)]
    v0 = weights(client, fid, 0, admin_headers)
    assert v0["ease_b"].shape == (N, N)
    assert not v0["ease_b"].any()
    for (users, items), h in zip(silos, headers, strict=True):
        body = _gram_upload(users, items, round=1, base=0)
        assert put_update(client, fid, 1, body, h).status_code == 201
    assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"

    pooled_users = np.concatenate([u + 100 * k for k, (u, _) in enumerate(silos)])
    pooled_items = np.concatenate([i for _, i in silos])
    pooled = item_gram(pooled_users, pooled_items, N)
    scores = {1: 0.2, 2: 0.5, 3: 0.3}  # lambda 10 validates best
    for number in (2, 3):
        for h in headers:
            evaluate(client, fid, number - 1, h, metrics={"ndcg@10": scores[number - 1]})
            assert put_update(client, fid, number, _ready(number, number - 1), h).status_code == 201
        assert wait_round_closed(client, fid, number, admin_headers)["state"] == "closed"
    for version, lam in enumerate(LAMBDAS, start=1):
        b = weights(client, fid, version, admin_headers)["ease_b"]
        np.testing.assert_allclose(b, ease_weights(pooled, lam), atol=1e-6)

    state = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (state["state"], state["latest_version"]) == ("evaluating", 3)
    for h in headers:
        evaluate(client, fid, 3, h, metrics={"ndcg@10": scores[3]})
    state = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (state["state"], state["deployed_version"]) == ("completed", 2)


def test_an_update_that_is_no_gram_is_refused(client: TestClient, admin_headers: dict) -> None:
    fid = create_federation(client, admin_headers, model=EASE)["id"]
    _, h = enrol(client, admin_headers, fid)
    negative = -np.ones(1, dtype=np.float32)
    body = encode_update(
        {"ease_gram": negative}, round=1, base_version=0, num_examples=1, rows=np.array([0])
    )
    problem = assert_problem(put_update(client, fid, 1, body, h), 422, "invalid-update")
    assert problem["field"] == "ease_gram"
    mf_shaped = encode_update(
        {"item_factors": np.zeros((N, 2), np.float32)}, round=1, base_version=0, num_examples=1
    )
    assert_problem(put_update(client, fid, 1, mf_shaped, h), 422, "invalid-update")
    # a count for (0, 1) without the same count for (1, 0) is no Gram
    lopsided = encode_update(
        {"ease_gram": np.array([2.0, 1.0, 1.0], np.float32)},
        round=1,
        base_version=0,
        num_examples=2,
        rows=np.array([0, 1, N + 1]),  # (0, 0), (0, 1), (1, 1): (1, 0) is missing
    )
    problem = assert_problem(put_update(client, fid, 1, lopsided, h), 422, "invalid-update")
    assert "symmetric" in problem["detail"]
    # the former item-row layout (rows of N counts) is not the flat co-occurrence list
    item_rows = encode_update(
        {"ease_gram": np.ones((1, N), np.float32)},
        round=1,
        base_version=0,
        num_examples=1,
        rows=np.array([0]),
    )
    assert_problem(put_update(client, fid, 1, item_rows, h), 422, "invalid-update")


def test_a_pruned_federation_ships_the_centralized_pruned_b(
    client: TestClient, admin_headers: dict
) -> None:
    """ease_top_k: every version is the top-k per column of the pooled solve, the same
    bytes the centralized baseline computes (same function, same summed Gram), and the
    stored state is the sparse Gram, from which round 2 solves its lambda."""
    top_k = 4
    model = {**EASE, "ease_lambdas": LAMBDAS[:2], "ease_top_k": top_k}
    fid = create_federation(client, admin_headers, model=model, rounds={"min_participants": 3})[
        "id"
    ]
    silos = [_silo(seed) for seed in range(3)]
    headers = [enrol(client, admin_headers, fid, f"p{k}")[1] for k in range(3)]
    v0 = weights(client, fid, 0, admin_headers)
    assert set(v0) == {"ease_b_index", "ease_b_value"}
    assert v0["ease_b_value"].shape == (N, top_k)
    for (users, items), h in zip(silos, headers, strict=True):
        assert (
            put_update(client, fid, 1, _gram_upload(users, items, round=1, base=0), h).status_code
            == 201
        )
    assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
    for h in headers:
        evaluate(client, fid, 1, h, metrics={"ndcg@10": 0.1})
        assert put_update(client, fid, 2, _ready(2, 1), h).status_code == 201
    assert wait_round_closed(client, fid, 2, admin_headers)["state"] == "closed"

    pooled_users = np.concatenate([u + 100 * k for k, (u, _) in enumerate(silos)])
    pooled = item_gram(pooled_users, np.concatenate([i for _, i in silos]), N, dtype=np.float32)
    for version, lam in enumerate(LAMBDAS[:2], start=1):
        federated = weights(client, fid, version, admin_headers)
        central = ease_model(pooled, lam, top_k=top_k)
        for name in ("ease_b_index", "ease_b_value"):
            np.testing.assert_array_equal(federated[name], central[name])
        # and the pruning kept each column's largest off-diagonal |B_ij|
        dense = ease_weights(pooled, lam)
        kept = np.abs(dense[federated["ease_b_index"][3].astype(int), 3])
        dropped = np.delete(np.abs(dense[:, 3]), federated["ease_b_index"][3].astype(int))
        assert kept.min() >= dropped.max() - 1e-6


@pytest.mark.parametrize(
    ("model", "rounds", "privacy"),
    [
        ({"kind": "ease", "num_items": 20_001}, None, None),
        ({**EASE, "ease_lambdas": [0.0]}, None, None),
        ({**EASE, "ease_lambdas": []}, None, None),
        ({**EASE, "ease_lambdas": [10, 10]}, None, None),
        ({**EASE, "ease_top_k": N}, None, None),  # top_k must prune
        ({"kind": "mf", "num_items": N, "dim": 2, "ease_top_k": 2}, None, None),
        ({"kind": "mf", "num_items": N}, None, None),  # mf needs its dim
        (EASE, None, {"dp": {"clip_norm": 1, "noise_multiplier": 1}}),
    ],
)
def test_ease_specs_are_validated(
    client: TestClient, admin_headers: dict, model: dict, rounds: dict | None, privacy: dict | None
) -> None:
    body: dict = {"name": "bad", "model": model, "rounds": rounds or {"max_rounds": 3}}
    if privacy:
        body["privacy"] = privacy
        body["strategy"] = {"weighting": "uniform", "normalization": "total"}
    response = client.post("/v1/federations", json=body, headers=admin_headers)
    assert_problem(response, 422, "validation-error")


def test_an_ease_federation_over_the_memory_budget_is_refused(
    settings: Settings, admin_headers: dict
) -> None:
    """FEDREC_EASE_MEMORY_BUDGET_BYTES: a solve that would need more is a 422 naming the
    estimate, the budget and the largest catalog that fits (which is accepted)."""
    budget = 64 * 2**20  # 64 MiB: ~2,000 items dense in float64
    small = settings.model_copy(update={"ease_memory_budget_bytes": budget})
    with TestClient(create_app(small, run_timer=False)) as client:
        body = {"name": "big", "model": {"kind": "ease", "num_items": 5_000}}
        problem = assert_problem(
            client.post("/v1/federations", json=body, headers=admin_headers),
            422,
            "validation-error",
        )
        assert problem["field"] == "model.num_items"
        assert problem["budget_bytes"] == budget
        assert problem["needed_bytes"] == solve_cost(5_000).peak_bytes > budget
        fits = problem["max_items"]
        assert 0 < fits < 5_000
        assert solve_cost(fits).peak_bytes <= budget < solve_cost(fits + 1).peak_bytes
        assert "FEDREC_EASE_MEMORY_BUDGET_BYTES" in problem["detail"]
        # pruning shrinks the model, not the solve's work array: still over at 5,000
        body["model"] = {"kind": "ease", "num_items": 5_000, "ease_top_k": 64}
        assert_problem(
            client.post("/v1/federations", json=body, headers=admin_headers),
            422,
            "validation-error",
        )
        body["model"] = {"kind": "ease", "num_items": fits}
        created = client.post("/v1/federations", json=body, headers=admin_headers)
        assert created.status_code == 201, created.text
