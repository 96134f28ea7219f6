"""Drawn cohorts of recent rounds, in this process's memory, for long-polls.

A long-poll with ``in_cohort=true`` waits through the rounds its participant was not drawn
into. Thousands of such polls wake together when a round opens; one database read of the
round's cohort serves them all (the first poll to ask reads it, the others await that
read). A drawn cohort never changes (the draw happens once, when the round opens), so an
entry never goes stale; revoked members cannot poll at all. Only the most recent rounds
are kept.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy.orm import Session, sessionmaker

from coordinator.domain import sampling
from coordinator.store.repository import RoundCohortRepository, RoundRepository

__all__ = ["CohortCache", "Members", "drawn_reader", "read_drawn"]

# a round's cohort: its members' ids, or None when every active participant takes part
Members = frozenset[str] | None
Key = tuple[str, int]  # (federation id, round number)


class CohortCache:
    """``(federation id, round number) -> members`` of drawn rounds, newest kept."""

    def __init__(self, max_rounds: int = 256) -> None:
        self.max_rounds = max_rounds
        self._rounds: OrderedDict[Key, Members] = OrderedDict()
        self._reading: dict[Key, asyncio.Task[tuple[bool, Members]]] = {}
        self.loads = 0  # drawn cohorts read from the database so far (tests count them)

    async def members(
        self,
        federation_id: str,
        number: int,
        read: Callable[[], Awaitable[tuple[bool, Members]]],
    ) -> tuple[bool, Members]:
        """(drawn, members) of a round; ``read`` fetches them when they are not cached,
        once for all the callers asking at the same time. A pending draw is not cached."""
        key = (federation_id, number)
        if key in self._rounds:
            self._rounds.move_to_end(key)
            return True, self._rounds[key]
        loop = asyncio.get_running_loop()
        task = self._reading.get(key)
        if task is None or task.get_loop() is not loop:
            task = self._reading[key] = loop.create_task(_call(read))
            task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task)

    def _settle(self, key: Key, task: asyncio.Task[tuple[bool, Members]]) -> None:
        if self._reading.get(key) is task:
            del self._reading[key]
        if task.cancelled() or task.exception() is not None:
            return  # the callers see the error; the next one reads again
        drawn, members = task.result()
        if drawn:
            self.loads += 1
            self._rounds[key] = members
            while len(self._rounds) > self.max_rounds:
                self._rounds.popitem(last=False)


async def _call(read: Callable[[], Awaitable[tuple[bool, Members]]]) -> tuple[bool, Members]:
    return await read()


def read_drawn(
    read_sessions: sessionmaker[Session], federation_id: str, number: int
) -> tuple[bool, Members]:
    """(drawn, members) of a round from the database: members None when every
    participant takes part; not drawn while its draw is pending (or it does not exist)."""
    with read_sessions() as session:
        row = RoundRepository(session).get(federation_id, number)
        if row is None or sampling.draw_pending(row):
            return False, None
        if not row.sampled:
            return True, None
        return True, frozenset(RoundCohortRepository(session).members(row.id))


def drawn_reader(
    cache: CohortCache, read_sessions: sessionmaker[Session]
) -> Callable[[str, int], Awaitable[tuple[bool, Members]]]:
    """``(federation id, number) -> (drawn, members)`` through ``cache``, reading the
    database on a worker thread when it is not cached."""

    async def drawn(federation_id: str, number: int) -> tuple[bool, Members]:
        return await cache.members(
            federation_id,
            number,
            lambda: anyio.to_thread.run_sync(read_drawn, read_sessions, federation_id, number),
        )

    return drawn
