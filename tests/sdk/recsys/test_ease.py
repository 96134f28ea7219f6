"""Centralized EASE against a direct dense reference (Steck 2019); the pruned B's scores and
the flat Gram upload of a participant."""

from __future__ import annotations

import numpy as np
import pytest

from participant_sdk.recsys import ease
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.ease import EASEModel, PrunedB, ease_weights, item_gram
from participant_sdk.recsys.ease_trainer import local_gram_entries


def _random_pairs(seed: int, users: int, items: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), rng.integers(0, items, n)


def _dense(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    x = np.zeros(shape)
    x[users, items] = 1.0
    return x


class TestItemGram:
    @pytest.mark.parametrize("speedup", [0.0, float("inf")], ids=["pairs", "dense-blocks"])
    def test_equals_xtx_with_duplicates_counted_once(
        self, monkeypatch: pytest.MonkeyPatch, speedup: float
    ) -> None:
        monkeypatch.setattr(ease, "DENSE_SPEEDUP", speedup)
        monkeypatch.setattr(ease, "PAIR_CHUNK", 50)  # many chunks / blocks
        users, items = _random_pairs(0, 40, 25, 600)  # plenty of duplicate pairs
        x = _dense(users, items, (40, 25))
        gram = item_gram(users, items, 25)
        assert np.array_equal(gram, x.T @ x)

    def test_empty_and_out_of_range(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        assert not item_gram(empty, empty, 3).any()
        with pytest.raises(ValueError, match="item indices"):
            item_gram(np.array([0]), np.array([3]), 3)


class TestEaseWeights:
    def test_matches_the_closed_form_with_zero_diagonal(self) -> None:
        users, items = _random_pairs(1, 30, 12, 150)
        x = _dense(users, items, (30, 12))
        lam = 5.0
        p = np.linalg.inv(x.T @ x + lam * np.eye(12))
        reference = np.eye(12) - p / np.diag(p)[None, :]
        weights = ease_weights(item_gram(users, items, 12), lam)
        assert np.allclose(weights, reference, atol=1e-6, rtol=0)
        assert np.array_equal(np.diag(weights), np.zeros(12))

    def test_float32_ranks_like_float64(self) -> None:
        users, items = _random_pairs(2, 60, 20, 400)
        gram = item_gram(users, items, 20)
        w64 = ease_weights(gram, 10.0)
        w32 = ease_weights(gram, 10.0, dtype=np.float32)
        assert w32.dtype == np.float32
        assert np.allclose(w32, w64, atol=1e-4)

    def test_leaves_the_gram_unchanged_unless_told(self) -> None:
        gram = np.array([[2.0, 1.0], [1.0, 3.0]])
        kept = ease_weights(gram, 1.0)
        assert np.array_equal(gram, [[2.0, 1.0], [1.0, 3.0]])
        consumed = ease_weights(gram, 1.0, overwrite=True)
        assert np.array_equal(consumed, kept)
        assert np.array_equal(gram, [[3.0, 1.0], [1.0, 4.0]])  # λ added in place

    @pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf")])
    def test_refuses_a_non_positive_lambda(self, lam: float) -> None:
        with pytest.raises(ValueError, match="lambda"):
            ease_weights(np.eye(2), lam)

    def test_refuses_bad_grams(self) -> None:
        with pytest.raises(ValueError, match="square"):
            ease_weights(np.ones((2, 3)), 1.0)
        with pytest.raises(ValueError, match="NaN"):
            ease_weights(np.array([[1.0, np.nan], [np.nan, 1.0]]), 1.0)


def test_model_scores_are_user_rows_times_b() -> None:
    users, items = _random_pairs(3, 15, 10, 60)
    n = users.size
    train = Interactions(
        users=users,
        items=items,
        timestamps=np.zeros(n),
        ratings=np.ones(n),
        user_ids=[str(u) for u in range(15)],
        item_ids=[str(i) for i in range(10)],
    )
    model = EASEModel(train, 2.0)
    x = _dense(users, items, (15, 10))
    asked = np.array([4, 0, 9])
    assert np.allclose(model.score(asked), x[asked] @ model.weights)


def test_pruned_b_scores_equal_the_dense_product_of_the_pruned_matrix() -> None:
    rng = np.random.default_rng(4)
    n, k = 30, 5
    index = np.stack([np.sort(rng.choice(n, size=k, replace=False)) for _ in range(n)])
    value = rng.standard_normal((n, k)).astype(np.float32)
    dense = np.zeros((n, n), dtype=np.float32)
    for j in range(n):
        dense[index[j], j] = value[j]
    user_rows = np.array([0, 0, 1, 2, 2, 2, 0])
    items = np.array([3, 7, 7, 1, 2, 29, 3])  # (0, 3) twice: counted once
    x = np.zeros((4, n), dtype=np.float32)
    x[user_rows, items] = 1.0
    pruned = PrunedB(index.astype(np.float32), value)
    np.testing.assert_allclose(pruned.scores(user_rows, items, 4), x @ dense, atol=1e-6)
    assert not pruned.scores(user_rows, items, 4)[3].any()  # row 3 has no items


def test_pruned_b_refuses_indices_that_are_no_items() -> None:
    value = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="item indices"):
        PrunedB(np.array([[0, 3], [0, 1], [1, 2]], dtype=np.float32), value)
    with pytest.raises(ValueError, match="item indices"):
        PrunedB(np.array([[0, 0.5], [0, 1], [1, 2]], dtype=np.float32), value)


def test_the_gram_upload_is_the_flat_list_of_non_zero_counts() -> None:
    data = Interactions(
        users=np.array([0, 0, 1, 1, 1]),
        items=np.array([0, 2, 0, 2, 3]),
        ratings=np.ones(5),
        timestamps=np.zeros(5),
        user_ids=["a", "b"],
        item_ids=["0", "1", "2", "3"],
    )
    keys, counts = local_gram_entries(data, 4)
    gram = item_gram(data.users, data.items, 4)
    assert np.array_equal(keys, np.flatnonzero(gram))
    assert np.array_equal(counts, gram.reshape(-1)[keys])
    rebuilt = np.zeros(16)
    rebuilt[keys] = counts
    assert np.array_equal(rebuilt.reshape(4, 4), gram)


def test_a_large_catalogs_gram_entries_are_counted_pair_by_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users, items = _random_pairs(5, users=30, items=50, n=300)  # duplicates included
    data = Interactions(
        users=users,
        items=items,
        ratings=np.ones(users.size),
        timestamps=np.zeros(users.size),
        user_ids=[str(u) for u in range(30)],
        item_ids=[str(i) for i in range(50)],
    )
    dense_keys, dense_counts = local_gram_entries(data, 50)
    monkeypatch.setattr("participant_sdk.recsys.ease_trainer.DENSE_GRAM_ENTRIES", 10)
    keys, counts = local_gram_entries(data, 50)
    assert np.array_equal(keys, dense_keys)
    assert np.array_equal(counts, dense_counts)
    assert counts.dtype == np.float32
