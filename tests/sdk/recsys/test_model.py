"""BPR-MF trainer: determinism, learning, row-sparse deltas, recency weighting, private state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    BPRConfig,
    BPRTrainer,
    Interactions,
    LeaveOneOutSplit,
    PopularityModel,
    evaluate_loo,
    init_item_tensors,
    leave_one_out,
    recency_weights,
)
from participant_sdk.wire import decode_update, encode_update, mf_spec

CFG = BPRConfig(dim=16, learning_rate=0.05, reg=0.01, epochs=1, batch_size=128, seed=3)


@pytest.fixture(scope="module")
def synthetic() -> tuple[Interactions, LeaveOneOutSplit]:
    data = make_synthetic(seed=0)
    return data, leave_one_out(data)


def _trainer(data: Interactions, cfg: BPRConfig = CFG) -> BPRTrainer:
    return BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=cfg)


def test_same_seed_same_result(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim, seed=1)
    a = _trainer(data).train_round(base, split.train, epochs=2)
    b = _trainer(data).train_round(base, split.train, epochs=2)
    assert np.array_equal(a.item_factors, b.item_factors)
    assert np.array_equal(a.item_bias, b.item_bias)
    c = _trainer(data, CFG.replace(seed=4)).train_round(base, split.train, epochs=2)
    assert not np.array_equal(a.item_factors, c.item_factors)


def test_learns_beyond_popularity(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    trainer = _trainer(data, CFG.replace(epochs=30))
    update = trainer.train_round(init_item_tensors(data.num_items, CFG.dim), split.train)
    tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
    bpr = evaluate_loo(lambda u: trainer.score(u, tensors), split.train, split.valid)
    pop = evaluate_loo(PopularityModel(split.train).score, split.train, split.valid)
    assert bpr["ndcg@10"] > 1.4 * pop["ndcg@10"]
    assert bpr["hr@10"] > pop["hr@10"] + 0.05


def test_row_sparse_delta_covers_only_touched_rows() -> None:
    data = make_synthetic(num_users=5, num_items=300, interactions_per_user=(3, 5), seed=2)
    trainer = _trainer(data, CFG.replace(batch_size=4))
    base = init_item_tensors(data.num_items, CFG.dim)
    update = trainer.train_round(base, data)
    untouched = np.setdiff1d(np.arange(data.num_items), update.rows)
    assert untouched.size > 0
    assert np.all(update.delta["item_factors"][untouched] == 0)
    assert np.all(update.delta["item_bias"][untouched] == 0)
    assert set(data.items.tolist()) <= set(update.rows.tolist())
    assert np.all(np.diff(update.rows) > 0)
    assert update.num_examples == len(data)
    # the sparse delta round-trips through the wire codec and rebuilds the dense delta
    payload = encode_update(
        update.sparse_delta(),
        round=1,
        base_version=0,
        num_examples=update.num_examples,
        rows=update.rows,
    )
    decoded = decode_update(payload, mf_spec(num_items=data.num_items, dim=CFG.dim))
    assert decoded.rows is not None
    dense = np.zeros_like(update.delta["item_factors"])
    dense[decoded.rows] = decoded.tensors["item_factors"]
    assert np.array_equal(dense, update.delta["item_factors"])
    assert np.allclose(base["item_factors"] + dense, update.item_factors, atol=1e-6)


def test_base_is_not_modified(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim)
    copy = {k: v.copy() for k, v in base.items()}
    _trainer(data).train_round(base, split.train)
    assert all(np.array_equal(base[k], copy[k]) for k in base)


def test_user_only_training_leaves_items(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    trainer = _trainer(data)
    before = trainer.user_factors.copy()
    update = trainer.train_round(
        init_item_tensors(data.num_items, CFG.dim), split.train, update_items=False
    )
    assert update.rows.size == 0
    assert not np.any(update.delta["item_factors"])
    assert not np.array_equal(before, trainer.user_factors)


def test_fedprox_pulls_toward_base(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim)
    free = _trainer(data).train_round(base, split.train, epochs=3)
    prox = _trainer(data, CFG.replace(mu=5.0)).train_round(base, split.train, epochs=3)
    assert np.linalg.norm(prox.delta["item_factors"]) < np.linalg.norm(free.delta["item_factors"])


def test_state_round_trip(tmp_path: Path, synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim)
    trainer = _trainer(data)
    trainer.train_round(base, split.train)
    trainer.save(tmp_path / "state.safetensors")
    restored = _trainer(data)
    restored.load(tmp_path / "state.safetensors")
    assert np.array_equal(restored.user_factors, trainer.user_factors)
    assert restored.steps == trainer.steps
    # the next round is identical for the original and the restored trainer
    a = trainer.train_round(base, split.train)
    b = restored.train_round(base, split.train)
    assert np.array_equal(a.item_factors, b.item_factors)
    # a dict round trip works too, and shape mismatches are refused
    other = _trainer(data)
    other.load_state_dict(trainer.state_dict())
    assert np.array_equal(other.user_factors, trainer.user_factors)
    small = BPRTrainer(num_users=2, num_items=data.num_items, config=CFG)
    with pytest.raises(ValueError, match="shape"):
        small.load_state_dict(trainer.state_dict())


def test_rejects_wrong_base_shape(synthetic: tuple[Interactions, LeaveOneOutSplit]) -> None:
    data, split = synthetic
    with pytest.raises(ValueError, match="base tensors"):
        _trainer(data).train_round(init_item_tensors(data.num_items, 8), split.train)


def _interactions(
    users: list[int], items: list[int], timestamps: list[float], num_items: int = 10
) -> Interactions:
    return Interactions(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        timestamps=np.array(timestamps, dtype=np.float64),
        ratings=np.ones(len(users)),
        user_ids=[str(u) for u in range(max(users) + 1)],
        item_ids=[str(i) for i in range(num_items)],
    )


def test_recency_weights_mark_each_users_latest() -> None:
    # rows out of order on purpose; user 0 has a timestamp tie (items 4 and 2 at t=30:
    # the larger item index counts as more recent, as in the leave-one-out split)
    data = _interactions(
        users=[0, 1, 0, 0, 1, 0, 1],
        items=[4, 0, 1, 2, 5, 3, 6],
        timestamps=[30, 5, 10, 30, 7, 20, 6],
    )
    weights = recency_weights(data, window=2, weight=5.0)
    # user 0 by (time, item): 1@10, 3@20, 2@30, 4@30 -> latest two are items 2 and 4
    # user 1: 0@5, 6@6, 5@7 -> latest two are items 6 and 5
    assert weights.tolist() == [5.0, 1.0, 1.0, 5.0, 5.0, 1.0, 5.0]
    # a window wider than a user's history marks all of it; window 0 marks nothing
    assert np.all(recency_weights(data, window=9, weight=3.0) == 3.0)
    assert np.all(recency_weights(data, window=0, weight=3.0) == 1.0)


def test_recency_weights_skip_unknown_timestamps() -> None:
    data = _interactions(users=[0, 0, 0], items=[1, 2, 3], timestamps=[np.nan, 2.0, 1.0])
    assert recency_weights(data, window=1, weight=4.0).tolist() == [1.0, 4.0, 1.0]
    untimed = _interactions(users=[0, 0], items=[1, 2], timestamps=[np.nan, np.nan])
    assert recency_weights(untimed, window=1, weight=4.0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"recency_window": -1}, "recency_window"), ({"recency_weight": 0.0}, "recency_weight")],
)
def test_config_rejects_bad_recency(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CFG.replace(**changes)


def test_the_round_schedule_decays_the_rate_per_round() -> None:
    cfg = CFG.replace(learning_rate=0.05, round_decay=0.9)
    # round r trains at 0.05 * 0.9 ** (r - 1), by hand; a round before the first is round 1
    assert cfg.round_learning_rate(1) == pytest.approx(0.05)
    assert cfg.round_learning_rate(2) == pytest.approx(0.045)
    assert cfg.round_learning_rate(4) == pytest.approx(0.03645)
    assert cfg.round_learning_rate(0) == pytest.approx(0.05)
    # the default is a constant rate
    assert CFG.round_learning_rate(50) == CFG.learning_rate


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan")])
def test_config_rejects_a_round_decay_outside_0_1(decay: float) -> None:
    with pytest.raises(ValueError, match="round_decay"):
        CFG.replace(round_decay=decay)


def _recent_and_old(num_users: int = 40) -> Interactions:
    """Every user: 6 old interactions with items 0-9, then one recent with items 10-19."""
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(num_users):
        old = rng.choice(10, size=6, replace=False)
        users += [u] * 7
        items += [*old.tolist(), int(10 + rng.integers(0, 10))]
        times += [*range(6), 100]
    return _interactions(users, items, times, num_items=60)


def test_recency_weighting_trains_mostly_on_recent_items() -> None:
    data = _recent_and_old()
    base = init_item_tensors(data.num_items, CFG.dim, seed=1)
    cfg = CFG.replace(negatives=1)

    def bias_gain(update_cfg: BPRConfig, epochs: int) -> tuple[float, float]:
        update = _trainer(data, update_cfg).train_round(base, data, epochs=epochs)
        bias = update.delta["item_bias"]
        return float(bias[:10].sum()), float(bias[10:20].sum())

    weighted = cfg.replace(recency_window=1, recency_weight=50.0)
    old_plain, recent_plain = bias_gain(cfg, epochs=3)
    old_weighted, recent_weighted = bias_gain(weighted, epochs=10)
    # uniform sampling visits old positives 6x as often as recent ones...
    assert old_plain > recent_plain
    # ...recency weighting turns that around
    assert recent_weighted > 2 * old_weighted
    assert recent_weighted > recent_plain
    # and stays deterministic for a seed
    assert bias_gain(weighted, epochs=10) == (old_weighted, recent_weighted)


def test_recency_weighted_epoch_visits_are_set_per_interaction() -> None:
    # users 0-199 have 6 old interactions, users 200-399 have 30; each has one recent one.
    # Old items 0-9, recent items 10-19, and a large catalog, so that sampled negatives
    # almost never land on items 0-19.
    rng = np.random.default_rng(1)
    users, items, times = [], [], []
    for u in range(400):
        n_old = 6 if u < 200 else 30
        users += [u] * (n_old + 1)
        items += [*rng.integers(0, 10, size=n_old).tolist(), int(10 + rng.integers(0, 10))]
        times += [*range(n_old), 100]
    data = _interactions(users, items, times, num_items=20_000)
    cfg = CFG.replace(
        negatives=2, batch_size=1_000_000, reg=0.0, recency_window=1, recency_weight=6.0
    )
    zeros = {
        "item_factors": np.zeros((data.num_items, CFG.dim), dtype=np.float32),
        "item_bias": np.zeros(data.num_items, dtype=np.float32),
    }

    def visits(part: Interactions) -> tuple[float, float]:
        # One batch at zero factors: every triple has x = 0, so each visit of a positive
        # adds exactly lr * σ(0) = 0.5 to its item's bias.
        trainer = BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=cfg)
        trainer.user_factors[:] = 0.0
        bias = trainer.train_round(zeros, part, epochs=1, learning_rate=1.0).item_bias
        return 2 * float(bias[:10].sum()), 2 * float(bias[10:20].sum())

    light = data.subset(data.users < 200)
    for part, n_old in ((data, 200 * 6 + 200 * 30), (light, 200 * 6)):
        old, recent = visits(part)
        n_recent = int(np.unique(part.users).size)
        # every recent interaction is visited `negatives` times, whoever trains it...
        assert recent == pytest.approx(2 * n_recent, abs=4)
        # ...and every older one negatives / recency_weight times in expectation
        assert old == pytest.approx(2 * n_old / 6, rel=0.15)


def test_the_user_refresh_fits_the_user_before_the_items_move(
    synthetic: tuple[Interactions, LeaveOneOutSplit],
) -> None:
    """``user_epochs`` user-only epochs run against the base items first: the item epochs
    then start from a fitted user, so their mean loss is lower; the refresh's own losses
    are not reported, and it moves no item row by itself."""
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim, seed=1)
    # items trained elsewhere; these trainers' users start from their random init
    fitted = _trainer(data, CFG.replace(seed=9)).train_round(base, split.train, epochs=20)
    trained = {"item_factors": fitted.item_factors, "item_bias": fitted.item_bias}
    plain = _trainer(data).train_round(trained, split.train)
    refreshed = _trainer(data, CFG.replace(user_epochs=5)).train_round(trained, split.train)
    assert refreshed.loss < plain.loss
    assert not np.array_equal(refreshed.delta["item_factors"], plain.delta["item_factors"])
    # no item epoch: nothing trains, the refresh included (items and users unchanged)
    idle = _trainer(data, CFG.replace(user_epochs=5))
    before = idle.user_factors.copy()
    update = idle.train_round(trained, split.train, epochs=0)
    assert update.rows.size == 0
    np.testing.assert_array_equal(idle.user_factors, before)


def test_a_fold_in_ignores_the_user_refresh(
    synthetic: tuple[Interactions, LeaveOneOutSplit],
) -> None:
    """``update_items=False`` (a fold-in, a personalisation step) trains the users for its
    own epochs only: the same user factors with or without ``user_epochs``."""
    data, split = synthetic
    base = init_item_tensors(data.num_items, CFG.dim, seed=1)
    a, b = _trainer(data), _trainer(data, CFG.replace(user_epochs=4))
    a.train_round(base, split.train, epochs=3, update_items=False)
    b.train_round(base, split.train, epochs=3, update_items=False)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)


def test_config_rejects_negative_user_epochs() -> None:
    with pytest.raises(ValueError, match="user_epochs"):
        CFG.replace(user_epochs=-1)
