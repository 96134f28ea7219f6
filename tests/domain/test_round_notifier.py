"""RoundNotifier without a database: a fake mark reader counts the reads."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from coordinator.domain.errors import TooManyRequests
from coordinator.domain.round_notifier import RoundNotifier


class FakeMarks:
    def __init__(self) -> None:
        self.marks: dict[str, tuple[Any, ...]] = {"f": (1, "active", 0)}
        self.reads: list[list[str]] = []

    def __call__(self, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        self.reads.append(ids)
        return {i: self.marks[i] for i in ids if i in self.marks}


def test_one_read_per_interval_serves_every_waiter_and_a_change_wakes_them() -> None:
    source = FakeMarks()
    notifier = RoundNotifier(source, interval_seconds=0.01)
    woken: list[int] = []

    async def main() -> None:
        async def waiter(n: int) -> None:
            await notifier.wait("f", (1, "active", 0), timeout=30)
            woken.append(n)

        async with anyio.create_task_group() as group:
            for n in range(50):
                group.start_soon(waiter, n)
            for _ in range(1000):  # bounded: a few reads with everyone waiting
                if notifier.waiting == 50 and len(source.reads) >= 3:
                    break
                await anyio.sleep(0.005)
            assert notifier.waiting == 50
            assert all(ids == ["f"] for ids in source.reads)  # one read covers all 50
            assert woken == []
            source.marks["f"] = (2, "active", 1)  # round 2 opens
        assert sorted(woken) == list(range(50))

    anyio.run(main)
    assert notifier.waiting == 0


def test_a_change_between_read_and_wait_is_not_missed() -> None:
    source = FakeMarks()
    notifier = RoundNotifier(source, interval_seconds=0.01)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(notifier.wait, "f", (1, "active", 0), 30)
            for _ in range(1000):
                if source.reads:
                    break
                await anyio.sleep(0.005)
            source.marks["f"] = (2, "active", 1)
            for _ in range(1000):  # the notifier reads round 2 and wakes the first waiter
                if notifier.waiting == 0:
                    break
                await anyio.sleep(0.005)
        # a caller that read round 1 before the change must not wait for yet another one
        with anyio.fail_after(5):
            await notifier.wait("f", (1, "active", 0), 30)

    anyio.run(main)


def test_runs_again_on_a_new_event_loop() -> None:
    source = FakeMarks()
    notifier = RoundNotifier(source, interval_seconds=0.01)

    async def wait_for_change() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(notifier.wait, "f", source.marks["f"], 30)
            for _ in range(1000):
                if notifier.waiting:
                    break
                await anyio.sleep(0.005)
            source.marks["f"] = (source.marks["f"][0] + 1, "active", 0)

    anyio.run(wait_for_change)
    reads = len(source.reads)
    anyio.run(wait_for_change)  # a second loop: a new task reads
    assert len(source.reads) > reads


def test_cap_per_holder() -> None:
    notifier = RoundNotifier(FakeMarks(), max_per_holder=2)
    with notifier.hold("p"), notifier.hold("p"):
        assert notifier.holding("p") == 2
        with pytest.raises(TooManyRequests) as refused:
            with notifier.hold("p"):
                pass
        assert refused.value.headers["Retry-After"] == "1"
        with notifier.hold("q"):  # another token's own cap
            assert notifier.holding("q") == 1
    assert notifier.holding("p") == 0


def test_a_new_round_wakes_only_the_polls_of_its_drawn_members() -> None:
    """Polls sitting rounds out (member, after) sleep through a round that did not draw
    their participant; one cohort read per round decides for all of them; plain polls
    and a federation that stops wake everyone."""
    source = FakeMarks()
    source.marks["f"] = (1, "active", 0, False)
    notifier = RoundNotifier(source, interval_seconds=0.01)
    cohort_reads: list[int] = []

    async def cohort_of(_federation_id: str, number: int) -> tuple[bool, frozenset[str] | None]:
        cohort_reads.append(number)
        return True, frozenset({"p3", "p7"})

    notifier.cohort_of = cohort_of
    woken: list[str] = []

    async def main() -> None:
        async def waiter(name: str, member: str | None) -> None:
            await notifier.wait("f", (1, "active", 0, False), 30, member=member, after=1)
            woken.append(name)

        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(waiter, f"p{n}", f"p{n}")
            group.start_soon(waiter, "plain", None)

            async def until(condition: Any) -> None:
                for _ in range(2000):  # bounded
                    if condition():
                        return
                    await anyio.sleep(0.005)

            await until(lambda: notifier.waiting == 11)
            assert notifier.waiting == 11
            source.marks["f"] = (1, "active", 0, True)  # round 1 again: no cohort poll due
            await until(lambda: woken)
            await anyio.sleep(0.05)
            assert woken == ["plain"]  # a plain poll wakes at any change
            assert cohort_reads == []
            source.marks["f"] = (2, "active", 1, False)  # round 2 drew p3 and p7
            await until(lambda: len(woken) == 3)
            assert sorted(woken) == ["p3", "p7", "plain"]
            assert cohort_reads == [2]  # one read for the ten polls
            await anyio.sleep(0.05)
            assert notifier.waiting == 8  # the others sleep on (the plain one returned)
            source.marks["f"] = (2, "completed", 1, False)  # training stopped: all wake
        assert len(woken) == 11

    anyio.run(main)
    assert notifier.waiting == 0
