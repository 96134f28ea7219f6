"""bench.split_gap: the diagnosis of the validation/test gap, on synthetic data."""

from __future__ import annotations

import numpy as np

from bench.split_gap import diagnose, folded, one_step_back
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import BPRConfig, BPRTrainer, Interactions, leave_one_out
from participant_sdk.recsys.model import init_item_tensors
from participant_sdk.recsys.trainers import fold_in


def _pairs(inter: Interactions) -> set[tuple[int, int]]:
    return set(zip(inter.users.tolist(), inter.items.tolist(), strict=True))


def test_one_step_back_tests_on_validation_and_never_holds_the_test_split() -> None:
    split = leave_one_out(make_synthetic(num_users=60, num_items=120, seed=3))
    back = one_step_back(split)
    everything = _pairs(back.train) | _pairs(back.valid) | _pairs(back.test)
    assert not everything & _pairs(split.test)
    # its test targets are validation targets (of the users still evaluated there)
    assert back.test.users.size > 0
    assert _pairs(back.test) <= _pairs(split.valid)
    # and its validation targets are each user's latest training interaction
    assert _pairs(back.valid) <= _pairs(split.train)


def test_folded_as_one_group_is_the_trainers_own_fold_in_and_keeps_the_items() -> None:
    data = make_synthetic(num_users=30, num_items=80, seed=4)
    split = leave_one_out(data)
    config = BPRConfig(dim=8, epochs=2)
    tensors = init_item_tensors(data.num_items, 8, seed=0, scale=0.1)
    before = {k: v.copy() for k, v in tensors.items()}
    start = np.random.default_rng(0).standard_normal((data.num_users, 8)).astype(np.float32)
    users, loss = folded([np.arange(data.num_users)], config, start, tensors, split.train)
    trainer = BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=config)
    trainer.user_factors = start.copy()
    fold_in(trainer, tensors, split.train)
    np.testing.assert_array_equal(users, trainer.user_factors)
    assert not np.array_equal(users, start)  # the fold-in moved the users
    assert loss > 0.0
    for name, tensor in tensors.items():  # the item model is frozen
        np.testing.assert_array_equal(tensor, before[name])


def test_diagnose_reports_every_figure_of_one_side() -> None:
    data = make_synthetic(num_users=30, num_items=80, seed=5)
    split = leave_one_out(data)
    config = BPRConfig(dim=8, epochs=1)
    tensors = init_item_tensors(data.num_items, 8, seed=0, scale=0.1)
    users = np.random.default_rng(1).standard_normal((data.num_users, 8)).astype(np.float32)
    groups = [np.arange(0, 15), np.arange(15, data.num_users)]
    row = diagnose("federated", groups, config, users, tensors, split)
    for key in ("val", "test_raw", "test_fold_tr", "test_fold", "test_fold5"):
        assert 0.0 <= row[key] <= 1.0
    assert row["norm_users"] > 0.0
    assert row["norm_items"] > 0.0
