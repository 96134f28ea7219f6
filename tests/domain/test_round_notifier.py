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
