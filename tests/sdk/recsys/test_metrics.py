"""Metrics against hand-computed cases, including the tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from participant_sdk.recsys import (
    evaluate_loo,
    evaluate_sampled,
    evaluate_split,
    from_arrays,
    loo_ranks,
    rank_metrics,
    recommend,
    top_k,
)
from participant_sdk.recsys.data import Interactions


def _inter(pairs: list[tuple[int, int]], num_users: int, num_items: int) -> Interactions:
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    n = users.size
    return Interactions(
        users=users,
        items=items,
        timestamps=np.zeros(n),
        ratings=np.ones(n),
        user_ids=[str(u) for u in range(num_users)],
        item_ids=[str(i) for i in range(num_items)],
    )


def _fixed(scores: np.ndarray):  # type: ignore[no-untyped-def]
    return lambda users: scores[users]


class TestLeaveOneOutRanks:
    def test_rank_counts_higher_scores_and_lower_index_ties(self) -> None:
        # 6 items; user 0 saw item 0; target 3 with score 0.5.
        # Candidates 1,2,4,5: item 1 (0.9) is higher, item 2 (0.5) ties with lower index,
        # item 4 (0.5) ties with higher index -> not ahead, item 5 lower.
        scores = np.array([[9.0, 0.9, 0.5, 0.5, 0.5, 0.1]])
        train = _inter([(0, 0)], 1, 6)
        target = _inter([(0, 3)], 1, 6)
        m = evaluate_loo(_fixed(scores), train, target, k=2)
        # rank 2 -> miss at K=2
        assert m["hr@2"] == 0.0
        m3 = evaluate_loo(_fixed(scores), train, target, k=3)
        assert m3["hr@3"] == 1.0
        assert m3["ndcg@3"] == pytest.approx(1.0 / math.log2(4))
        assert m3["precision@3"] == pytest.approx(1.0 / 3)
        assert m3["recall@3"] == 1.0

    def test_seen_items_are_not_candidates(self) -> None:
        scores = np.array([[9.0, 8.0, 1.0]])
        train = _inter([(0, 0), (0, 1)], 1, 3)
        m = evaluate_loo(_fixed(scores), train, _inter([(0, 2)], 1, 3), k=1)
        assert m["hr@1"] == 1.0
        assert m["ndcg@1"] == 1.0

    def test_mean_over_users(self) -> None:
        scores = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
        train = _inter([], 2, 3)
        target = _inter([(0, 2), (1, 2)], 2, 3)  # ranks 0 and 2
        m = evaluate_loo(_fixed(scores), train, target, k=10, block=1)
        assert m["hr@10"] == 1.0
        assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / 2.0) / 2)

    def test_loo_ranks_are_each_targets_rank_in_target_order(self) -> None:
        """The ranks evaluate_loo's metrics come from, per target: the paired comparison's."""
        scores = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
        train = _inter([(0, 3)], 2, 4)  # user 0 saw item 3: not a candidate
        target = _inter([(1, 2), (0, 0)], 2, 4)
        ranks = loo_ranks(_fixed(scores), train, target, block=1)
        assert ranks.tolist() == [2, 2]
        assert rank_metrics(ranks) == evaluate_loo(_fixed(scores), train, target)

    def test_rank_metrics_formula(self) -> None:
        m = rank_metrics(np.array([0, 1, 9, 10]), k=10)
        assert m["hr@10"] == 0.75
        expected = (1.0 + 1 / math.log2(3) + 1 / math.log2(11)) / 4
        assert m["ndcg@10"] == pytest.approx(expected)
        assert m["precision@10"] == pytest.approx(0.075)


class TestSampled:
    def test_ties_with_negatives_use_item_index(self) -> None:
        scores = np.array([[0.0, 0.5, 0.5, 0.5, 0.7]])
        target = _inter([(0, 2)], 1, 5)
        # negatives 1 (tie, lower index -> ahead), 3 (tie, higher -> not), 4 (higher -> ahead)
        m = evaluate_sampled(_fixed(scores), target, np.array([[1, 3, 4]]), k=2)
        assert m["sampled_hr@2"] == 0.0
        m3 = evaluate_sampled(_fixed(scores), target, np.array([[1, 3, 4]]), k=3)
        assert m3["sampled_ndcg@3"] == pytest.approx(1 / math.log2(4))


class TestSplitMetrics:
    def test_hand_computed(self) -> None:
        # user 0 trained on item 0; test items {2, 4}; scores order 1,2,3,4,...
        scores = np.array([[10.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
        train = _inter([(0, 0)], 1, 6)
        test = _inter([(0, 2), (0, 4)], 1, 6)
        m = evaluate_split(_fixed(scores), train, test, k=3)
        # top3 among candidates: 1, 2, 3 -> one hit at position 1
        assert m["precision@3"] == pytest.approx(1 / 3)
        assert m["recall@3"] == pytest.approx(1 / 2)
        idcg = 1 + 1 / math.log2(3)
        assert m["ndcg@3"] == pytest.approx((1 / math.log2(3)) / idcg)
        assert m["hr@3"] == 1.0


class TestRecommend:
    def test_never_returns_seen_and_breaks_ties_by_index(self) -> None:
        scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
        seen = np.array([False, True, False, False, False])
        assert recommend(scores, seen, k=3).tolist() == [2, 4, 3]

    def test_pads_when_too_few_unseen(self) -> None:
        scores = np.array([[1.0, 2.0, 3.0]])
        seen = np.array([[True, False, True]])
        assert top_k(scores, seen, 2).tolist() == [[1, -1]]

    def test_from_arrays_indices_sorted_numerically(self) -> None:
        inter = from_arrays(["10", "9", "10"], ["2", "100", "30"])
        assert inter.user_ids == ["9", "10"]
        assert inter.item_ids == ["2", "30", "100"]
