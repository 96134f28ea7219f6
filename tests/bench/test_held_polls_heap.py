"""bench.held_polls_heap on a few polls: a real coordinator, its census through the probe."""

from __future__ import annotations

import pytest

from bench import held_polls_heap


@pytest.mark.slow
def test_held_polls_show_in_the_census_frozen_or_not() -> None:
    polls = held_polls_heap.DRAWN + 60
    found = held_polls_heap.measure(polls)
    assert found["count"] == 60  # the drawn were answered, the rest held
    before, held = found["before"], found["held"]
    assert before["frozen"] > 10_000  # fedrec serve froze its startup heap
    # each held poll is dozens of tracked objects (coroutine frames, closures, the scope…)
    assert found["tracked_per_poll"] > 30, found["tracked_per_poll"]
    assert held["rss"] > 0
    # the thaw's collection walks what was frozen: the startup heap and the held polls
    thawed = found["thawed"]
    assert thawed["full_collection_cpu"] > held["full_collection_cpu"]
    assert thawed["frozen"] > 0  # frozen again by the policy once the collection ended
    text = held_polls_heap.report(found, polls, top=5)
    assert "60 polls held" in text
    assert "| no poll held |" in text
    assert "| 60 held |" in text
    # frozen by fedrec serve's collector policy, the held polls' objects are out of the
    # by-type table (what a full collection walks) but in the count per held poll
    assert "tracked objects (frozen or not)" in text
    assert "a thaw (everything unfrozen, then one full collection" in text


def test_refuses_too_few_polls() -> None:
    with pytest.raises(SystemExit):
        held_polls_heap.main(["--polls", str(held_polls_heap.DRAWN)])
