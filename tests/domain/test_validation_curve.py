"""The validation curve's smoothing, staleness and plateau count, by hand."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordinator.domain.backoff import MIN_STEP_SCALE, plateau_scale
from coordinator.domain.specs import DeployPolicy
from coordinator.domain.validation_curve import (
    best_version,
    last_improvement,
    plateaus,
    smoothed,
    stale_versions,
)


def test_window_one_is_the_curve_itself() -> None:
    scores = {0: 0.1, 1: 0.3, 2: 0.2}
    assert smoothed(scores, 1) == scores


def test_a_window_of_three_averages_each_version_with_its_neighbours() -> None:
    scores = {1: 0.1, 2: 0.4, 3: 0.1, 4: 0.2, 5: 0.3}
    found = smoothed(scores, 3)
    # ends: two versions; middle: three
    assert found[1] == pytest.approx((0.1 + 0.4) / 2)
    assert found[2] == pytest.approx((0.1 + 0.4 + 0.1) / 3)
    assert found[3] == pytest.approx((0.4 + 0.1 + 0.2) / 3)
    assert found[4] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert found[5] == pytest.approx((0.2 + 0.3) / 2)
    # the raw best (2, a lucky spike) is not the smoothed best (5, a climbing region)
    assert best_version(scores) == (2, 0.4)
    best = best_version(found)
    assert best is not None
    assert best[0] == 5


def test_unevaluated_versions_are_left_out_of_a_window() -> None:
    found = smoothed({1: 0.2, 3: 0.4, 4: 0.1}, 3)
    assert found == {1: 0.2, 3: pytest.approx(0.25), 4: pytest.approx(0.25)}


def test_a_window_of_five() -> None:
    scores = {v: float(v) for v in range(1, 8)}
    found = smoothed(scores, 5)
    assert found[1] == pytest.approx((1 + 2 + 3) / 3)
    assert found[4] == pytest.approx(4.0)
    assert found[7] == pytest.approx((5 + 6 + 7) / 3)


def test_best_version_prefers_the_later_on_a_tie_and_none_when_empty() -> None:
    assert best_version({1: 0.2, 2: 0.2}) == (2, 0.2)
    assert best_version({}) is None


def test_stale_versions_on_a_smoothed_curve() -> None:
    # raw: the spike at 2 is the best (5 only equals it), 3 versions ago; smoothed:
    # 1 0.25, 2 0.2, 3 0.267, 4 0.267, 5 0.35, the newest is the best
    scores = {1: 0.1, 2: 0.4, 3: 0.1, 4: 0.3, 5: 0.4}
    assert stale_versions(scores, 0.0) == 3
    assert stale_versions(smoothed(scores, 3), 0.0) == 0


@pytest.mark.parametrize(
    ("scores", "patience", "min_delta", "count"),
    [
        ({}, 2, 0.0, 0),
        ({1: 0.1, 2: 0.2, 3: 0.3}, 1, 0.0, 0),  # always improving
        ({1: 0.2, 2: 0.2}, 1, 0.0, 1),  # equal is no gain
        ({1: 0.2, 2: 0.1, 3: 0.1}, 2, 0.0, 1),  # 3 is 2 past the best
        ({1: 0.2, 2: 0.1, 3: 0.1, 4: 0.1}, 2, 0.0, 1),  # the wait restarts at 3
        ({1: 0.2, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1}, 2, 0.0, 2),
        ({1: 0.2, 2: 0.1, 3: 0.1, 4: 0.3, 5: 0.1}, 2, 0.0, 1),  # 4's gain restarts it
        ({1: 0.2, 2: 0.1, 3: 0.1, 4: 0.25, 5: 0.1}, 2, 0.1, 2),  # +0.05 < min_delta
        ({1: 0.2, 4: 0.1}, 3, 0.0, 1),  # unevaluated versions count as rounds
    ],
)
def test_plateaus(scores: dict[int, float], patience: int, min_delta: float, count: int) -> None:
    assert plateaus(scores, patience, min_delta) == count


def test_plateau_scale_decays_per_plateau_keeps_a_back_off_and_has_a_floor() -> None:
    flat = dict.fromkeys(range(1, 8), 0.1)  # plateaus (patience 2) at 3, 5 and 7
    assert plateau_scale(1.0, flat, factor=0.5, patience=2, min_delta=0.0) == 0.125
    assert plateau_scale(0.0625, flat, factor=0.5, patience=2, min_delta=0.0) == 0.0625
    long = dict.fromkeys(range(1, 200), 0.1)
    assert plateau_scale(1.0, long, factor=0.5, patience=1, min_delta=0.0) == MIN_STEP_SCALE


def test_the_window_must_be_odd_and_positive() -> None:
    assert DeployPolicy(window=3).window == 3
    for bad in (0, 2, 100):
        with pytest.raises(ValidationError):
            DeployPolicy(window=bad)
    with pytest.raises(ValueError, match="at least 1"):
        smoothed({1: 0.1}, 0)
    with pytest.raises(ValueError, match="at least 1"):
        plateaus({1: 0.1}, 0, 0.0)


def test_last_improvement_is_where_stale_versions_counts_from() -> None:
    scores = {1: 0.1, 2: 0.2, 3: 0.205, 4: 0.3, 5: 0.29, 7: 0.1}
    assert last_improvement(scores, 0.0) == 4
    assert stale_versions(scores, 0.0) == 7 - 4
    assert last_improvement({1: 0.1, 2: 0.2, 3: 0.205}, 0.01) == 2  # +0.005: no gain
    assert last_improvement({}, 0.0) is None
