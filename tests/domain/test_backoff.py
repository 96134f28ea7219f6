"""Back-off of a diverging federation: an overflowing server step is halved until the
weights are finite, a validation collapse restores the best version; both are durable."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.backoff import restore_target
from coordinator.domain.context import Context
from coordinator.domain.evaluation import submit_evaluation
from coordinator.domain.lifecycle import Trigger
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.model_versions import get_model_version
from coordinator.domain.specs import StrategySpec
from participant_sdk.wire import decode_weights
from tests.factories import DIM, NUM_ITEMS, domain_federation, random_deltas, update_bytes

ADMIN = Principal(is_admin=True)


@pytest.mark.parametrize(
    ("scores", "base", "expected"),
    [
        ({0: 0.05, 1: 0.08, 2: 0.02}, 2, 1),  # below half the best: restore the best
        ({0: 0.05, 1: 0.08, 2: 0.05}, 2, None),  # worse, but not collapsed
        ({0: 0.05, 1: 0.08}, 2, None),  # the base is not validated yet
        ({0: 0.05, 1: 0.08}, 1, None),  # the base is the best
        ({0: 0.0, 1: 0.0}, 1, None),  # nothing learnt yet: nothing to restore
    ],
)
def test_restore_target(scores: dict[int, float], base: int, expected: int | None) -> None:
    assert restore_target(scores, base) == expected


def _round(ctx: Context, fid: str, who: Principal, number: int, deltas: dict) -> int:
    body = update_bytes(round=number, base_version=number - 1, deltas=deltas)
    rounds.submit_update(ctx, who, fid, number, body)
    version = aggregation_job.run(ctx, fid, number, trigger=Trigger.UPLOAD).version
    assert version is not None
    return version.version


def _weights(ctx: Context, fid: str, version: int) -> dict[str, np.ndarray]:
    return decode_weights(ctx.blobs.get(get_model_version(ctx, ADMIN, fid, version).sha256))


def test_an_overflowing_step_is_halved_until_finite_and_stays_halved(ctx: Context) -> None:
    # clipping off: the default update_norm_clip would keep the step far from overflowing
    fid, (who,) = domain_federation(
        ctx,
        participants=1,
        max_rounds=5,
        strategy=StrategySpec(server_lr=1000, update_norm_clip=None),
    )
    huge = {name: np.full_like(d, 3e36) for name, d in random_deltas(0).items()}
    assert _round(ctx, fid, who, 1, huge) == 1
    first = get_model_version(ctx, ADMIN, fid, 1)
    # 1000 * 3e36 overflows float32 (max ~3.4e38) until the step is scaled to 1/16
    assert first.step_scale == 1 / 16
    weights = _weights(ctx, fid, 1)
    assert all(np.isfinite(w).all() for w in weights.values())
    base = _weights(ctx, fid, 0)
    np.testing.assert_allclose(
        weights["item_bias"].astype(np.float64),
        base["item_bias"] + 1000 * 3e36 / 16,
        rtol=1e-6,
    )

    small = random_deltas(1)
    _round(ctx, fid, who, 2, small)
    second = get_model_version(ctx, ADMIN, fid, 2)
    assert second.step_scale == 1 / 16  # inherited: the back-off is durable
    np.testing.assert_allclose(
        _weights(ctx, fid, 2)["item_bias"].astype(np.float64),
        weights["item_bias"].astype(np.float64) + 1000 / 16 * small["item_bias"],
        rtol=1e-5,
    )
    assert verify_lineage(ctx, fid).ok


def test_a_validation_collapse_restores_the_best_version(ctx: Context) -> None:
    fid, (who,) = domain_federation(ctx, participants=1, max_rounds=10)
    for number in (1, 2):
        _round(ctx, fid, who, number, random_deltas(number))
    for version, ndcg in ((0, 0.05), (1, 0.08), (2, 0.02)):
        submit_evaluation(
            ctx, who, fid, version, split="validation", metrics={"ndcg@10": ndcg}, num_users=9
        )

    assert _round(ctx, fid, who, 3, random_deltas(3)) == 3
    v1, v3 = (get_model_version(ctx, ADMIN, fid, v) for v in (1, 3))
    assert v3.sha256 == v1.sha256  # the best version's weights, byte for byte
    assert (v3.parent, v3.restored_from, v3.step_scale) == (2, 1, 0.5)
    assert v3.contributors == []

    # the next round trains from the restored weights with the halved step
    step = random_deltas(4)
    _round(ctx, fid, who, 4, step)
    v4 = get_model_version(ctx, ADMIN, fid, 4)
    assert (v4.restored_from, v4.step_scale) == (None, 0.5)
    np.testing.assert_allclose(
        _weights(ctx, fid, 4)["item_factors"].astype(np.float64),
        _weights(ctx, fid, 3)["item_factors"].astype(np.float64) + 0.5 * step["item_factors"],
        rtol=1e-5,
        atol=1e-7,
    )
    assert verify_lineage(ctx, fid).ok
    assert (NUM_ITEMS, DIM) == _weights(ctx, fid, 4)["item_factors"].shape
