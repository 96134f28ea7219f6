"""The synthetic data set looks like real interaction logs, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    BPRConfig,
    BPRTrainer,
    Interactions,
    PopularityModel,
    evaluate_loo,
    init_item_tensors,
    leave_one_out,
)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_synthetic(seed=0)


def test_item_popularity_is_long_tailed(data: Interactions) -> None:
    counts = np.sort(np.bincount(data.items, minlength=data.num_items))[::-1]
    top_tenth = counts[: data.num_items // 10].sum() / len(data)
    # uniform popularity would give the top 10% of items ~10% of the interactions
    assert top_tenth > 0.25
    assert counts[0] > 5 * np.median(counts)


def test_user_activity_is_long_tailed(data: Interactions) -> None:
    activity = np.bincount(data.users, minlength=data.num_users)
    assert activity.min() >= 5
    assert activity.max() <= 100
    # a few heavy users far above the typical one
    assert np.percentile(activity, 95) > 3 * np.median(activity)


def test_one_interaction_per_pair(data: Interactions) -> None:
    keys = data.users * data.num_items + data.items
    assert np.unique(keys).size == len(data)


def test_strengths_are_positive_integers_with_a_heavy_tail(data: Interactions) -> None:
    strengths = data.ratings
    assert np.all(strengths >= 1)
    assert np.array_equal(strengths, np.round(strengths))
    # overdispersed: variance far above a Poisson's (= its mean), extremes far above the median
    assert strengths.var() > 5 * strengths.mean()
    assert np.percentile(strengths, 99) > 8 * np.median(strengths)


def test_strengths_can_be_switched_off() -> None:
    assert np.all(make_synthetic(num_users=30, strengths=False, seed=0).ratings == 1.0)


def test_timestamps_increase_per_user_and_are_optional(data: Interactions) -> None:
    order = np.lexsort((data.timestamps, data.users))
    assert np.array_equal(order, np.arange(len(data)))  # grouped by user, in time order
    same_user = data.users[1:] == data.users[:-1]
    assert np.all(np.diff(data.timestamps)[same_user] > 0)
    untimed = make_synthetic(timestamps=False, seed=0)
    assert np.isnan(untimed.timestamps).all()
    assert np.array_equal(untimed.items, data.items)  # only the timestamps differ
    assert len(leave_one_out(untimed).test) == data.num_users


def test_same_seed_same_data_other_seed_other_data(data: Interactions) -> None:
    again = make_synthetic(seed=0)
    for name in ("users", "items", "timestamps", "ratings"):
        assert np.array_equal(getattr(data, name), getattr(again, name)), name
    other = make_synthetic(seed=1)
    assert not np.array_equal(other.items[:50], data.items[:50])


def test_sizes_are_configurable() -> None:
    small = make_synthetic(num_users=20, num_items=50, interactions_per_user=(3, 8), seed=2)
    assert (small.num_users, small.num_items) == (20, 50)
    activity = np.bincount(small.users, minlength=20)
    assert activity.min() >= 3
    assert activity.max() <= 8


def test_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="interactions_per_user"):
        make_synthetic(interactions_per_user=(10, 5))


def test_bpr_beats_popularity_on_validation(data: Interactions) -> None:
    split = leave_one_out(data)
    config = BPRConfig(dim=16, learning_rate=0.05, epochs=30, batch_size=128, seed=3)
    trainer = BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=config)
    update = trainer.train_round(init_item_tensors(data.num_items, config.dim), split.train)
    tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
    bpr = evaluate_loo(lambda u: trainer.score(u, tensors), split.train, split.valid)
    popularity = evaluate_loo(PopularityModel(split.train).score, split.train, split.valid)
    assert bpr["ndcg@10"] > 1.4 * popularity["ndcg@10"]
