"""Robust aggregators through the HTTP app: a federation runs a round with each one, a
sign-flipped x100 update moves the mean but not the robust aggregates, and the settings
are validated (refused with DP and for ease)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    federation_body,
    put_update,
    random_deltas,
    update_bytes,
    wait_round_closed,
    weights,
)

PARTICIPANTS = 5  # four honest, one hostile

ROBUST: dict[str, dict[str, Any]] = {
    "median": {"aggregator": "median", "min_contributors": 3},
    "trimmed_mean": {"aggregator": "trimmed_mean", "trim_fraction": 0.2, "min_contributors": 3},
    "multi_krum": {"aggregator": "multi_krum", "krum_byzantine_fraction": 0.2},
}


def _run_round(
    client: TestClient, admin: dict[str, str], strategy: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One round: four participants send the same delta, the fifth -100 times it.
    Returns the federation, the base weights and version 1's weights."""
    fed = create_federation(client, admin, strategy={"name": "fedavg", **strategy})
    headers = [enrol(client, admin, fed["id"], f"p{i}")[1] for i in range(PARTICIPANTS)]
    honest = random_deltas(seed=1)
    hostile = {name: -100 * delta for name, delta in honest.items()}
    for index, participant in enumerate(headers):
        deltas = hostile if index == PARTICIPANTS - 1 else honest
        response = put_update(client, fed["id"], 1, update_bytes(deltas=deltas), participant)
        assert response.status_code == 201, response.text
    base = weights(client, fed["id"], 0, admin)
    assert wait_round_closed(client, fed["id"], 1, admin)["state"] == "closed"
    return fed, base, weights(client, fed["id"], 1, admin)


@pytest.mark.parametrize("name", sorted(ROBUST))
def test_a_robust_aggregator_ignores_the_hostile_update(
    client: TestClient, admin_headers: dict[str, str], name: str
) -> None:
    fed, base, new = _run_round(client, admin_headers, ROBUST[name])
    assert fed["strategy"]["aggregator"] == name
    honest = random_deltas(seed=1)
    for tensor, delta in honest.items():
        expected = base[tensor].astype(np.float64) + delta.astype(np.float64)
        np.testing.assert_allclose(new[tensor], expected.astype(np.float32), rtol=1e-6)


def test_the_mean_follows_the_hostile_update(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    _, base, new = _run_round(client, admin_headers, {"aggregator": "mean"})
    honest = random_deltas(seed=1)
    for tensor, delta in honest.items():
        # (4 d - 100 d) / 5 with equal example weights
        expected = base[tensor].astype(np.float64) - 19.2 * delta.astype(np.float64)
        np.testing.assert_allclose(new[tensor], expected.astype(np.float32), rtol=1e-5)


def test_the_settings_are_served_back(client: TestClient, admin_headers: dict[str, str]) -> None:
    fed = create_federation(client, admin_headers, strategy={"name": "fedavg", **ROBUST["median"]})
    got = client.get(f"/v1/federations/{fed['id']}", headers=admin_headers).json()["strategy"]
    assert got["aggregator"] == "median"
    assert got["min_contributors"] == 3


class TestRefused:
    def test_under_dp(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        strategy = {"aggregator": "median", "weighting": "uniform", "normalization": "total"}
        body = federation_body(
            strategy=strategy, privacy={"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}}
        )
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        problem = assert_problem(response, 422, "validation-error")
        assert "privacy.dp" in problem["detail"]

    def test_for_ease(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        body = federation_body(
            model={"kind": "ease", "num_items": 20}, strategy={"aggregator": "multi_krum"}
        )
        response = client.post("/v1/federations", json=body, headers=admin_headers)
        problem = assert_problem(response, 422, "validation-error")
        assert "ease" in problem["detail"]

    @pytest.mark.parametrize(
        "strategy",
        [
            {"aggregator": "trimmed_mean", "trim_fraction": 0.5},
            {"aggregator": "median", "min_contributors": 0},
            {"aggregator": "multi_krum", "krum_byzantine_fraction": -0.1},
            {"aggregator": "geometric_median"},
        ],
    )
    def test_out_of_range(
        self, client: TestClient, admin_headers: dict[str, str], strategy: dict[str, Any]
    ) -> None:
        response = client.post(
            "/v1/federations", json=federation_body(strategy=strategy), headers=admin_headers
        )
        assert_problem(response, 422, "validation-error")
