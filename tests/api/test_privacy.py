"""Differential privacy through the API: policy validation, noisy aggregation,
``privacy_spent`` and completion at ``max_epsilon`` (on every backend)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.domain.accountant import pld_epsilon
from coordinator.domain.privacy import DPAggregation, clip_factor
from coordinator.domain.specs import DifferentialPrivacy
from participant_sdk.wire import Update, mf_spec
from tests.factories import (
    DIM,
    NUM_ITEMS,
    assert_problem,
    create_federation,
    dp_noise,
    enrol,
    evaluate,
    federation_body,
    put_update,
    random_deltas,
    update_bytes,
    wait_round_closed,
    weights,
)

DP_STRATEGY = {"name": "fedavg", "server_lr": 2.0, "normalization": "total", "weighting": "uniform"}


def _dp(**overrides: Any) -> dict[str, Any]:
    return {"clip_norm": 0.5, "noise_multiplier": 1.0, **overrides}


def _run_round(
    client: TestClient, fid: str, number: int, parts: list[dict[str, str]], admin: dict
) -> list[dict[str, np.ndarray]]:
    deltas = [random_deltas(seed=number * 10 + i) for i in range(len(parts))]
    for headers, delta in zip(parts, deltas, strict=True):
        body = update_bytes(round=number, base_version=number - 1, deltas=delta)
        assert put_update(client, fid, number, body, headers).status_code == 201
    # every active participant uploaded, so the round closes by itself
    assert wait_round_closed(client, fid, number, admin)["state"] == "closed"
    return deltas


class TestPolicyValidation:
    @pytest.mark.parametrize(
        ("strategy", "needs"),
        [
            ({"name": "fedavg"}, 'strategy.weighting = "uniform"'),
            ({"name": "fedavg", "weighting": "uniform"}, 'strategy.normalization = "total"'),
            ({"name": "fedavg", "normalization": "total"}, 'strategy.weighting = "uniform"'),
        ],
    )
    def test_dp_needs_uniform_total(
        self, client: TestClient, admin_headers: dict, strategy: dict, needs: str
    ) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(strategy=strategy, privacy={"dp": _dp()}),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert needs in body["detail"]
        assert body["field"] == "strategy"
        assert client.get("/v1/federations", headers=admin_headers).json()["items"] == []

    @pytest.mark.parametrize(
        ("dp", "where"),
        [
            (_dp(clip_norm=0), "privacy.dp.clip_norm"),
            (_dp(noise_multiplier=-1), "privacy.dp.noise_multiplier"),
            (_dp(delta=1.5), "privacy.dp.delta"),
            (_dp(max_epsilon=-1), "privacy.dp.max_epsilon"),
            (_dp(noise_multiplier=0, max_epsilon=3), "privacy.dp"),
            ({"noise_multiplier": 1}, "privacy.dp.clip_norm"),
            (_dp(epsilon=1), "privacy.dp.epsilon"),
        ],
    )
    def test_invalid_dp_fields(
        self, client: TestClient, admin_headers: dict, dp: dict, where: str
    ) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(strategy=DP_STRATEGY, privacy={"dp": dp}),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert body["detail"].startswith(where), body["detail"]

    def test_budget_below_one_round(self, client: TestClient, admin_headers: dict) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(strategy=DP_STRATEGY, privacy={"dp": _dp(max_epsilon=0.1)}),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert "raise max_epsilon or noise_multiplier" in body["detail"]
        assert body["single_round_epsilon"] == pytest.approx(pld_epsilon(1.0, 1.0, 1, 1e-5))


class TestNoisyAggregation:
    def test_without_dp_privacy_spent_is_null(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        assert fed["privacy"] == {"max_update_norm": None, "dp": None, "secure_aggregation": None}
        assert fed["privacy_spent"] is None

    def test_round_is_clipped_noised_and_accounted(
        self, client: TestClient, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the job draws the round's seed from the CSPRNG and keeps it in memory only: the
        # test catches the object as it is made, the one way to see the noise again
        drawn: list[DPAggregation] = []
        fresh = DPAggregation.fresh

        def recording(policy: DifferentialPrivacy, **options: Any) -> DPAggregation:
            drawn.append(fresh(policy, **options))
            return drawn[-1]

        monkeypatch.setattr(DPAggregation, "fresh", staticmethod(recording))
        fed = create_federation(client, admin_headers, strategy=DP_STRATEGY, privacy={"dp": _dp()})
        fid = fed["id"]
        assert fed["privacy"]["dp"] == {
            **_dp(),
            "delta": 1e-5,
            "max_epsilon": None,
            "adaptive_clipping": None,
        }
        assert fed["privacy_spent"] == {
            "epsilon": 0.0,
            "delta": 1e-5,
            "rounds": 0,
            "accountant": "pld",
            "sampling_rate": 1.0,
            "clip_norm": None,
            "next_clip_norm": None,
        }
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(3)]
        base = weights(client, fid, 0, admin_headers)
        deltas = _run_round(client, fid, 1, parts, admin_headers)

        # the same computation by hand: clip each update to 0.5, add the round's noise
        # (std 1.0 * 0.5) to the sum, divide by 3 updates, times server_lr 2
        assert len(drawn) == 1  # one draw per aggregation
        dp = drawn[0]
        assert (dp.clip_norm, dp.noise_multiplier) == (0.5, 1.0)
        # drawn in the model spec's order, as the accumulator draws them
        noise = dp_noise(dp, mf_spec(num_items=NUM_ITEMS, dim=DIM))
        new = weights(client, fid, 1, admin_headers)
        for name in base:
            total = noise[name].copy()
            for delta in deltas:
                update = Update(round=1, base_version=0, num_examples=10, tensors=delta)
                assert clip_factor(update, 0.5) < 1.0  # these deltas are clipped
                total += delta[name].astype(np.float64) * clip_factor(update, 0.5)
            expected = base[name].astype(np.float64) + 2.0 * total / 3
            np.testing.assert_allclose(new[name], expected.astype(np.float32), rtol=1e-6)

        spent = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert spent["privacy_spent"]["rounds"] == 1
        assert spent["privacy_spent"]["epsilon"] == pytest.approx(pld_epsilon(1.0, 1.0, 1, 1e-5))
        # a participant reads it too
        mine = client.get(f"/v1/federations/{fid}", headers=parts[0]).json()
        assert mine["privacy_spent"] == spent["privacy_spent"]

    def test_clipping_only_reports_unbounded_epsilon(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(
            client,
            admin_headers,
            strategy=DP_STRATEGY,
            privacy={"dp": _dp(noise_multiplier=0.0)},
        )
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, "p0")[1]]
        _run_round(client, fid, 1, parts, admin_headers)
        spent = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert spent["privacy_spent"] == {
            "epsilon": None,
            "delta": 1e-5,
            "rounds": 1,
            "accountant": "pld",
            "sampling_rate": 1.0,
            "clip_norm": None,
            "next_clip_norm": None,
        }


class TestBudget:
    def test_completes_before_exceeding_max_epsilon(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        z, delta = 2.0, 1e-5
        budget = (pld_epsilon(z, 1.0, 2, delta) + pld_epsilon(z, 1.0, 3, delta)) / 2
        fed = create_federation(
            client,
            admin_headers,
            strategy=DP_STRATEGY,
            rounds={"min_participants": 1, "max_rounds": 10},
            deploy={"policy": "latest"},
            privacy={"dp": _dp(noise_multiplier=z, max_epsilon=budget)},
        )
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(2)]
        _run_round(client, fid, 1, parts, admin_headers)
        assert client.get(f"/v1/federations/{fid}", headers=admin_headers).json()["state"] == (
            "active"
        )
        _run_round(client, fid, 2, parts, admin_headers)
        stopped = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert stopped["state"] == "evaluating"  # no third round: it would exceed the budget
        for headers in parts:  # the final version's validation figures complete it
            assert evaluate(client, fid, 2, headers).status_code == 201

        done = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert done["state"] == "completed"
        assert done["current_round"] is None
        assert done["latest_version"] == 2
        assert done["privacy_spent"]["rounds"] == 2
        assert done["privacy_spent"]["epsilon"] == pytest.approx(pld_epsilon(z, 1.0, 2, delta))
        assert done["privacy_spent"]["epsilon"] <= budget
        deployment = client.get(f"/v1/federations/{fid}/deployment", headers=admin_headers)
        assert deployment.json()["version"] == 2
        late = put_update(client, fid, 3, update_bytes(round=3, base_version=2), parts[0])
        assert_problem(late, 409, "federation-completed")
