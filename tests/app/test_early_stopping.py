"""Early stopping of the centralized baseline, with the federation's stop-policy rules."""

from __future__ import annotations

from typing import Any

import pytest

from fedrec.early_stopping import EarlyStopping
from fedrec.simulation import centralized_baseline
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import BPRConfig, BPRTrainer, leave_one_out


def test_patience_counts_steps_without_a_gain_above_min_delta() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert stopper.update(1, 0.10)
    assert stopper.update(2, 0.20)
    assert stopper.update(3, 0.205)  # the best so far, but below min_delta: stale
    assert not stopper.should_stop
    assert not stopper.update(4, 0.15)
    assert stopper.should_stop
    assert (stopper.best_step, stopper.best_value) == (3, 0.205)


def test_a_gain_resets_patience_and_none_never_stops() -> None:
    stopper = EarlyStopping(patience=1)
    stopper.update(1, 0.2)
    stopper.update(2, 0.3)
    assert not stopper.should_stop
    stopper.update(3, 0.3)  # equal is no improvement
    assert stopper.should_stop
    endless = EarlyStopping(patience=None)
    for step in range(10):
        endless.update(step, 0.0)
    assert not endless.should_stop


def test_min_rounds_holds_patience_back_until_its_step() -> None:
    stopper = EarlyStopping(patience=1, min_rounds=4)
    for step, value in enumerate([0.3, 0.2, 0.1], start=1):
        stopper.update(step, value)
        assert not stopper.should_stop, step  # patience alone would stop at step 2
    stopper.update(4, 0.1)
    assert stopper.should_stop
    assert stopper.best_step == 1  # the guard changes when it stops, not what it keeps
    # a guard below the step patience stops at changes nothing
    early = EarlyStopping(patience=1, min_rounds=1)
    early.update(1, 0.3)
    early.update(2, 0.2)
    assert early.should_stop


@pytest.fixture(scope="module")
def small() -> tuple[object, object]:
    data = make_synthetic(num_users=80, num_items=300, seed=3)
    return data, leave_one_out(data)


CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=1, seed=0)


def test_centralized_stops_after_patience_and_keeps_the_best(small: tuple) -> None:
    data, split = small
    # no gain can exceed 1.0: the first round is the reference, two stale rounds stop it
    metrics, chosen = centralized_baseline(data, split, CONFIG, 20, patience=2, min_delta=1.0)
    assert chosen["rounds_trained"] == 3
    assert chosen["stopped_by"].startswith("patience")
    assert chosen["chosen_round"] in (1, 2, 3)
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_centralized_trains_at_least_min_rounds(small: tuple) -> None:
    data, split = small
    _, chosen = centralized_baseline(
        data, split, CONFIG, 20, patience=2, min_delta=1.0, min_rounds=5
    )
    assert chosen["rounds_trained"] == 5  # patience alone stops at 3 (the test above)
    assert chosen["stopped_by"].startswith("patience")


def test_centralized_without_patience_runs_to_the_cap(small: tuple) -> None:
    data, split = small
    _, chosen = centralized_baseline(data, split, CONFIG, 4, patience=None)
    assert chosen["rounds_trained"] == 4
    assert chosen["stopped_by"] == "round cap (4)"
    assert 1 <= chosen["chosen_round"] <= 4


def test_a_window_smooths_the_curve_and_keeps_every_step_that_can_still_win() -> None:
    stopper = EarlyStopping(patience=3, window=3)
    assert stopper.update(1, 0.1)
    assert stopper.keep() == {1}
    # two steps: both ends average the same two values, the later wins the tie
    assert stopper.update(2, 0.5)
    assert stopper.update(3, 0.3)  # smoothed 1 0.3, 2 0.3, 3 0.4
    # 3 becomes (0.5 + 0.3 + 0.2) / 3 = 0.333 and stays best; 4 is (0.3 + 0.2) / 2
    assert not stopper.update(4, 0.2)
    assert stopper.best_step == 3
    assert stopper.keep() == {3, 4}
    # 4 settles at (0.3 + 0.2 + 0.6) / 3 = 0.367, but 5 is (0.2 + 0.6) / 2 = 0.4 for now
    assert stopper.update(5, 0.6)
    assert stopper.keep() == {4, 5}  # 4 is the best final value: still held
    # 5 settles at (0.2 + 0.6 + 0.1) / 3 = 0.3, 6 is 0.35: the best is 4, a step past
    assert not stopper.update(6, 0.1)
    assert (stopper.best_step, stopper.best_value) == (4, 0.2)  # its own value
    assert stopper.keep() == {4, 6}
    assert not stopper.should_stop  # 6 is 2 past 4, patience 3
    stopper.update(7, 0.1)  # 6 settles at 0.267, 7 is 0.1
    assert stopper.should_stop


def test_the_centralized_baseline_deploys_on_the_smoothed_curve(small: tuple) -> None:
    data, split = small
    _, chosen = centralized_baseline(data, split, CONFIG, 6, patience=None, window=3)
    assert chosen["rounds_trained"] == 6
    assert 1 <= chosen["chosen_round"] <= 6


def test_the_centralized_learning_rate_decays_on_plateaus(
    small: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, split = small
    rates: list[float | None] = []
    train_round = BPRTrainer.train_round

    def recorded(self: BPRTrainer, *args: Any, **kwargs: Any) -> Any:
        rates.append(kwargs.get("learning_rate"))
        return train_round(self, *args, **kwargs)

    monkeypatch.setattr(BPRTrainer, "train_round", recorded)
    # min_delta 1.0: no round is a gain; with plateau patience 2 the rate halves once
    # round 3 is 2 past round 1 (before round 4), and again before round 6
    centralized_baseline(
        data, split, CONFIG, 6, patience=None, min_delta=1.0, plateau_decay=0.5, plateau_patience=2
    )
    lr = CONFIG.learning_rate
    assert rates[:6] == [lr, lr, lr, lr / 2, lr / 2, lr / 4]  # then the users' fold-in


def test_the_centralized_learning_rate_follows_the_round_schedule(
    small: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, split = small
    rates: list[float | None] = []
    train_round = BPRTrainer.train_round

    def recorded(self: BPRTrainer, *args: Any, **kwargs: Any) -> Any:
        rates.append(kwargs.get("learning_rate"))
        return train_round(self, *args, **kwargs)

    monkeypatch.setattr(BPRTrainer, "train_round", recorded)
    centralized_baseline(data, split, CONFIG.replace(round_decay=0.5), 3, patience=None)
    lr = CONFIG.learning_rate
    # the devices' schedule round for round; the fold-in (last call) at the base rate
    assert rates == [pytest.approx(lr), pytest.approx(lr / 2), pytest.approx(lr / 4), None]


def test_the_centralized_baseline_trains_without_the_user_refresh(small: tuple) -> None:
    """The device's user refresh is no part of central SGD (its users train with the
    items): the baseline with ``user_epochs`` is the one without, bit for bit."""
    data, split = small
    with_refresh = centralized_baseline(
        data, split, CONFIG.replace(user_epochs=3), 2, patience=None
    )
    without = centralized_baseline(data, split, CONFIG, 2, patience=None)
    assert with_refresh == without


def test_the_centralized_baseline_takes_its_test_step_as_a_parameter(small: tuple) -> None:
    """A validation-only run (test=None) never reads the test split; a given step is the
    one read, with the deployed model's scorer."""
    data, split = small
    none, chosen = centralized_baseline(data, split, CONFIG, 2, patience=None, test=None)
    assert none == {}
    assert chosen["rounds_trained"] == 2
    calls: list[Any] = []

    def step(score_fn: Any, tested_split: Any, full: Any) -> dict[str, float]:
        calls.append((tested_split, full))
        return {"ndcg@10": float(score_fn(tested_split.test.users[:1]).shape[0])}

    metrics, _ = centralized_baseline(data, split, CONFIG, 2, patience=None, test=step)
    assert calls == [(split, data)]
    assert metrics == {"ndcg@10": 1.0}
