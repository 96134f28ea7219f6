"""Background work of one coordinator process: aggregation and the round timer.

Aggregation runs on a worker thread, off the event loop, so health checks and
uploads keep answering while a large round aggregates. The timer enforces
deadlines and takes over expired aggregation leases even when no request arrives;
every replica runs one, and the database compare-and-set keeps the work exactly once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator.domain import rounds
from coordinator.domain.context import Context

__all__ = ["RoundWorker"]

log = logging.getLogger("fedrec.worker")


class RoundWorker:
    def __init__(self, ctx: Context, *, interval_seconds: float = 1.0) -> None:
        self._ctx = ctx
        self._interval = interval_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedrec-aggregate")
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        self._timer = threading.Thread(target=self._run_timer, name="fedrec-timer", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=10)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def kick(self, federation_id: str, number: int) -> Future[None] | None:
        """Aggregate the round in the background if every active participant uploaded."""
        if self._stop.is_set():
            return None
        return self._executor.submit(self._aggregate_if_complete, federation_id, number)

    def _aggregate_if_complete(self, federation_id: str, number: int) -> None:
        try:
            if rounds.round_is_complete(self._ctx, federation_id, number):
                rounds.try_aggregate(self._ctx, federation_id, number)
        except Exception:
            # the timer retries; the lease makes a half-done attempt recoverable
            log.exception("aggregation of round %d of %s failed", number, federation_id)

    def tick(self) -> int:
        return rounds.run_due_work(self._ctx)

    def _run_timer(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._executor.submit(self.tick).result()
            except Exception:
                log.exception("round timer tick failed")
