"""Local training never hands NaN/Inf or an exploded update to the uploader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    BPRConfig,
    BPRTrainer,
    Interactions,
    LocalUpdate,
    TrainingDivergedError,
    init_item_tensors,
    train_with_backoff,
    update_problem,
)

CFG = BPRConfig(dim=8, learning_rate=0.05, epochs=2, batch_size=64, seed=1)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_synthetic(num_users=40, num_items=60, seed=2)


def _trainer(data: Interactions, cfg: BPRConfig = CFG) -> BPRTrainer:
    return BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=cfg)


def test_overflowing_steps_are_gated_not_applied(data: Interactions) -> None:
    trainer = _trainer(data)
    update = trainer.train_round(init_item_tensors(60, 8), data, learning_rate=1e30)
    assert update.skipped_steps > 0
    for array in (update.item_factors, update.item_bias, trainer.user_factors):
        assert np.isfinite(array).all()


def test_a_sane_round_passes_the_check(data: Interactions) -> None:
    trainer = _trainer(data)
    update = trainer.train_round(init_item_tensors(60, 8), data)
    assert update.skipped_steps == 0
    assert update_problem(update, trainer.user_factors) is None


def test_the_check_names_the_broken_tensor(data: Interactions) -> None:
    trainer = _trainer(data)
    update = trainer.train_round(init_item_tensors(60, 8), data)
    update.delta["item_bias"][3] = np.nan
    assert update_problem(update, trainer.user_factors) == ("item_bias", "1 NaN/Inf value")
    update.delta["item_bias"][3] = 0.0
    update.delta["item_factors"][5, 0] = 5e3
    tensor, problem = update_problem(update, trainer.user_factors) or ("", "")
    assert tensor == "item_factors"
    assert "L2 norm 5e+03 > 1000" in problem


def test_absurd_learning_rate_is_refused_with_a_clear_error(data: Interactions) -> None:
    trainer = _trainer(data)
    trainer.train_round(init_item_tensors(60, 8), data)  # some state to keep
    before = trainer.state_dict()
    with pytest.raises(TrainingDivergedError) as caught:
        train_with_backoff(
            trainer, init_item_tensors(60, 8), data, round_number=7, learning_rate=1e9
        )
    error = caught.value
    assert error.round_number == 7
    assert error.learning_rates == [1e9, 5e8, 2.5e8, 1.25e8]
    assert error.tensor == "item_factors"
    message = str(error)
    assert message.startswith("round 7: local training diverged: tensor 'item_factors' has ")
    assert "learning rates tried: 1e+09, 5e+08, 2.5e+08, 1.25e+08" in message
    # nothing of the failed attempts is kept in the private state
    after = trainer.state_dict()
    assert np.array_equal(after["user_factors"], before["user_factors"])
    assert np.array_equal(after["steps"], before["steps"])


class _FragileTrainer(BPRTrainer):
    """Diverges (NaN item factors) whenever the learning rate is above 0.1."""

    def train_round(self, base: Any, train: Interactions, **kw: Any) -> LocalUpdate:
        update = super().train_round(base, train, **kw)
        learning_rate = kw.get("learning_rate")
        if learning_rate is not None and learning_rate > 0.1:
            update.delta["item_factors"][0, 0] = np.inf
        return update


def test_backs_off_to_a_rate_that_converges(data: Interactions) -> None:
    trainer = _FragileTrainer(num_users=data.num_users, num_items=60, config=CFG)
    base = init_item_tensors(60, 8)
    update, learning_rate = train_with_backoff(trainer, base, data, learning_rate=0.3)
    assert learning_rate == pytest.approx(0.075)
    assert update_problem(update, trainer.user_factors) is None
    # the retry started from the same private state as a direct run at that rate
    direct = _trainer(data)
    expected = direct.train_round(base, data, learning_rate=0.075)
    assert np.array_equal(update.item_factors, expected.item_factors)
    assert np.array_equal(trainer.user_factors, direct.user_factors)


def test_no_backoff_allowed_fails_on_the_first_divergence(data: Interactions) -> None:
    trainer = _FragileTrainer(num_users=data.num_users, num_items=60, config=CFG)
    with pytest.raises(TrainingDivergedError, match=r"learning rates tried: 0\.3\)"):
        train_with_backoff(
            trainer, init_item_tensors(60, 8), data, learning_rate=0.3, max_backoffs=0
        )


def test_a_round_trains_at_its_scheduled_rate(data: Interactions) -> None:
    # round 3 of a 0.5-per-round schedule: 0.05 * 0.5 ** 2, as a direct run at that rate
    cfg = CFG.replace(round_decay=0.5)
    base = init_item_tensors(60, 8)
    update, learning_rate = train_with_backoff(_trainer(data, cfg), base, data, round_number=3)
    assert learning_rate == pytest.approx(0.0125)
    direct = _trainer(data, cfg).train_round(base, data, learning_rate=0.0125)
    assert np.array_equal(update.item_factors, direct.item_factors)
