"""The strategy interface: aggregator and server optimizer as separate pieces, and a
server optimizer's state carried durably from version to version."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.aggregation import FedAvgAccumulator, FedAvgStep, WeightedMean
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.garbage import collect_garbage
from coordinator.domain.lifecycle import Trigger
from coordinator.domain.model_versions import get_model_version
from coordinator.domain.specs import (
    StrategySpec,
)
from coordinator.domain.strategy import Strategy
from participant_sdk.wire import Update, decode_weights, mf_spec
from tests.factories import domain_federation, local_blobs, random_deltas, update_bytes

ADMIN = Principal(is_admin=True)
NUM_ITEMS, DIM = 20, 4


def test_strategy_of_mean_and_fedavg_step_equals_the_accumulator() -> None:
    spec = mf_spec(num_items=6, dim=2)
    rng = np.random.default_rng(3)
    updates = [
        Update(
            round=1,
            base_version=0,
            num_examples=n,
            tensors={
                "item_factors": rng.standard_normal((3, 2)).astype(np.float32),
                "item_bias": rng.standard_normal(3).astype(np.float32),
            },
            rows=np.array(rows, dtype=np.int64),
        )
        for n, rows in ((3, [0, 2, 4]), (5, [1, 2, 5]))
    ]
    base = {"item_factors": np.ones((6, 2), np.float32), "item_bias": np.zeros(6, np.float32)}
    accumulator = FedAvgAccumulator(spec, server_lr=2.0, row_normalization="total")
    strategy = Strategy(WeightedMean(spec, row_normalization="total"), FedAvgStep(2.0))
    for update in updates:
        accumulator.add(update)
        strategy.add(update)
    weights, state = strategy.result(base, {})
    assert state == {}  # FedAvg keeps no server state
    for name, expected in accumulator.result(base).items():
        np.testing.assert_array_equal(weights[name], expected)


class Momentum:
    """A stateful server optimizer for the test: FedAvgM with momentum 0.5."""

    def step(
        self,
        name: str,
        base: npt.NDArray[np.generic],
        delta: npt.NDArray[np.float64],
        state: Mapping[str, npt.NDArray[np.generic]],
        touched: npt.NDArray[np.bool_] | None = None,  # noqa: ARG002 - dense updates only
    ) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float32]]]:
        previous = state.get(f"momentum.{name}")
        velocity = delta if previous is None else 0.5 * previous.astype(np.float64) + delta
        new = np.asarray(base, dtype=np.float64) + velocity
        return new, {f"momentum.{name}": velocity.astype(np.float32)}


def test_server_state_is_stored_with_each_version_and_resumed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    def momentum_strategy(_spec: StrategySpec, tensors: object, *, dp: object) -> Strategy:
        assert dp is None
        return Strategy(WeightedMean(tensors), Momentum())  # type: ignore[arg-type]

    monkeypatch.setattr(aggregation_job, "build_strategy", momentum_strategy)
    fid, (participant,) = domain_federation(ctx, participants=1, max_rounds=5)
    deltas = [random_deltas(seed) for seed in (1, 2)]
    for number, delta in enumerate(deltas, start=1):
        body = update_bytes(round=number, base_version=number - 1, deltas=delta)
        rounds.submit_update(ctx, participant, fid, number, body)
        # another process (a fresh context) aggregates round 2: the state comes from storage
        runner = ctx if number == 1 else Context(**{**ctx.__dict__, "settings_cache": {}})
        outcome = aggregation_job.run(runner, fid, number, trigger=Trigger.UPLOAD)
        assert outcome.version is not None

    v0, v1, v2 = (get_model_version(ctx, ADMIN, fid, v) for v in (0, 1, 2))
    assert v0.server_state_sha256 is None
    assert v1.server_state_sha256 is not None
    assert v2.server_state_sha256 is not None
    state_1 = decode_weights(ctx.blobs.get(v1.server_state_sha256))
    np.testing.assert_allclose(
        np.asarray(state_1["momentum.item_bias"], np.float64), deltas[0]["item_bias"], rtol=1e-6
    )
    base = decode_weights(ctx.blobs.get(v0.sha256))
    final = decode_weights(ctx.blobs.get(v2.sha256))
    for name in base:
        velocity = 0.5 * deltas[0][name].astype(np.float64) + deltas[1][name]
        expected = base[name].astype(np.float64) + deltas[0][name] + velocity
        np.testing.assert_allclose(
            np.asarray(final[name], np.float64), expected, rtol=1e-5, atol=1e-6
        )

    # garbage collection keeps state blobs: a later round reads them
    then = time.time() - 3 * 24 * 3600
    for path in local_blobs(ctx).root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))
    collect_garbage(ctx, grace_seconds=0)
    assert ctx.blobs.get(v2.server_state_sha256)
