"""EASE's solve at scale (coordinator.domain.ease_solve): the in-place Cholesky inverse is
the closed form, float32 above the float64 size ranks alike, the top-k pruning keeps each
column's largest weights, and the cost model grows as it should."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.domain import ease_solve
from coordinator.domain.ease_solve import (
    INDEX_TENSOR,
    MODEL_TENSOR,
    VALUE_TENSOR,
    ease_model,
    ease_precision,
    prune_columns,
    solve_cost,
)
from participant_sdk.recsys.ease import ease_weights, item_gram


def _gram(num_items: int = 40, users: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(users), 6)
    i = rng.integers(0, num_items, u.size)
    return item_gram(u, i, num_items, dtype=np.float32)


def test_the_cholesky_inverse_is_the_closed_form_and_leaves_the_gram_alone() -> None:
    gram = _gram()
    before = gram.copy()
    precision = ease_precision(gram, 5.0)
    reference = np.linalg.inv(gram.astype(np.float64) + 5.0 * np.eye(40))
    np.testing.assert_allclose(precision, reference, atol=1e-12)
    np.testing.assert_array_equal(precision, precision.T)  # both triangles filled
    np.testing.assert_array_equal(gram, before)
    dense = ease_model(gram, 5.0)[MODEL_TENSOR]
    assert dense.dtype == np.float32
    np.testing.assert_allclose(dense, ease_weights(gram, 5.0), atol=1e-6)
    assert not np.diag(dense).any()


def test_float32_above_the_float64_size_gives_nearly_the_same_b(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gram = _gram()
    exact = ease_model(gram, 5.0)[MODEL_TENSOR]
    monkeypatch.setattr(ease_solve, "FLOAT64_MAX_ITEMS", 10)
    assert ease_solve.solve_dtype(40) == np.float32
    single = ease_model(gram, 5.0)[MODEL_TENSOR]
    np.testing.assert_allclose(single, exact, atol=1e-5)
    # and the same input gives the same bytes (replays and the centralized baseline)
    assert ease_model(gram, 5.0)[MODEL_TENSOR].tobytes() == single.tobytes()


def test_pruning_keeps_each_columns_largest_off_diagonal_weights() -> None:
    gram = _gram()
    dense = ease_weights(gram, 5.0)
    pruned = ease_model(gram, 5.0, top_k=6)
    assert set(pruned) == {INDEX_TENSOR, VALUE_TENSOR}
    index, value = pruned[INDEX_TENSOR], pruned[VALUE_TENSOR]
    assert index.shape == value.shape == (40, 6)
    for j in range(40):
        kept = index[j].astype(np.int64)
        assert np.array_equal(kept, np.sort(kept))  # ascending source items
        assert j not in kept  # never the (zero) diagonal
        np.testing.assert_allclose(value[j], dense[kept, j], atol=1e-6)
        others = np.setdiff1d(np.arange(40), np.r_[kept, j])
        assert np.abs(dense[kept, j]).min() >= np.abs(dense[others, j]).max() - 1e-7


def test_pruning_refuses_a_k_that_prunes_nothing() -> None:
    with pytest.raises(ValueError, match="top_k"):
        prune_columns(np.eye(5), 5)
    with pytest.raises(ValueError, match="top_k"):
        prune_columns(np.eye(5), 0)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_bad_lambdas_and_grams_are_refused(lam: float) -> None:
    with pytest.raises(ValueError, match="lambda"):
        ease_precision(_gram(), lam)
    with pytest.raises(ValueError, match="square"):
        ease_precision(np.zeros((3, 4)), 1.0)
    bad = _gram()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        ease_precision(bad, 1.0)


def test_the_cost_model_grows_with_the_cube_and_prices_the_pruned_model() -> None:
    small, large = solve_cost(6_000), solve_cost(12_000)
    assert large.cpu_seconds == pytest.approx(8 * small.cpu_seconds)
    assert solve_cost(18_000).dtype == "float32"
    assert solve_cost(2_000).dtype == "float64"
    dense, pruned = solve_cost(18_000), solve_cost(18_000, 512)
    assert dense.model_bytes == 4 * 18_000**2
    assert pruned.model_bytes == 8 * 18_000 * 512
    # Gram + one float32 work array dominate: ~2.6 GB at 18 000 items, not 3.2 GB per λ
    assert 2.4 * 2**30 < pruned.peak_bytes < 3 * 2**30
