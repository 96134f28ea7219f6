"""Reduce-on-plateau of the server step and deployment on a smoothed curve, through the
domain services: the decayed step is recorded on each version (lineage), survives a
restart of the coordinator, and the deploy and stop policies read the smoothed curve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.deployment import deployed_version
from coordinator.domain.evaluation import submit_evaluation
from coordinator.domain.lifecycle import FederationState, Trigger
from coordinator.domain.lineage import verify_lineage, version_manifest
from coordinator.domain.model_versions import get_model_version
from coordinator.domain.specs import DeployPolicy, StrategySpec
from coordinator.store.repository import FederationRepository
from participant_sdk.wire import decode_weights
from tests.factories import domain_federation, random_deltas, update_bytes

ADMIN = Principal(is_admin=True)


def _round(ctx: Context, fid: str, who: Principal, number: int, base_score: float) -> None:
    """The participant reports its base version on validation, then uploads."""
    submit_evaluation(
        ctx,
        who,
        fid,
        number - 1,
        split="validation",
        metrics={"ndcg@10": base_score},
        num_users=9,
    )
    body = update_bytes(round=number, base_version=number - 1, deltas=random_deltas(number))
    rounds.submit_update(ctx, who, fid, number, body)
    assert aggregation_job.run(ctx, fid, number, trigger=Trigger.UPLOAD).version is not None


def _scale(ctx: Context, fid: str, version: int) -> float:
    return get_model_version(ctx, ADMIN, fid, version).step_scale


def _weights(ctx: Context, fid: str, version: int) -> dict[str, np.ndarray]:
    return decode_weights(ctx.blobs.get(get_model_version(ctx, ADMIN, fid, version).sha256))


def test_the_step_halves_on_each_plateau_and_the_decay_survives_a_restart(
    ctx: Context, settings: Settings
) -> None:
    fid, (who,) = domain_federation(
        ctx,
        participants=1,
        max_rounds=10,
        strategy=StrategySpec(plateau_decay=0.5, plateau_patience=2, update_norm_clip=None),
    )
    # v0 0.10, v1 0.20 (best), v2 0.19, v3 0.18: v3 is 2 past the best, one plateau
    for number, score in enumerate([0.10, 0.20, 0.19, 0.18], start=1):
        _round(ctx, fid, who, number, score)
    assert [_scale(ctx, fid, v) for v in (1, 2, 3, 4)] == [1.0, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(
        _weights(ctx, fid, 4)["item_bias"].astype(np.float64),
        _weights(ctx, fid, 3)["item_bias"].astype(np.float64) + 0.5 * random_deltas(4)["item_bias"],
        rtol=1e-5,
        atol=1e-7,
    )

    # a restarted coordinator derives the same step from what is stored
    restarted = build_context(settings)
    try:
        _round(restarted, fid, who, 5, 0.17)  # the wait restarted at v3: v4 is 1 past it
        assert _scale(restarted, fid, 5) == 0.5
        _round(restarted, fid, who, 6, 0.16)  # v5 is 2 past: the second plateau
        assert _scale(restarted, fid, 6) == 0.25
        # the step is part of each version's signed lineage manifest
        row = get_model_version(restarted, ADMIN, fid, 6)
        assert json.loads(version_manifest(fid, row, privacy=None))["step_scale"] == 0.25
        assert verify_lineage(restarted, fid).ok
    finally:
        restarted.sessions.kw["bind"].dispose()


def test_without_plateau_decay_the_step_stays(ctx: Context) -> None:
    fid, (who,) = domain_federation(ctx, participants=1, max_rounds=10)
    for number, score in enumerate([0.10, 0.20, 0.19, 0.18, 0.17], start=1):
        _round(ctx, fid, who, number, score)
    assert _scale(ctx, fid, 5) == 1.0


# a lucky spike at v2, then a climbing region; after round n versions 0 .. n-1 are
# evaluated. Raw (window 1): v2 is the best and v4 is 2 past it: stop after round 5,
# deploy v2. Smoothed over 3: v2 0.2, v3 0.233, v4 0.2, v5 0.3, v6 0.333, v7 0.267, v8 0.2
# (v8 with v7 only, when round 9 closes): v8 is 2 past v6, stop after round 9; with
# v9's report v6 is still the best.
CURVE = [0.0, 0.1, 0.4, 0.1, 0.2, 0.3, 0.4, 0.3, 0.1, 0.1, 0.1]


@pytest.mark.parametrize(("window", "stopped_after", "deployed"), [(1, 5, 2), (3, 9, 6)])
def test_the_stop_and_deploy_policies_read_the_smoothed_curve(
    ctx: Context, window: int, stopped_after: int, deployed: int
) -> None:
    fid, (who,) = domain_federation(
        ctx, participants=1, max_rounds=20, patience=2, deploy=DeployPolicy(window=window)
    )
    for number, score in enumerate(CURVE, start=1):
        _round(ctx, fid, who, number, score)
        if _state(ctx, fid) != FederationState.ACTIVE:
            break
    assert number == stopped_after
    assert _state(ctx, fid) == FederationState.EVALUATING
    submit_evaluation(
        ctx,
        who,
        fid,
        number,
        split="validation",
        metrics={"ndcg@10": CURVE[number]},
        num_users=9,
    )
    assert _state(ctx, fid) == FederationState.COMPLETED
    with ctx.read_sessions() as session:
        assert deployed_version(session, fid) == deployed


def _state(ctx: Context, fid: str) -> str:
    with ctx.read_sessions() as session:
        federation = FederationRepository(session).get(fid)
        assert federation is not None
        return federation.state
