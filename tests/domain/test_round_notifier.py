"""RoundNotifier without a database: a fake mark reader counts the reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from coordinator.domain.errors import TooManyRequests
from coordinator.domain.round_notifier import RoundNotifier
from coordinator.domain.round_snapshots import RoundSnapshots
from coordinator.store.repository import FederationMark, RoundView


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


def _moved(number: int, latest: int) -> tuple[FederationMark, RoundView]:
    """Round ``number`` of federation "f" just opened on version ``latest``, handed over."""
    now = datetime.now(UTC)
    return (
        FederationMark("f", number, "active", latest),
        RoundView(
            f"r{number}", "f", number, "open", latest, None, 0, now, None, None, False, None, None
        ),
    )


async def _until(condition: Any) -> None:
    for _ in range(2000):  # bounded
        if condition():
            return
        await anyio.sleep(0.005)


def test_a_round_handed_over_wakes_the_polls_without_a_read() -> None:
    source = FakeMarks()
    source.marks["f"] = (1, "active", 0, False)
    notifier = RoundNotifier(source, interval_seconds=60)
    notifier.snapshots = RoundSnapshots()
    woken: list[tuple[Any, ...]] = []

    async def main() -> None:
        async def waiter() -> None:
            woken.append(await notifier.wait("f", (1, "active", 0, False), 30))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(waiter)
            await _until(lambda: notifier.waiting == 3 and source.reads)
            assert len(source.reads) == 1  # the notifier's first read
            moved = _moved(2, 1)
            await anyio.to_thread.run_sync(notifier.poke, moved)  # from the job's thread
        assert woken == [(2, "active", 1, False)] * 3
        assert len(source.reads) == 1  # woken from the hand-over: no read
        assert notifier.handed == 1
        assert notifier.snapshots is not None
        snapshot = notifier.snapshots.unmoved("f", (2, "active", 1, False))
        assert snapshot is not None
        assert (snapshot.federation, snapshot.round) == moved  # what the polls answer

    anyio.run(main)


def test_a_round_handed_over_that_a_read_already_found_wakes_nobody_twice() -> None:
    """A read after the COMMIT saw the round before the hand-over arrived (or a later
    one): the hand-over changes nothing, and a newer mark is never replaced by it."""
    source = FakeMarks()
    source.marks["f"] = (1, "active", 0, False)
    notifier = RoundNotifier(source, interval_seconds=60)
    notifier.snapshots = RoundSnapshots()
    woken: list[tuple[Any, ...]] = []

    async def main() -> None:
        async def waiter(seen: tuple[Any, ...]) -> None:
            woken.append(await notifier.wait("f", seen, 30))

        async with anyio.create_task_group() as group:
            group.start_soon(waiter, (1, "active", 0, False))
            await _until(lambda: notifier.waiting == 1 and source.reads)
            source.marks["f"] = (3, "active", 2, False)  # round 3, read first
            notifier.poke()
            await _until(lambda: woken)
            assert woken == [(3, "active", 2, False)]
            group.start_soon(waiter, (3, "active", 2, False))  # waits on for round 4
            await _until(lambda: notifier.waiting == 1)
            for number in (3, 2):  # the same round, then an older one, handed over late
                notifier.poke(_moved(number, number - 1))
                await _until(lambda number=number: notifier.handed == 4 - number)
            await anyio.sleep(0.05)
            assert woken == [(3, "active", 2, False)]  # nobody woken again
            assert notifier.mark("f") == (3, "active", 2, False)  # not set back
            assert notifier.waiting == 1
            group.cancel_scope.cancel()

    anyio.run(main)


def test_hand_overs_do_not_put_off_the_periodic_read() -> None:
    """The read per interval still runs while this process hands rounds over faster
    than that (another process's changes are seen by it)."""
    source = FakeMarks()
    source.marks["f"] = (1, "active", 0, False)
    notifier = RoundNotifier(source, interval_seconds=0.05)
    notifier.snapshots = RoundSnapshots()

    async def main() -> None:
        async def waiter() -> None:  # waits again at once, with the mark it was woken by
            seen: tuple[Any, ...] = (1, "active", 0, False)
            while True:
                seen = await notifier.wait("f", seen, 30)

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await _until(lambda: notifier.waiting == 1 and source.reads)
            for number in range(2, 42):  # a round handed over every 10 ms for 0.4 s
                source.marks["f"] = (number, "active", number - 1, False)  # committed
                notifier.poke(_moved(number, number - 1))
                await anyio.sleep(0.01)
            assert notifier.handed >= 10
            assert len(source.reads) >= 4  # about one per 0.05 s, not one in all
            group.cancel_scope.cancel()

    anyio.run(main)


def test_a_federations_mark_is_read_one_interval_after_its_last_poll_left() -> None:
    """A poll that comes back soon (the next round's, a renewal) finds its federation's
    mark still read, and so starts waiting with no first read of a new task; an interval
    later nothing is read for it any more, and its mark is unknown."""
    source = FakeMarks()
    source.marks["f"] = (1, "active", 0, False)
    notifier = RoundNotifier(source, interval_seconds=0.2)
    woken: list[tuple[Any, ...]] = []

    async def main() -> None:
        async def waiter(seen: tuple[Any, ...]) -> None:
            woken.append(await notifier.wait("f", seen, 30))

        async with anyio.create_task_group() as group:
            group.start_soon(waiter, (1, "active", 0, False))
            await _until(lambda: notifier.waiting == 1 and source.reads)
            source.marks["f"] = (2, "active", 1, False)
            notifier.poke()
            await _until(lambda: woken)
            assert notifier.waiting == 0
            assert notifier.mark("f") == (2, "active", 1, False)  # still read
            reads = len(source.reads)
            group.start_soon(waiter, (2, "active", 1, False))  # back within the interval
            await _until(lambda: notifier.waiting == 1)
            assert len(source.reads) == reads  # no new task, no first read
            source.marks["f"] = (3, "active", 2, False)
            notifier.poke()
            await _until(lambda: len(woken) == 2)
            assert woken[1] == (3, "active", 2, False)
            await _until(lambda: notifier.mark("f") is None)  # an interval later
            assert notifier.mark("f") is None
            await _until(lambda: notifier._task is not None and notifier._task.done())
            assert notifier._task is not None
            assert notifier._task.done()  # reads nothing

    anyio.run(main)


def test_a_federation_not_read_until_now_is_read_at_once_by_a_running_task() -> None:
    """A poll of a federation the running task does not read yet (another federation's
    polls keep it running) is not left with a round that moved after the poll's own read
    until the next interval: its registration has the task read at once."""
    source = FakeMarks()
    source.marks = {"f": (2, "active", 1, False), "g": (1, "active", 0, False)}
    notifier = RoundNotifier(source, interval_seconds=60)
    woken: list[tuple[Any, ...]] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(notifier.wait, "g", (1, "active", 0, False), 30)
            await _until(lambda: notifier.waiting == 1 and source.reads)

            async def waiter() -> None:  # read round 1 of f just before round 2 opened
                woken.append(await notifier.wait("f", (1, "active", 0, False), 30))

            group.start_soon(waiter)
            with anyio.fail_after(5):  # not the 60 s interval
                await _until(lambda: woken)
            assert woken == [(2, "active", 1, False)]
            group.cancel_scope.cancel()

    anyio.run(main)
