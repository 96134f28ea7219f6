"""The poisoning benchmark's scenarios, small: with a defence the Byzantine aggregate stays
near the honest mean and the promoted item stays cold; without one, neither holds."""

from __future__ import annotations

import numpy as np
import pytest

from bench import poisoning

NO_DEFENCE = "mean, no clip (no defence)"
DEFENDED = ("median", "multi_krum 0.2")


@pytest.fixture(scope="module")
def byzantine() -> dict[str, tuple[poisoning.Outcome, poisoning.Outcome]]:
    # 20 participants, 4 of them (20 %) sending -100 x their delta, 2 rounds
    return poisoning.byzantine(participants=20, hostile=4, rounds=2)


def test_without_defence_the_aggregate_follows_the_byzantine_updates(
    byzantine: dict[str, tuple[poisoning.Outcome, poisoning.Outcome]],
) -> None:
    clean, attacked = byzantine[NO_DEFENCE]
    assert clean.distances == [0.0, 0.0]  # no attack: the mean is the honest mean
    assert min(attacked.distances) > 5  # further from it than the honest step is long


@pytest.mark.parametrize("name", DEFENDED)
def test_with_defence_the_aggregate_stays_near_the_honest_mean(
    byzantine: dict[str, tuple[poisoning.Outcome, poisoning.Outcome]], name: str
) -> None:
    _, attacked = byzantine[name]
    assert max(attacked.distances) < 1.0, attacked.distances


def test_trimming_as_many_as_attack_narrows_the_gap_but_less_than_the_median(
    byzantine: dict[str, tuple[poisoning.Outcome, poisoning.Outcome]],
) -> None:
    # 20 % hostile overall is more than 20 % of some sparse rows' senders: a trim of 0.2
    # per end does not remove them all there
    undefended = min(byzantine[NO_DEFENCE][1].distances)
    trimmed = max(byzantine["trimmed_mean 0.2"][1].distances)
    assert trimmed < undefended / 5
    assert trimmed > max(byzantine["median"][1].distances)


def test_promotion_succeeds_without_defence_and_not_with_the_median() -> None:
    target, table = poisoning.promotion(participants=40, share=0.05, rounds=3)
    clean, attacked = table[NO_DEFENCE]
    assert clean.target_er10 == 0.0  # a cold item: in nobody's top 10
    assert attacked.target_er10 is not None
    assert attacked.target_er10 > 0.5
    _, defended = table["median"]
    assert defended.target_er10 == 0.0
    assert defended.target_rank is not None
    assert attacked.target_rank is not None
    assert defended.target_rank > 10 * attacked.target_rank
    assert np.isfinite(defended.target_rank)
    assert 0 <= target < 500
