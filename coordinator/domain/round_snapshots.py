"""The last round read of each federation, in this process's memory, for long-poll renewals.

A waiting participant renews its long-poll every ``max_wait_seconds``; with thousands
waiting, each renewal's first read of the current round is the same read. While long-polls
wait on a federation, the round notifier knows its round mark as of its last read (one query
per interval for all of them); a snapshot taken under that same mark, and recently, is what a
fresh read would answer, so a renewal starts waiting without one. Plain reads (no ``after``)
always read the database: a snapshot's ``update_count`` or round ``state`` may lag by up to
``max_age_seconds`` within one mark.

When a round mark moves, every long-poll of the federation wakes at once and finds no
snapshot under the new mark; without more, each would read the round (943 reads at each
round of a per-user federation). The first one's read is shared: the others await it
(:meth:`RoundSnapshots.flight`), since it started after they learnt of the same mark.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from coordinator.store.repository import FederationMark, RoundView

__all__ = ["RoundSnapshots", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    federation: FederationMark
    round: RoundView
    mark: tuple[Any, ...]
    taken_at: float


class RoundSnapshots:
    """``federation id -> Snapshot`` of the last read, at most ``max_federations`` kept."""

    def __init__(self, max_age_seconds: float = 5.0, max_federations: int = 1024) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_federations = max_federations
        self._snapshots: dict[str, Snapshot] = {}
        # federation id -> (mark, the read in flight under it); None result: it failed
        self._flights: dict[str, tuple[tuple[Any, ...], asyncio.Future[Snapshot | None]]] = {}

    def put(self, federation: FederationMark, row: RoundView, mark: tuple[Any, ...]) -> None:
        if len(self._snapshots) >= self.max_federations and federation.id not in self._snapshots:
            self._snapshots.clear()
        self._snapshots[federation.id] = Snapshot(federation, row, mark, time.monotonic())

    def unmoved(self, federation_id: str, mark: tuple[Any, ...] | None) -> Snapshot | None:
        """The snapshot of ``federation_id`` if it was taken under ``mark`` (the notifier's
        latest; None: nobody waits, so nothing is known) and recently enough."""
        snapshot = self._snapshots.get(federation_id)
        if (
            snapshot is None
            or mark is None
            or snapshot.mark != mark
            or time.monotonic() - snapshot.taken_at > self.max_age_seconds
        ):
            return None
        return snapshot

    def flight(
        self, federation_id: str, mark: tuple[Any, ...]
    ) -> tuple[asyncio.Future[Snapshot | None], bool]:
        """The read of ``federation_id``'s round in flight under ``mark``, and whether the
        caller must do it (it is the first: it then calls :meth:`land`). Event loop only."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(federation_id)
        if (
            flight is not None
            and flight[0] == mark
            and not flight[1].done()
            and flight[1].get_loop() is loop  # (tests drive one app from several loops)
        ):
            return flight[1], False
        future: asyncio.Future[Snapshot | None] = loop.create_future()
        self._flights[federation_id] = (mark, future)
        return future, True

    def land(
        self, federation_id: str, future: asyncio.Future[Snapshot | None], read: Snapshot | None
    ) -> None:
        """The leader's read is done (None: it failed; the others read for themselves)."""
        if not future.done():
            future.set_result(read)
        flight = self._flights.get(federation_id)
        if flight is not None and flight[1] is future:
            del self._flights[federation_id]
