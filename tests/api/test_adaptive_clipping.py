"""Adaptive clipping through the API (on every backend): the policy's 422s, a round that
clips to C and hands on the geometric update of C, and C surviving a restart."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import aggregation_job
from coordinator.domain.accountant import pld_epsilon
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.privacy import DPAggregation, update_noise_multiplier
from coordinator.domain.specs import DifferentialPrivacy
from coordinator.store.repository import ModelVersionRepository
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    federation_body,
    put_update,
    random_deltas,
    update_bytes,
    wait_round_closed,
)

DP_STRATEGY = {"name": "fedavg", "normalization": "total", "weighting": "uniform"}
SCALES = (0.2, 1.0, 5.0)  # per participant: the update norms straddle C


def _norm(deltas: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.square(t, dtype=np.float64).sum()) for t in deltas.values()))


def _deltas(number: int) -> list[dict[str, np.ndarray]]:
    return [
        {name: t * scale for name, t in random_deltas(seed=number * 10 + i).items()}
        for i, scale in enumerate(SCALES)
    ]


def _dp(clip_norm: float, **adaptive: Any) -> dict[str, Any]:
    return {"clip_norm": clip_norm, "noise_multiplier": 1.0, "adaptive_clipping": adaptive}


class TestPolicyValidation:
    @pytest.mark.parametrize(
        ("privacy", "where", "says"),
        [
            (
                {"dp": _dp(1.0, clipped_count_stddev=0.5)},
                "privacy.dp",
                "clipped_count_stddev 0.5 must exceed noise_multiplier / 2",
            ),
            (
                {"dp": _dp(1.0, target_quantile=1.5)},
                "privacy.dp.adaptive_clipping.target_quantile",
                "",
            ),
            ({"dp": _dp(1.0, learning_rate=-1)}, "privacy.dp.adaptive_clipping.learning_rate", ""),
            ({"dp": _dp(1.0, quantile=0.5)}, "privacy.dp.adaptive_clipping.quantile", ""),
            (
                {"dp": _dp(1.0), "secure_aggregation": {"threshold": 2}},
                "privacy",
                "cannot run with privacy.secure_aggregation",
            ),
        ],
    )
    def test_refused_with_what_to_fix(
        self, client: TestClient, admin_headers: dict, privacy: dict, where: str, says: str
    ) -> None:
        response = client.post(
            "/v1/federations",
            json=federation_body(strategy=DP_STRATEGY, privacy=privacy),
            headers=admin_headers,
        )
        body = assert_problem(response, 422, "validation-error")
        assert body["detail"].startswith(where), body["detail"]
        assert says in body["detail"]
        assert client.get("/v1/federations", headers=admin_headers).json()["items"] == []


class TestAdaptiveRounds:
    def test_c_adapts_and_survives_a_restart(
        self, settings: Settings, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        drawn: list[DPAggregation] = []
        fresh = DPAggregation.fresh

        def recording(policy: DifferentialPrivacy, **options: Any) -> DPAggregation:
            drawn.append(fresh(policy, **options))
            return drawn[-1]

        count_stds: list[float] = []

        def no_count_noise(std: float) -> float:
            count_stds.append(std)
            return 0.0  # production draws from the CSPRNG; here the count is exact

        monkeypatch.setattr(DPAggregation, "fresh", staticmethod(recording))
        monkeypatch.setattr(aggregation_job, "draw_count_noise", no_count_noise)

        # C just above the middle participant's norm: two of three unclipped in round 1
        initial = _norm(_deltas(1)[1]) * 1.01
        policy = _dp(initial, target_quantile=0.5, learning_rate=0.2)
        app = create_app(settings, run_timer=False)
        with TestClient(app) as client:
            fed = create_federation(
                client, admin_headers, strategy=DP_STRATEGY, privacy={"dp": policy}
            )
            fid = fed["id"]
            assert fed["privacy"]["dp"]["adaptive_clipping"] == {
                "target_quantile": 0.5,
                "learning_rate": 0.2,
                "clipped_count_stddev": None,
            }
            parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(3)]
            first = self._round(client, fid, 1, parts, admin_headers)

        unclipped = sum(_norm(d) <= initial for d in _deltas(1))
        assert unclipped == 2
        handed_on = initial * math.exp(-0.2 * (unclipped / 3 - 0.5))
        assert first["clip_norm"] == pytest.approx(initial)
        assert first["next_clip_norm"] == pytest.approx(handed_on)
        # sigma_b = max(3 / 20, z) = 1; the updates' sum got z_delta, the account says z
        assert count_stds == [1.0]
        assert drawn[0].clip_norm == pytest.approx(initial)
        assert drawn[0].noise_multiplier == pytest.approx(update_noise_multiplier(1.0, 1.0))
        assert first["epsilon"] == pytest.approx(pld_epsilon(1.0, 1.0, 1, 1e-5))

        restarted = create_app(settings, run_timer=False)
        with TestClient(restarted) as client:
            # the new process reads C from the recorded version, not from the policy
            spent = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
            assert spent["privacy_spent"]["next_clip_norm"] == pytest.approx(handed_on)
            second = self._round(client, fid, 2, parts, admin_headers)
            # the C handed on is signed with the version: the lineage still verifies
            assert verify_lineage(restarted.state.context, fid).ok
            with restarted.state.context.read_sessions() as session:
                row = ModelVersionRepository(session).get(fid, 1)
                assert row is not None
                assert row.manifest is not None
                signed = json.loads(row.manifest)["privacy_spent"]
            assert signed["next_clip_norm"] == pytest.approx(handed_on)
        assert drawn[1].clip_norm == pytest.approx(handed_on)
        assert second["clip_norm"] == pytest.approx(handed_on)
        unclipped = sum(_norm(d) <= handed_on for d in _deltas(2))
        assert second["next_clip_norm"] == pytest.approx(
            handed_on * math.exp(-0.2 * (unclipped / 3 - 0.5))
        )
        assert second["rounds"] == 2

    @staticmethod
    def _round(
        client: TestClient, fid: str, number: int, parts: list[dict[str, str]], admin: dict
    ) -> dict[str, Any]:
        for headers, delta in zip(parts, _deltas(number), strict=True):
            body = update_bytes(round=number, base_version=number - 1, deltas=delta)
            assert put_update(client, fid, number, body, headers).status_code == 201
        assert wait_round_closed(client, fid, number, admin)["state"] == "closed"
        version = client.get(f"/v1/federations/{fid}/models/{number}", headers=admin).json()
        spent: dict[str, Any] = version["privacy_spent"]
        return spent
