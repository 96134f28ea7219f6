"""One long-poll notifier per process: a single database read per interval wakes every
long-poll whose federation moved, instead of each poll querying every 0.2 s.

Waiters register per federation; while any wait, one task of the event loop reads the
waited federations' round marks (current round, state, latest version) in one query and
sets the event of each federation whose mark changed. It reads the database, so it sees
rounds opened by any process or replica. When this process itself moves a round (the
aggregation job opened, closed or failed one), :meth:`RoundNotifier.poke` has it read at
once instead of at the end of its interval. It also caps the long-polls one token holds.

A poll that sits out the rounds its participant is not drawn into (``in_cohort``) waits
under its participant's id: when a round opens, the notifier reads that round's drawn
cohort once (``cohort_of``, the process's cohort cache) and wakes only the members'
polls. Under sampling nearly every poll waits so, and waking all of them at each round
(10,000 wake-ups to answer 100) was a cost per round proportional to the population.

When this process itself opened the next round, the job's committing thread knows the
new round mark and the new round exactly as a read would answer them, and hands both to
:meth:`RoundNotifier.poke`: the notifier wakes the federation's polls with that mark
without reading, and the round goes into the process's round snapshots, so the woken
polls answer from it without reading either (two thread hops and two reads fewer on the
path from the round's COMMIT to its long-polls' answers). The periodic read still runs
once per interval, for what other processes change; the mark handed over must equal
``round_marks``' (:func:`mark_of` of the same columns), or that read would see a change
and wake the polls a second time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from sqlalchemy.orm import Session, sessionmaker

from coordinator.domain.errors import TooManyRequests
from coordinator.domain.round_snapshots import RoundSnapshots
from coordinator.store.models import Federation, Round
from coordinator.store.repository import FederationMark, FederationRepository, RoundView

__all__ = ["MAX_LONG_POLL_SECONDS_LIMIT", "Moved", "RoundNotifier", "database_marks", "mark_of"]

log = logging.getLogger("fedrec.notifier")

# FEDREC_MAX_LONG_POLL_SECONDS' own bound: an hour keeps a lost client's poll bounded
MAX_LONG_POLL_SECONDS_LIMIT = 3600

MarkReader = Callable[[list[str]], dict[str, tuple[Any, ...]]]
# (federation id, round number) -> (drawn, members: None when every participant takes part)
CohortReader = Callable[[str, int], Awaitable[tuple[bool, frozenset[str] | None]]]
_ACTIVE = "active"  # lifecycle.FederationState.ACTIVE: a poll waiting in it sits rounds out
# what this process committed: a federation's new round mark and its new current round, as
# a read of them would answer (rounds.current_round)
Moved = tuple[FederationMark, RoundView]


def mark_of(
    federation: Federation | FederationMark, current: Round | RoundView | None
) -> tuple[Any, ...]:
    """What a long-poll waits to see change (what ``round_marks`` reads), from the
    federation and its current round as read: the draw of a sampled round's cohort is a
    change too (a poll waiting for a round its participant is drawn into wakes at it)."""
    pending = (
        current is not None
        and current.number == federation.current_round
        and bool(current.sampled)
        and current.population is None
    )
    return (federation.current_round, federation.state, federation.latest_version, pending)


def database_marks(read_sessions: sessionmaker[Session]) -> MarkReader:
    def read(ids: list[str]) -> dict[str, tuple[Any, ...]]:
        with read_sessions() as session:
            return FederationRepository(session).round_marks(ids)

    return read


class RoundNotifier:
    """Wakes long-polls when their federation's round mark changes."""

    def __init__(
        self,
        read_marks: MarkReader | None = None,
        *,
        interval_seconds: float = 0.2,
        max_per_holder: int = 4,
        max_wait_seconds: int = 300,
        max_cohort_wait_seconds: int = 1800,
    ) -> None:
        # set by the Context that owns the notifier when not given here
        self.read_marks = read_marks
        self.interval_seconds = interval_seconds
        self.max_per_holder = max_per_holder
        # the longest wait one long-poll may ask for (advertised as Round.max_wait_seconds)
        self.max_wait_seconds = max_wait_seconds
        # the longest wait of a poll that sits out the rounds its participant is not drawn
        # into (in_cohort): most of a sampled federation waits so, and renews this rarely
        self.max_cohort_wait_seconds = max(max_cohort_wait_seconds, max_wait_seconds)
        self._events: dict[str, anyio.Event] = {}
        # reads a round's drawn cohort (set by the Context: its cohort cache); None: every
        # poll that waits for its participant's round is woken at each change, as plain ones
        self.cohort_of: CohortReader | None = None
        # per federation, the polls waiting for a round their participant is drawn into,
        # by (participant id, the round number they wait to pass)
        self._cohort_events: dict[str, dict[tuple[str, int], anyio.Event]] = {}
        self._cohort_waiters: Counter[tuple[str, str, int]] = Counter()
        self._waiters: Counter[str] = Counter()
        # federations nobody waits on any more whose marks are still read, until a moment
        # (monotonic): a poll that comes back meanwhile (the next round's, a renewal)
        # starts waiting without a read of its own or a new task's first read
        self._lingering: dict[str, float] = {}
        self._holders: Counter[Hashable] = Counter()
        self._marks: dict[str, tuple[Any, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        # set (from any thread) to cut the reader's sleep short: see poke
        self._poked: asyncio.Event | None = None
        # rounds this process opened, handed over by poke, not applied yet (event loop)
        self._moved: dict[str, Moved] = {}
        # where a handed-over round goes, for the woken polls to answer from (set by the
        # Context: its round snapshots); None: they read it
        self.snapshots: RoundSnapshots | None = None
        self.reads = 0  # database reads so far (tests and the bench count them)
        self.handed = 0  # wake-ups from a handed-over mark, without a read (tests count)

    @property
    def waiting(self) -> int:
        """Long-polls waiting on this notifier right now."""
        return sum(self._waiters.values())

    def holding(self, holder: Hashable) -> int:
        """Long-polls ``holder`` holds right now."""
        return self._holders[holder]

    @contextmanager
    def hold(self, holder: Hashable) -> Iterator[None]:
        """Count one long-poll of ``holder`` (a token); refuse beyond the cap with 429."""
        if self._holders[holder] >= self.max_per_holder:
            raise TooManyRequests(
                f"this token already holds {self.max_per_holder} long-polls "
                "(FEDREC_MAX_LONG_POLLS_PER_TOKEN); wait for one to return",
                headers={"Retry-After": "1"},
            )
        self._holders[holder] += 1
        try:
            yield
        finally:
            self._holders[holder] -= 1
            if not self._holders[holder]:
                del self._holders[holder]

    async def wait(
        self,
        federation_id: str,
        seen: tuple[Any, ...],
        timeout: float,
        *,
        member: str | None = None,
        after: int | None = None,
    ) -> tuple[Any, ...]:
        """Wait until ``federation_id``'s round mark differs from ``seen`` (what the caller
        read) or ``timeout`` seconds pass. A change the notifier already read returns at once.
        Returns the mark last read when the wait ended (``seen`` if none was read since):
        a caller whose wait ran out with it unchanged knows its round did not move.

        With ``member`` and ``after`` (a poll of that participant sitting out the rounds it
        is not drawn into), a later change wakes it only when a round numbered above
        ``after`` opens with it in the drawn cohort, or the federation stops being active;
        so its mark may have moved when its wait runs out."""
        tracked = federation_id in self._waiters or self.mark(federation_id) is not None
        if not tracked:
            self._marks.pop(federation_id, None)  # no longer read: not known
        self._lingering.pop(federation_id, None)
        known = self._marks.setdefault(federation_id, seen)
        if known != seen:
            return known
        key = (member, after) if member is not None and after is not None else None
        if key is not None and self.cohort_of is not None:
            events = self._cohort_events.setdefault(federation_id, {})
            event = events.get(key)
            if event is None:
                event = events[key] = anyio.Event()
            self._cohort_waiters[(federation_id, *key)] += 1
        else:
            key = None
            event = self._events.get(federation_id)
            if event is None:
                event = self._events[federation_id] = anyio.Event()
        self._waiters[federation_id] += 1
        # a federation not read until now is read at once, as a new task's first read
        # would (a round moved between the caller's read and now is not missed)
        self._ensure_running(read_now=not tracked)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
            return self._marks.get(federation_id, seen)
        finally:
            if key is not None:
                self._forget_cohort_waiter(federation_id, key, event)
            self._waiters[federation_id] -= 1
            if not self._waiters[federation_id]:
                del self._waiters[federation_id]
                self._events.pop(federation_id, None)
                self._cohort_events.pop(federation_id, None)
                # its mark stays known (and read) one interval more, for the poll that
                # comes back: see _lingering
                self._lingering[federation_id] = time.monotonic() + self.interval_seconds

    def _forget_cohort_waiter(
        self, federation_id: str, key: tuple[str, int], event: anyio.Event
    ) -> None:
        counted = (federation_id, *key)
        self._cohort_waiters[counted] -= 1
        if self._cohort_waiters[counted]:
            return
        del self._cohort_waiters[counted]
        events = self._cohort_events.get(federation_id)
        if events is not None and events.get(key) is event:
            del events[key]

    def mark(self, federation_id: str) -> tuple[Any, ...] | None:
        """The round mark last read for ``federation_id`` while polls wait on it, or
        waited until less than an interval ago (None: nothing is read for it)."""
        until = self._lingering.get(federation_id)
        if until is not None and (
            until <= time.monotonic() or self._task is None or self._task.done()
        ):
            return None  # no longer read (or the reader stopped): unknown
        return self._marks.get(federation_id)

    def notify(self, federation_id: str) -> None:
        """Wake the waiters of ``federation_id`` now (those sitting rounds out too)."""
        event = self._events.pop(federation_id, None)
        if event is not None:
            event.set()
        for cohort_event in self._cohort_events.pop(federation_id, {}).values():
            cohort_event.set()

    async def _wake_drawn(self, federation_id: str, mark: tuple[Any, ...]) -> None:
        """After a change to ``mark``: wake the polls sitting rounds out that it concerns
        (the federation stopped being active, or a round they wait to pass opened with
        their participant drawn), reading that round's cohort once for all of them."""
        events = self._cohort_events.get(federation_id)
        if not events:
            return
        number, state, _latest, pending = mark
        if state != _ACTIVE:
            self._set_cohort_events(federation_id, list(events))
            return
        if number is None or pending or not any(after < number for _, after in events):
            return  # no new round, or its sample is not drawn yet: nobody to wake
        assert self.cohort_of is not None  # cohort waiters exist only with a reader
        try:
            drawn, members = await self.cohort_of(federation_id, number)
        except Exception:  # a busy database: let them all look for themselves
            log.warning("long-poll notifier could not read round %d's cohort", number)
            self._set_cohort_events(federation_id, list(events))
            return
        if not drawn:
            return
        events = self._cohort_events.get(federation_id) or {}
        self._set_cohort_events(
            federation_id,
            [
                (pid, after)
                for pid, after in events
                if after < number and (members is None or pid in members)
            ],
        )

    def _set_cohort_events(self, federation_id: str, keys: list[tuple[str, int]]) -> None:
        events = self._cohort_events.get(federation_id)
        if events is None:
            return
        for key in keys:
            event = events.pop(key, None)
            if event is not None:
                event.set()

    def poke(self, moved: Moved | None = None) -> None:
        """Read the round marks now rather than at the end of the interval: this process
        has just committed a round change. Callable from any thread; a no-op while no
        long-poll waits (a poll that starts later reads the round itself).

        ``moved``: the change was the opening of the federation's next round, and these
        are its new mark and round exactly as a read would answer them: the polls waiting
        on it are woken from them, without a read (see the module's docstring)."""
        task, poked = self._task, self._poked
        if task is None or poked is None or task.done():
            return
        try:
            task.get_loop().call_soon_threadsafe(self._poked_with, poked, moved)
        except RuntimeError:  # the loop closed meanwhile: nobody is left to wake
            pass

    def _poked_with(self, poked: asyncio.Event, moved: Moved | None) -> None:
        if moved is not None:
            self._moved[moved[0].id] = moved
        poked.set()

    def _handed_marks(self, moved: dict[str, Moved]) -> dict[str, tuple[Any, ...]]:
        """The marks of the rounds handed over that are news to the waiting polls: a
        federation some poll waits on, whose known mark is of an earlier round (a read
        since the COMMIT may already have seen this round, or a later one: then the
        handed mark is old, and nothing is woken twice). Their rounds go into the
        snapshots, for the woken polls to answer from."""
        marks: dict[str, tuple[Any, ...]] = {}
        for federation_id, (federation, row) in moved.items():
            known = self._marks.get(federation_id)
            if federation.current_round is None or not self._tracks(federation_id):
                continue
            if known is not None and known[0] is not None and known[0] >= federation.current_round:
                continue
            mark = mark_of(federation, row)
            if self.snapshots is not None:
                self.snapshots.put(federation, row, mark)
            marks[federation_id] = mark
        return marks

    def _tracks(self, federation_id: str) -> bool:
        until = self._lingering.get(federation_id)
        return federation_id in self._waiters or (until is not None and until > time.monotonic())

    def _tracked(self) -> bool:
        """Whether any federation's mark is still read: polls wait on it, or waited until
        less than an interval ago (the others' marks are forgotten here)."""
        now = time.monotonic()
        for federation_id, until in list(self._lingering.items()):
            if until <= now:
                del self._lingering[federation_id]
                if federation_id not in self._waiters:
                    self._marks.pop(federation_id, None)
        return bool(self._waiters or self._lingering)

    def _ensure_running(self, *, read_now: bool = False) -> None:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            if read_now and self._poked is not None:
                self._poked.set()
            return
        # runs while anyone waits; no task group outlives a request, so the task goes on the
        # running loop (kept referenced: the loop holds tasks only weakly)
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        poked = self._poked = asyncio.Event()
        self._moved.clear()  # handed to an earlier loop's task: a read starts this one
        last_read = float("-inf")
        while self._tracked():
            poked.clear()  # before the read: a poke from now on is seen by it or the next
            moved, self._moved = self._moved, {}
            ids = sorted({*self._waiters, *self._lingering})
            if moved and time.monotonic() - last_read < self.interval_seconds:
                # woken by this process's own commit, which said what it moved: no read
                # (the periodic read stays on its schedule, for other processes' changes)
                marks = self._handed_marks(moved)
                self.handed += 1
            else:
                try:
                    assert self.read_marks is not None, "the notifier has no mark reader"
                    marks = await anyio.to_thread.run_sync(self.read_marks, ids)
                    self.reads += 1
                except Exception:  # a busy database: the next read (or the timeout) wakes them
                    log.warning("long-poll notifier could not read the rounds", exc_info=True)
                    marks = {}
                last_read = time.monotonic()
            for federation_id, mark in marks.items():
                if not self._tracks(federation_id):
                    continue
                changed = self._marks.get(federation_id, mark) != mark
                # known before any wake-up: a poll entering meanwhile with an older mark
                # returns at once and looks for itself
                self._marks[federation_id] = mark
                if changed:
                    event = self._events.pop(federation_id, None)
                    if event is not None:
                        event.set()
                    await self._wake_drawn(federation_id, mark)
            until_read = last_read + self.interval_seconds - time.monotonic()
            with anyio.move_on_after(max(until_read, 0.0)):
                await poked.wait()
