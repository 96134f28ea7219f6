"""Robust aggregators, hand-computed: coordinate-wise median and trimmed mean per item
row over the updates that sent the row (with the min-contributor fallback to the clipped
mean), Multi-Krum, clipping, determinism, and the spec-level refusals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from coordinator.domain.errors import ValidationFailed
from coordinator.domain.robust_aggregation import ROW_BLOCK, CoordinateWise, MultiKrum
from coordinator.domain.specs import (
    DifferentialPrivacy,
    ModelSpec,
    PrivacyPolicy,
    StrategySpec,
)
from coordinator.domain.strategy import build_strategy, check_aggregator
from participant_sdk.wire import TensorSpec, Update

# one 1-column tensor: each row's value is one number, easy to compute by hand
SPEC = {"w": TensorSpec("w", "F32", (4, 1))}


def _dense(values: Sequence[float], n: int = 1) -> Update:
    w = np.array(values, dtype=np.float32).reshape(-1, 1)
    return Update(round=1, base_version=0, num_examples=n, tensors={"w": w})


def _sparse(rows: Sequence[int], values: Sequence[float], n: int = 1) -> Update:
    w = np.array(values, dtype=np.float32).reshape(-1, 1)
    return Update(
        round=1,
        base_version=0,
        num_examples=n,
        tensors={"w": w},
        rows=np.array(rows, dtype=np.int64),
    )


def _deltas(aggregator: CoordinateWise | MultiKrum) -> np.ndarray:
    deltas = dict(aggregator.mean_deltas())
    return deltas["w"].ravel()


def test_median_of_dense_updates_ignores_one_outlier() -> None:
    agg = CoordinateWise(SPEC, statistic="median", min_contributors=1)
    for values in ([1, 2, 3, 4], [2, 3, 4, 5], [1000, -1000, 1000, -1000]):
        agg.add(_dense(values))
    # per coordinate: median(1, 2, 1000) = 2; median(2, 3, -1000) = 2; ...
    np.testing.assert_array_equal(_deltas(agg), [2, 2, 4, 4])


def test_median_of_an_even_count_is_the_midpoint() -> None:
    agg = CoordinateWise(SPEC, statistic="median", min_contributors=1)
    for values in ([1, 0, 0, 0], [3, 0, 0, 0], [10, 0, 0, 0], [100, 0, 0, 0]):
        agg.add(_dense(values))
    assert _deltas(agg)[0] == 6.5  # (3 + 10) / 2


def test_median_per_row_over_the_updates_that_sent_it() -> None:
    agg = CoordinateWise(SPEC, statistic="median", min_contributors=2)
    agg.add(_sparse([0, 1], [1, 10]))
    agg.add(_sparse([0, 2], [3, 20]))
    agg.add(_sparse([0, 1, 2], [100, 30, 40]))
    agg.add(_sparse([3], [7], n=3))
    # row 0: median(1, 3, 100) = 3 (3 senders); row 1: median(10, 30) = 20;
    # row 2: median(20, 40) = 30; row 3: one sender < 2 -> the weighted mean: 7
    np.testing.assert_array_equal(_deltas(agg), [3, 20, 30, 7])
    np.testing.assert_array_equal(agg.contributors("w"), [3, 2, 2, 1])
    np.testing.assert_array_equal(agg.touched("w"), [True, True, True, True])


def test_fallback_is_the_weighted_mean_of_the_rows_senders() -> None:
    agg = CoordinateWise(SPEC, statistic="median", min_contributors=3)
    agg.add(_sparse([0, 1], [2, 4], n=1))
    agg.add(_sparse([0, 1], [8, 10], n=3))
    agg.add(_sparse([0], [5], n=1))
    # row 0 has 3 senders: median(2, 8, 5) = 5; row 1 has 2 < 3: (1*4 + 3*10) / 4 = 8.5;
    # rows 2 and 3: nobody, delta 0 and untouched
    np.testing.assert_array_equal(_deltas(agg), [5, 8.5, 0, 0])
    np.testing.assert_array_equal(agg.touched("w"), [True, True, False, False])


def test_trimmed_mean_drops_the_extremes_per_row() -> None:
    agg = CoordinateWise(SPEC, statistic="trimmed_mean", trim_fraction=0.25, min_contributors=2)
    agg.add(_dense([1, 1, 1, 1]))
    agg.add(_dense([2, 2, 2, 2]))
    agg.add(_dense([3, 3, 3, 3]))
    agg.add(_sparse([0, 1], [-100, 4]))
    agg.add(_sparse([0], [100]))
    # row 0: 5 senders, floor(1.25) = 1 cut per end: mean(1, 2, 3) = 2
    # row 1: 4 senders, cut 1 per end of (1, 2, 3, 4): mean(2, 3) = 2.5
    # rows 2, 3: 3 senders, floor(0.75) = 0 cut: mean(1, 2, 3) = 2
    np.testing.assert_allclose(_deltas(agg), [2, 2.5, 2, 2])


def test_trimmed_mean_with_no_trim_is_the_unweighted_mean() -> None:
    agg = CoordinateWise(SPEC, statistic="trimmed_mean", trim_fraction=0.0, min_contributors=1)
    agg.add(_dense([1, 2, 3, 4], n=100))
    agg.add(_dense([3, 4, 5, 6], n=1))
    np.testing.assert_array_equal(_deltas(agg), [2, 3, 4, 5])  # one vote each


def test_updates_are_clipped_before_the_statistic() -> None:
    agg = CoordinateWise(SPEC, statistic="median", min_contributors=1, clip_norm=1.0)
    agg.add(_dense([0, 0, 0, 4]))  # norm 4: scaled by 1/4
    agg.add(_dense([0, 0, 0, 0.5]))
    agg.add(_dense([0, 0, 0, 3]))  # norm 3: scaled by 1/3
    assert _deltas(agg)[3] == 1.0  # median(1, 0.5, 1)


def test_a_scalar_tensor_is_one_row() -> None:
    spec = {"s": TensorSpec("s", "F32", ())}
    agg = CoordinateWise(spec, statistic="median", min_contributors=1)
    for value in (1.0, 5.0, 2.0):
        agg.add(Update(1, 0, 1, {"s": np.array(value, dtype=np.float32)}))
    assert dict(agg.mean_deltas())["s"] == 2.0


def test_row_blocks_agree_with_one_block() -> None:
    # more rows than one working block: the block edges must not change the result
    rows = ROW_BLOCK + 7
    spec = {"w": TensorSpec("w", "F32", (rows, 2))}
    rng = np.random.default_rng(0)
    updates = []
    for k in range(5):
        sent = np.sort(rng.choice(rows, size=rows // 2 + k, replace=False)).astype(np.int64)
        w = rng.standard_normal((sent.size, 2)).astype(np.float32)
        updates.append(Update(round=1, base_version=0, num_examples=1, tensors={"w": w}, rows=sent))
    agg = CoordinateWise(spec, statistic="median", min_contributors=1)
    for update in updates:
        agg.add(update)
    got = dict(agg.mean_deltas())["w"]
    full = np.full((5, rows, 2), np.nan)
    for k, update in enumerate(updates):
        assert update.rows is not None
        full[k, update.rows] = update.tensors["w"]
    sent_any = ~np.isnan(full[:, :, 0]).all(axis=0)
    expected = np.zeros((rows, 2))
    expected[sent_any] = np.nanmedian(full[:, sent_any], axis=0)
    np.testing.assert_array_equal(got, expected)


def test_multi_krum_drops_the_updates_far_from_the_rest() -> None:
    agg = MultiKrum(SPEC, byzantine_fraction=0.4, weighting="uniform")
    honest = ([1, 1, 1, 1], [1.2, 1, 1, 1], [1, 0.8, 1, 1])
    for values in honest:
        agg.add(_dense(values))
    agg.add(_dense([-100, -100, -100, -100]))
    agg.add(_sparse([0], [50]))
    # n = 5, f = floor(0.4 * 5) = 2: keep the 3 updates with the lowest sum of squared
    # distances to their n - f - 2 = 1 nearest neighbour: the three honest ones
    assert agg.selected() == [0, 1, 2]
    np.testing.assert_allclose(_deltas(agg), np.mean(np.array(honest), axis=0))


def test_multi_krum_distances_treat_unsent_rows_as_zero() -> None:
    agg = MultiKrum(SPEC, byzantine_fraction=0.0)
    agg.add(_sparse([0], [3]))
    agg.add(_sparse([1], [4]))
    agg.add(_dense([3, 4, 0, 0]))
    distances = agg._distances()  # noqa: SLF001 - the hand-computed distances
    np.testing.assert_allclose(distances, [[0, 25, 16], [25, 0, 9], [16, 9, 0]])


def test_multi_krum_keeps_only_the_selected_rows_touched() -> None:
    agg = MultiKrum(SPEC, byzantine_fraction=0.25)
    for _ in range(3):
        agg.add(_sparse([0, 1], [1, 1]))
    agg.add(_sparse([3], [1000]))
    # n = 4, f = 1: the far sparse update is dropped, and so is its row
    assert agg.selected() == [0, 1, 2]
    np.testing.assert_array_equal(agg.touched("w"), [True, True, False, False])
    np.testing.assert_array_equal(_deltas(agg), [1, 1, 0, 0])


@pytest.mark.parametrize("aggregator", ["median", "trimmed_mean", "multi_krum"])
def test_robust_strategies_are_deterministic(aggregator: str) -> None:
    spec = StrategySpec.model_validate({"aggregator": aggregator})
    rng = np.random.default_rng(3)
    updates = [_dense(list(rng.standard_normal(4))) for _ in range(7)]
    base = {"w": np.zeros((4, 1), np.float32)}
    results = []
    for _ in range(2):
        strategy = build_strategy(spec, SPEC, dp=None)
        for update in updates:
            strategy.add(update)
        results.append(strategy.result(base, {})[0]["w"].tobytes())
    assert results[0] == results[1]


def test_robust_aggregators_need_individual_updates() -> None:
    assert StrategySpec().needs_individual_updates is False
    assert StrategySpec(aggregator="median").needs_individual_updates is True


def test_robust_aggregator_is_refused_under_dp() -> None:
    privacy = PrivacyPolicy(dp=DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0))
    spec = StrategySpec(aggregator="median", weighting="uniform", normalization="total")
    with pytest.raises(ValidationFailed, match="cannot run under privacy.dp"):
        check_aggregator(ModelSpec(kind="mf", num_items=4, dim=1), spec, privacy)


def test_robust_aggregator_is_refused_for_ease() -> None:
    with pytest.raises(ValidationFailed, match="kind 'ease'"):
        check_aggregator(
            ModelSpec(kind="ease", num_items=4),
            StrategySpec(aggregator="trimmed_mean"),
            PrivacyPolicy(),
        )
