"""The last round read of each federation, in this process's memory, for long-poll renewals.

A waiting participant renews its long-poll every ``max_wait_seconds``; with thousands
waiting, each renewal's first read of the current round is the same read. While long-polls
wait on a federation, the round notifier knows its round mark as of its last read (one query
per interval for all of them); a snapshot taken under that same mark, and recently, is what a
fresh read would answer, so a renewal starts waiting without one. Plain reads (no ``after``)
always read the database: a snapshot's ``update_count`` or round ``state`` may lag by up to
``max_age_seconds`` within one mark.
"""

from __future__ import annotations

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
