"""One participant cannot break the global model (issue 12, finding 2): updates are
clipped by default, an aggregation that would produce NaN or Inf fails its round
cleanly, and failed rounds are bounded (``rounds.max_failed_rounds``)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import NonFiniteAggregate
from coordinator.domain.federations import get_federation
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.model_versions import get_model_version
from coordinator.domain.rounds import get_round
from coordinator.domain.specs import DEFAULT_UPDATE_NORM_CLIP, StrategySpec
from participant_sdk.wire import decode_weights
from tests.factories import domain_federation, random_deltas, update_bytes

ADMIN = Principal(is_admin=True)


def _weights(ctx: Context, fid: str, version: int) -> dict[str, np.ndarray]:
    return decode_weights(ctx.blobs.get(get_model_version(ctx, ADMIN, fid, version).sha256))


def _upload(ctx: Context, fid: str, who: Principal, number: int, base: int, **kw: object) -> None:
    body = update_bytes(round=number, base_version=base, **kw)  # type: ignore[arg-type]
    rounds.submit_update(ctx, who, fid, number, body)


def test_the_audits_3e38_attack_leaves_the_model_finite_and_bounded(ctx: Context) -> None:
    """Three rounds of 3e38 deltas (with the largest weight allowed) drove the model to inf."""
    fid, (attacker, honest) = domain_federation(ctx, participants=2, max_rounds=5)
    base = _weights(ctx, fid, 0)
    huge = {name: np.full_like(d, 3e38) for name, d in random_deltas(0).items()}
    for number in (1, 2, 3):
        _upload(ctx, fid, attacker, number, number - 1, deltas=huge, num_examples=100_000_000)
        _upload(ctx, fid, honest, number, number - 1, seed=number)
        outcome = aggregation_job.run(ctx, fid, number, trigger=Trigger.UPLOAD)
        assert outcome.version is not None
        assert outcome.version.version == number
    final = _weights(ctx, fid, 3)
    assert all(np.isfinite(w).all() for w in final.values())
    moved = np.sqrt(sum(((final[k] - base[k]).astype(np.float64) ** 2).sum() for k in base))
    # each round's mean delta is a mean of clipped updates: at most the clip norm
    assert moved <= 3 * DEFAULT_UPDATE_NORM_CLIP * (1 + 1e-6)
    # the next round still takes (and aggregates) an honest update
    _upload(ctx, fid, honest, 4, 3, seed=4)
    _upload(ctx, fid, attacker, 4, 3, seed=5)
    assert aggregation_job.run(ctx, fid, 4, trigger=Trigger.UPLOAD).version is not None
    assert verify_lineage(ctx, fid).ok


def test_clipping_leaves_honest_updates_untouched(ctx: Context) -> None:
    clipped, (a,) = domain_federation(ctx, participants=1)
    unclipped, (b,) = domain_federation(
        ctx, participants=1, strategy=StrategySpec(update_norm_clip=None)
    )
    for fid, who in ((clipped, a), (unclipped, b)):
        _upload(ctx, fid, who, 1, 0, seed=3)
        aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
    assert (
        get_model_version(ctx, ADMIN, clipped, 1).sha256
        == get_model_version(ctx, ADMIN, unclipped, 1).sha256
    )


def test_clipping_bounds_a_large_update(ctx: Context) -> None:
    fid, (who,) = domain_federation(
        ctx, participants=1, strategy=StrategySpec(update_norm_clip=0.5)
    )
    deltas = random_deltas(0)
    norm = np.sqrt(sum((d.astype(np.float64) ** 2).sum() for d in deltas.values()))
    assert norm > 0.5
    _upload(ctx, fid, who, 1, 0, deltas=deltas)
    aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
    base, new = _weights(ctx, fid, 0), _weights(ctx, fid, 1)
    np.testing.assert_allclose(
        new["item_bias"].astype(np.float64),
        base["item_bias"] + deltas["item_bias"] * 0.5 / norm,
        rtol=1e-5,
        atol=1e-7,
    )


def _overflowing_state_federation(ctx: Context) -> tuple[str, Principal]:
    # FedAdam's second moment of a 1e30 delta is 1e58: inf in the float32 state blob
    fid, (who,) = domain_federation(
        ctx,
        participants=1,
        max_rounds=5,
        strategy=StrategySpec(name="fedadam", update_norm_clip=None),
    )
    huge = {name: np.full_like(d, 1e30) for name, d in random_deltas(0).items()}
    _upload(ctx, fid, who, 1, 0, deltas=huge)
    return fid, who


def test_a_non_finite_aggregate_fails_the_round_and_poisons_nothing(ctx: Context) -> None:
    fid, who = _overflowing_state_federation(ctx)
    outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
    assert outcome.step is Step.FAIL
    assert outcome.version is None
    failed = get_round(ctx, ADMIN, fid, 1)
    assert failed.state == "failed"
    assert failed.failure_reason is not None
    assert "not finite" in failed.failure_reason
    view = get_federation(ctx, ADMIN, fid)
    assert view.row.latest_version == 0  # nothing recorded
    assert view.row.current_round == 2
    assert get_round(ctx, ADMIN, fid, 2).base_version == 0
    # the next round is healthy: an honest update makes a finite version 1
    _upload(ctx, fid, who, 2, 0, seed=1)
    version = aggregation_job.run(ctx, fid, 2, trigger=Trigger.UPLOAD).version
    assert version is not None
    assert version.version == 1
    assert all(np.isfinite(w).all() for w in _weights(ctx, fid, 1).values())
    assert verify_lineage(ctx, fid).ok


def test_the_admin_is_told_why(ctx: Context) -> None:
    fid, _who = _overflowing_state_federation(ctx)
    with pytest.raises(NonFiniteAggregate, match="not finite"):
        aggregation_job.run(ctx, fid, 1, trigger=Trigger.ADMIN, principal=ADMIN)
    assert get_round(ctx, ADMIN, fid, 1).state == "failed"
