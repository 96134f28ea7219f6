"""Early stopping of the centralized baseline, with the federation's stop-policy rules."""

from __future__ import annotations

import pytest

from fedrec.early_stopping import EarlyStopping
from fedrec.simulation import centralized_baseline
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import BPRConfig, leave_one_out


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


def test_centralized_without_patience_runs_to_the_cap(small: tuple) -> None:
    data, split = small
    _, chosen = centralized_baseline(data, split, CONFIG, 4, patience=None)
    assert chosen["rounds_trained"] == 4
    assert chosen["stopped_by"] == "round cap (4)"
    assert 1 <= chosen["chosen_round"] <= 4
