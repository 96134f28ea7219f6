"""What the coordinator reports as its rounds move, for whoever watches (metrics).

The domain calls an ``Observer`` held by the ``Context``; the composition root plugs in
an implementation (Prometheus counters, coordinator/api/telemetry.py), so the domain
imports no monitoring library. Calls happen after the change committed.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoObserver", "Observer"]


class Observer(Protocol):
    def round_opened(self) -> None:
        """A round opened (a new federation's first, or the next after a close or failure)."""

    def round_closed(self, aggregation_seconds: float) -> None:
        """A round aggregated into a new version, taking ``aggregation_seconds``."""

    def round_failed(self) -> None:
        """A round failed below quorum at its deadline."""


class NoObserver:
    """Watches nothing: the default (domain tests, tools)."""

    def round_opened(self) -> None:
        pass

    def round_closed(self, aggregation_seconds: float) -> None:
        pass

    def round_failed(self) -> None:
        pass
