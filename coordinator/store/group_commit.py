"""Group commit: write units that arrive together share one transaction and one commit.

Every commit is an fsync (SQLite's WAL with ``synchronous=FULL``, PostgreSQL's WAL
flush), and on SQLite the writers of one process take turns. Ten uploads arriving
together were ten transactions and ten fsyncs one after the other. Here the first
unit to arrive leads: it runs alone and commits; the units that arrive meanwhile wait,
and the next leader runs all of them in one transaction with one commit.

Each unit of a batch of several runs in a SAVEPOINT of its own, so a unit that raises (a
refusal, a unique violation) is rolled back alone, and its caller gets its exception; the
others commit. A unit alone in its batch needs no SAVEPOINT: its error rolls back the
transaction, which holds nothing else.
A caller returns only after the transaction that holds its unit committed (or raises
the commit's error: nothing of its unit was acknowledged), so an acknowledged unit is
as durable as with a transaction of its own.

Units of one batch run in arrival order; a ``lock_first`` hook sees every unit's
``key`` before any unit runs, so a batch can take its row locks in one global order
(no deadlock between processes that batch different sets of rows). A ``finish`` hook
sees the units that succeeded, in the same transaction, just before its COMMIT: work that
follows from them (the round job of a round the batch completed) shares that commit, and
what it returns runs once the COMMIT succeeded, before any unit's caller hears back.

A unit that is on its way (its request's body is arriving, its update being checked)
can be announced with :meth:`GroupCommit.expecting`: a leader about to begin alone waits,
at most ``sibling_wait`` seconds, until an announced unit has joined the queue or every one
gave up, so two uploads that arrive a millisecond apart share one transaction and one fsync
instead of committing one after the other (PostgreSQL's ``commit_delay`` with
``commit_siblings``, driven by what is known to be coming instead of a guess).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

__all__ = ["GroupCommit"]

K = TypeVar("K")
T = TypeVar("T")

log = logging.getLogger("fedrec.group_commit")

# (session, [(key, result) of each unit that succeeded]) -> what to run after the COMMIT
Finish = Callable[[Session, list[tuple[K, Any]]], Callable[[], None] | None]


@dataclass
class _Announcement:
    owner: GroupCommit[Any]
    joined: bool = False


# the announcement of the unit this context (a request; copied into its worker thread)
# will run, so that ``run`` can mark it as joined
_announced: ContextVar[_Announcement | None] = ContextVar("group_commit_announced", default=None)


@dataclass
class _Unit(Generic[K]):
    key: K
    work: Callable[[Session], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit(Generic[K]):
    """Run write units in shared transactions (see the module docstring).

    ``max_batch`` bounds how many units one transaction holds (and how long the
    database's write lock is held at a time); ``sibling_wait`` how long a leader waits
    for announced units (:meth:`expecting`) before it begins without them.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lock_first: Callable[[Session, Sequence[K]], None] | None = None,
        before_commit: Callable[[], None] | None = None,
        finish: Finish[K] | None = None,
        max_batch: int = 128,
        sibling_wait: float = 0.003,
    ) -> None:
        self._sessions = sessions
        self._lock_first = lock_first
        # may be set later (by the owner of the follow-up work); see the module docstring
        self.finish = finish
        self._before_commit = before_commit  # the fault tests pause here to kill the process
        self._max_batch = max_batch
        self._sibling_wait = sibling_wait
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # the leader waiting for announced units sleeps on its own condition (same lock),
        # so a joining unit does not wake every follower
        self._joined = threading.Condition(lock)
        self._queue: list[_Unit[K]] = []
        self._leading = False
        self._expected = 0  # announced units that have not joined the queue nor given up
        # observability for tests and the bench: transactions committed, units in them
        self.batches = 0
        self.units = 0
        self.sibling_waits = 0  # leaders that waited for an announced unit

    @property
    def expected(self) -> int:
        """Announced units that have neither joined the queue nor given up."""
        with self._cond:
            return self._expected

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce that this context will probably :meth:`run` a unit soon; a leader
        about to begin waits for it (bounded). Leaving without running withdraws it."""
        announcement = _Announcement(self)
        with self._cond:
            self._expected += 1
        token = _announced.set(announcement)
        try:
            yield
        finally:
            _announced.reset(token)
            with self._cond:
                if not announcement.joined:
                    announcement.joined = True
                    self._expected -= 1
                    self._joined.notify()

    @property
    def waiting(self) -> int:
        """Units queued for the next transaction."""
        with self._cond:
            return len(self._queue)

    def run(self, key: K, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a shared write transaction; return its result once
        that transaction committed, or raise its own error (or the commit's)."""
        unit: _Unit[K] = _Unit(key, work)
        announcement = _announced.get()
        with self._cond:
            self._queue.append(unit)
            if announcement is not None and announcement.owner is self and not announcement.joined:
                announcement.joined = True
                self._expected -= 1
                self._joined.notify()
            while self._leading and not unit.done:
                self._cond.wait()
            if not unit.done:
                # lead: everything queued so far (this unit included) goes in one batch,
                # once the units announced as on their way joined it (or the wait ran out)
                self._leading = True
                self._wait_for_siblings()
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
        if not unit.done:
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if unit.error is not None:
            raise unit.error
        return unit.result  # type: ignore[no-any-return]

    def _wait_for_siblings(self) -> None:
        """Called by a new leader, holding the lock: alone in its batch while units were
        announced, wait (bounded) until one of them joins or every one gave up. A leader
        with company does not wait: its batch already saves a commit, and in a steady
        stream of uploads there is always one more on its way."""
        if self._expected <= 0 or len(self._queue) > 1:
            return
        self.sibling_waits += 1
        deadline = time.monotonic() + self._sibling_wait
        while self._expected > 0 and len(self._queue) <= 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._joined.wait(remaining)

    def _commit(self, batch: list[_Unit[K]]) -> None:
        raise_later: BaseException | None = None
        after_commit: Callable[[], None] | None = None
        try:
            with self._sessions.begin() as session:
                if self._lock_first is not None:
                    self._lock_first(session, [u.key for u in batch])
                if len(batch) == 1:
                    # alone in its transaction (no concurrent unit arrived): its refusal
                    # rolls the whole transaction back, so it needs no SAVEPOINT of its own
                    batch[0].result = batch[0].work(session)
                else:
                    for unit in batch:
                        try:
                            with session.begin_nested():
                                unit.result = unit.work(session)
                        except Exception as exc:  # this unit's refusal: rolled back alone
                            unit.error = exc
                finish = self.finish
                if finish is not None:
                    # its own errors are its to contain: one raised here rolls back the batch
                    after_commit = finish(
                        session, [(u.key, u.result) for u in batch if u.error is None]
                    )
                if self._before_commit is not None:
                    self._before_commit()
        except BaseException as exc:
            # the transaction did not commit: no unit of it is acknowledged
            for unit in batch:
                if unit.error is None:
                    unit.error = exc
                    unit.result = None
            raise_later = exc
        else:
            if after_commit is not None:
                try:
                    after_commit()
                except Exception:  # committed: every unit stays acknowledged
                    log.exception("the group commit's follow-up after its COMMIT failed")
        with self._cond:
            self.batches += 1
            self.units += len(batch)
            for unit in batch:
                unit.done = True
        if raise_later is not None and not isinstance(raise_later, Exception):
            raise raise_later  # KeyboardInterrupt and the like stop the leader too
