"""``fold_in``: before the test, each user's private part is fitted to their whole local
history (train + validation) against the frozen deployed item tensors."""

from __future__ import annotations

import numpy as np

from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import BPRConfig, IALSConfig, init_item_tensors, leave_one_out
from participant_sdk.recsys.ease import ease_weights, item_gram
from participant_sdk.recsys.ease_trainer import EASEConfig, EASETrainer
from participant_sdk.recsys.ials import solve_users
from participant_sdk.recsys.splits import concat
from participant_sdk.recsys.trainers import fold_in, make_trainer

DATA = make_synthetic(num_users=40, num_items=50, seed=7)
SPLIT = leave_one_out(DATA)
HISTORY = concat(SPLIT.train, SPLIT.valid)


def _tensors(dim: int) -> dict[str, np.ndarray]:
    return init_item_tensors(DATA.num_items, dim, seed=1, scale=0.1)


def test_implicit_als_solves_its_users_on_train_and_validation() -> None:
    config = IALSConfig(dim=8)
    trainer = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    tensors = _tensors(8)
    fold_in(trainer, tensors, HISTORY)
    expected = solve_users(tensors["item_factors"], HISTORY, DATA.num_users, config)
    np.testing.assert_allclose(trainer.user_factors, expected, rtol=1e-5, atol=1e-6)
    on_train = solve_users(tensors["item_factors"], SPLIT.train, DATA.num_users, config)
    assert not np.allclose(trainer.user_factors, on_train)  # the validation items count


def test_bpr_trains_one_user_only_round_with_the_items_frozen() -> None:
    config = BPRConfig(dim=8, epochs=2, seed=3)
    trainer = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    tensors = _tensors(8)
    before = {name: t.copy() for name, t in tensors.items()}
    factors = trainer.user_factors.copy()
    fold_in(trainer, tensors, HISTORY)
    for name, values in tensors.items():
        np.testing.assert_array_equal(values, before[name])  # the deployed items untouched
    assert not np.allclose(trainer.user_factors, factors)
    # the same as one explicit user-only round on the whole history
    twin = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    twin.train_round(tensors, HISTORY, update_items=False)
    np.testing.assert_array_equal(trainer.user_factors, twin.user_factors)


def test_bpr_folds_in_with_a_training_rounds_user_work_refresh_included() -> None:
    # a device refreshed its user for user_epochs before each round's epochs: the fold-in
    # gives the user as many epochs (items frozen), not only config.epochs
    config = BPRConfig(dim=8, epochs=2, user_epochs=3, seed=3)
    trainer = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    tensors = _tensors(8)
    fold_in(trainer, tensors, HISTORY)
    twin = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    twin.train_round(tensors, HISTORY, update_items=False, epochs=5)
    np.testing.assert_array_equal(trainer.user_factors, twin.user_factors)
    short = make_trainer(config, num_users=DATA.num_users, num_items=DATA.num_items)
    short.train_round(tensors, HISTORY, update_items=False)  # config.epochs only
    assert not np.allclose(trainer.user_factors, short.user_factors)


def test_bpr_without_local_interactions_has_nothing_to_fit() -> None:
    trainer = make_trainer(BPRConfig(dim=4), num_users=3, num_items=DATA.num_items)
    factors = trainer.user_factors.copy()
    fold_in(trainer, _tensors(4), HISTORY.subset(np.zeros(len(HISTORY), dtype=bool)))
    np.testing.assert_array_equal(trainer.user_factors, factors)


def test_ease_scores_each_user_with_their_validation_row_too() -> None:
    trainer = EASETrainer(num_users=DATA.num_users, num_items=DATA.num_items, config=EASEConfig())
    weights = ease_weights(item_gram(SPLIT.train.users, SPLIT.train.items, DATA.num_items), 30.0)
    tensors = {"ease_b": weights.astype(np.float32)}
    fold_in(trainer, tensors, HISTORY)
    users = SPLIT.valid.users
    x = np.zeros((users.size, DATA.num_items), dtype=np.float32)
    position = {int(u): k for k, u in enumerate(users)}
    for u, i in zip(HISTORY.users, HISTORY.items, strict=True):
        if int(u) in position:
            x[position[int(u)], i] = 1.0
    np.testing.assert_allclose(trainer.score(users, tensors), x @ tensors["ease_b"], atol=1e-5)
