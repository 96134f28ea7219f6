"""Background work of one coordinator process: the aggregation job, the round timer and
SQLite's checkpoints.

Every trigger of the aggregation job (an accepted upload, the timer, the admin's
aggregate call) runs it on one worker thread, off the event loop, so health checks and
uploads keep answering while a large round aggregates. The timer enforces deadlines
and takes over expired aggregation leases even when no request arrives; every replica
runs one, and the database compare-and-set keeps the work exactly once. On SQLite a
third thread copies the write-ahead log into the database file every fraction of a
second, so no committing request pays for it (``store.db.WAL_AUTOCHECKPOINT_PAGES``).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator.api import telemetry
from coordinator.domain import aggregation_job, idempotency
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import DatabaseError
from coordinator.domain.lifecycle import Trigger
from coordinator.store.db import checkpoint_wal, uses_wal, wal_written_at

__all__ = ["RoundWorker"]

log = logging.getLogger("fedrec.worker")

# expired Idempotency-Key records are deleted at most this often (one DELETE by index)
SWEEP_INTERVAL_SECONDS = 60.0
# SQLite's write-ahead log is checkpointed this often when it was written to (else one
# stat): a K = 10 round of small updates adds ~1,000 pages in ~0.15 s
CHECKPOINT_INTERVAL_SECONDS = 0.1
WAL_MTIME_MARGIN_NS = 50_000_000


class RoundWorker:
    def __init__(
        self,
        ctx: Context,
        *,
        interval_seconds: float = 1.0,
        checkpoint_interval_seconds: float = CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        self._ctx = ctx
        self._interval = interval_seconds
        self._checkpoint_interval = checkpoint_interval_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedrec-aggregate")
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._last_sweep = float("-inf")
        # rounds with a kick queued and not started yet (see kick)
        self._kicked: set[tuple[str, int]] = set()
        self._kicked_lock = threading.Lock()

    def start(self) -> None:
        self._timer = threading.Thread(target=self._run_timer, name="fedrec-timer", daemon=True)
        self._timer.start()
        if uses_wal(self._ctx.sessions.kw["bind"]):
            self._checkpointer = threading.Thread(
                target=self._run_checkpoints, name="fedrec-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._timer, self._checkpointer):
            if thread is not None:
                thread.join(timeout=10)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def kick(self, federation_id: str, number: int) -> Future[None] | None:
        """After an accepted upload: aggregate the round if it is now complete.

        Kicks of one round coalesce: while a kick is queued and has not started, later
        kicks of the round add nothing (it reads the round after all of their uploads
        committed); a kick that arrives once it started is queued anew. Returns None
        when coalesced or stopped.
        """
        if self._stop.is_set():
            return None
        key = (federation_id, number)
        with self._kicked_lock:
            if key in self._kicked:
                return None
            self._kicked.add(key)
        return self._executor.submit(self._after_upload, federation_id, number)

    def aggregate_now(
        self, principal: Principal, federation_id: str, number: int
    ) -> Future[aggregation_job.Outcome]:
        """The admin's call: aggregate the round now; the future raises why it cannot."""
        return self._executor.submit(
            aggregation_job.run,
            self._ctx,
            federation_id,
            number,
            trigger=Trigger.ADMIN,
            principal=principal,
        )

    def _after_upload(self, federation_id: str, number: int) -> None:
        with self._kicked_lock:  # from here on, a new upload's kick queues another run
            self._kicked.discard((federation_id, number))
        try:
            aggregation_job.run(self._ctx, federation_id, number, trigger=Trigger.UPLOAD)
        except Exception as exc:
            # the timer retries; the lease makes a half-done attempt recoverable
            log.exception("aggregation of round %d of %s failed", number, federation_id)
            _count_failure(exc)

    def tick(self) -> int:
        done = aggregation_job.run_due_work(self._ctx)
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_SECONDS:
            self._last_sweep = time.monotonic()
            swept = idempotency.sweep_expired(self._ctx)
            if swept:
                log.info("deleted %d expired Idempotency-Key records", swept)
        return done

    def _run_timer(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._executor.submit(self.tick).result()
            except Exception as exc:
                log.exception("round timer tick failed")
                _count_failure(exc)

    def _run_checkpoints(self) -> None:
        engine = self._ctx.sessions.kw["bind"]
        warned = float("-inf")
        # the log's mtime at the last checkpoint, and when that checkpoint started: a log
        # whose mtime is the same, and older than the start by more than the filesystem's
        # timestamp granularity (a few ms), holds nothing that checkpoint did not see
        checkpointed, started = None, 0
        while not self._stop.wait(self._checkpoint_interval):
            try:
                written = wal_written_at(engine)  # a stat: an idle process stays idle
                if written is None or (
                    written == checkpointed and written < started - WAL_MTIME_MARGIN_NS
                ):
                    continue
                started = time.time_ns()
                checkpoint_wal(engine)
                checkpointed = written
            except Exception as exc:  # the commits' own checkpoint remains the backstop
                if time.monotonic() - warned >= SWEEP_INTERVAL_SECONDS:  # not 10 a second
                    warned = time.monotonic()
                    log.warning("background WAL checkpoint failed: %s", exc)


def _count_failure(exc: Exception) -> None:
    database = isinstance(exc, DatabaseError)
    telemetry.BACKGROUND_ERRORS.labels(str(database).lower()).inc()
