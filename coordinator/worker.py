"""Background work of one coordinator process: the aggregation job, the round timer and
SQLite's checkpoints.

Every trigger of the aggregation job (an accepted upload, the timer, the admin's
aggregate call) runs it on one worker thread, off the event loop, so health checks and
uploads keep answering while a large round aggregates; except a small round completed by
an upload, aggregated before that upload answers, with no hand-off: on SQLite inside the
upload's own transaction (the upload group commit's finish, before its COMMIT: one fsync
for both), else by that upload's own thread (an anyio worker, after its COMMIT) in one
transaction (:meth:`RoundWorker.accept_upload`).
Heavy rounds (``ease``: a dense solve, minutes at 20 000 items) are claimed there and
aggregated on threads of their own (``heavy_workers``, one by default), so the other
federations' rounds do not queue behind a solve; a round finding every heavy thread busy
stays open, unclaimed, for the timer (see :mod:`coordinator.domain.aggregation_job`).
The timer enforces deadlines and takes over expired aggregation leases even when no
request arrives; every replica runs one, and the database compare-and-set keeps the work
exactly once. On SQLite a third thread copies the write-ahead log into the database file
every fraction of a second, so no committing request pays for it
(``store.db.WAL_AUTOCHECKPOINT_PAGES``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session

from coordinator.api import telemetry
from coordinator.domain import aggregation_job, ease_process, idempotency, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import CoordinatorError, DatabaseError
from coordinator.domain.lifecycle import Trigger
from coordinator.store.db import checkpoint_wal, uses_wal, wal_written_at
from coordinator.store.repository import RoundCompleteness

__all__ = ["RoundWorker"]

log = logging.getLogger("fedrec.worker")

# expired Idempotency-Key records are deleted at most this often (one DELETE by index)
SWEEP_INTERVAL_SECONDS = 60.0
# SQLite's write-ahead log is checkpointed this often when it was written to (else one
# stat): a K = 10 round of small updates adds ~1,000 pages in ~0.15 s
CHECKPOINT_INTERVAL_SECONDS = 0.1
WAL_MTIME_MARGIN_NS = 50_000_000
# a solve's scratch files older than its timeout plus this are a crashed process's
SCRATCH_MARGIN_SECONDS = 3600.0


class HeavyThreads:
    """The :class:`~coordinator.domain.aggregation_job.Offload` of one process: ``size``
    threads, and as many slots, reserved before a heavy round is claimed."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fedrec-heavy")
        self._slots = threading.BoundedSemaphore(size)
        self._stop = stop

    def reserve(self) -> bool:
        return not self._stop.is_set() and self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()

    def submit(self, job: Callable[[], aggregation_job.Outcome]) -> Future[aggregation_job.Outcome]:
        try:
            return self._executor.submit(self._run, job)
        except BaseException:
            self._slots.release()
            raise

    def stopping(self) -> bool:
        return self._stop.is_set()

    def shutdown(self) -> None:
        """Wait for the running jobs: a child solve sees :meth:`stopping` and is killed,
        its round released for the next process."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Callable[[], aggregation_job.Outcome]) -> aggregation_job.Outcome:
        try:
            return job()
        except ease_process.SolveCancelled as exc:
            log.warning("%s; the round was released", exc)
            raise
        except CoordinatorError:  # the admin's answer (409 ...), raised for the caller
            raise
        except Exception as exc:
            # the timer retries; the lease makes a half-done attempt recoverable
            log.exception("a heavy aggregation failed")
            _count_failure(exc)
            raise
        finally:
            self._slots.release()


class RoundWorker:
    def __init__(
        self,
        ctx: Context,
        *,
        interval_seconds: float = 1.0,
        checkpoint_interval_seconds: float = CHECKPOINT_INTERVAL_SECONDS,
        heavy_workers: int = 1,
    ) -> None:
        self._ctx = ctx
        self._interval = interval_seconds
        self._checkpoint_interval = checkpoint_interval_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedrec-aggregate")
        self._stop = threading.Event()
        self._heavy = HeavyThreads(heavy_workers, self._stop)
        self._timer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._last_sweep = float("-inf")
        # rounds with a kick queued and not started yet (see kick)
        self._kicked: set[tuple[str, int]] = set()
        self._kicked_lock = threading.Lock()
        if ctx.upload_commits is not None:
            ctx.upload_commits.finish = self._aggregate_before_commit

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
        self._heavy.shutdown()

    def kick(self, federation_id: str, number: int) -> Future[None] | None:
        """After an accepted upload: aggregate the round if it is now complete.

        Kicks of one round coalesce: while a kick is queued and has not started, later
        kicks of the round add nothing (it reads the round after all of their uploads
        committed); a kick that arrives once it started is queued anew. Returns None
        when coalesced or stopped; else a future done when the run is (a heavy round's
        solve included).
        """
        if self._stop.is_set():
            return None
        key = (federation_id, number)
        with self._kicked_lock:
            if key in self._kicked:
                return None
            self._kicked.add(key)
        done: Future[None] = Future()
        _cancel_with(done, self._executor.submit(self._after_upload, federation_id, number, done))
        return done

    def accept_upload(
        self, submit: Callable[[], rounds.Receipt], federation_id: str, number: int
    ) -> rounds.Receipt:
        """Run an upload (``submit``: ``rounds.submit_update``), then, on the same thread,
        :meth:`after_upload` if it created an update that may complete its round."""
        receipt = submit()
        if receipt.created and receipt.may_complete and not receipt.aggregated:
            self.after_upload(federation_id, number, receipt.facts)
        return receipt

    def _aggregate_before_commit(
        self, session: Session, units: list[tuple[tuple[str, int], Any]]
    ) -> Callable[[], None] | None:
        """The upload group commit's finish: a small round that a unit of this batch
        completed is aggregated in the batch's own transaction, before its COMMIT
        (:func:`aggregation_job.aggregate_before_commit`), so its completing upload's
        answer waits for one fsync, not two. Each round once, from the facts of its last
        unit in the batch (the one that counted every update of the batch)."""
        if self._stop.is_set():
            return None
        # one walk: per round, its last created receipt and every receipt of the batch
        last: dict[tuple[str, int], rounds.Receipt] = {}
        receipts: dict[tuple[str, int], list[rounds.Receipt]] = {}
        for key, receipt in units:
            if isinstance(receipt, rounds.Receipt):
                receipts.setdefault(key, []).append(receipt)
                if receipt.created:
                    last[key] = receipt
        done: list[Callable[[], aggregation_job.Outcome]] = []
        for key, receipt in last.items():
            if not receipt.may_complete or receipt.facts is None:
                continue
            after = aggregation_job.aggregate_before_commit(
                self._ctx, session, key[0], key[1], receipt.facts
            )
            if after is None:
                continue  # the receipt's own thread kicks it after the COMMIT
            done.append(after)
            for other in receipts[key]:
                other.aggregated = True
        if not done:
            return None

        def after_commit() -> None:
            for after in done:
                after()

        return after_commit

    def after_upload(
        self, federation_id: str, number: int, facts: RoundCompleteness | None = None
    ) -> None:
        """On the thread of an upload that may complete its round, after its COMMIT: a
        small plaintext round is aggregated right here (no hand-off to the worker's
        thread, no wake-up, and the uploader's answer leaves with the next round open);
        any other round is kicked (:meth:`kick`). An error is logged: the upload stays
        acknowledged, and the timer aggregates the round."""
        if self._stop.is_set():
            return
        try:
            outcome = aggregation_job.run_if_small(self._ctx, federation_id, number, facts)
        except Exception as exc:
            log.exception("aggregation of round %d of %s failed", number, federation_id)
            _count_failure(exc)
            return
        if outcome is None:
            self.kick(federation_id, number)

    def aggregate_now(
        self, principal: Principal, federation_id: str, number: int
    ) -> Future[aggregation_job.Outcome]:
        """The admin's call: aggregate the round now; the future raises why it cannot."""
        done: Future[aggregation_job.Outcome] = Future()

        def claim() -> None:
            try:
                outcome = aggregation_job.run(
                    self._ctx,
                    federation_id,
                    number,
                    trigger=Trigger.ADMIN,
                    principal=principal,
                    offload=self._heavy,
                )
            except BaseException as exc:
                done.set_exception(exc)
                return
            _settle(done, outcome)

        _cancel_with(done, self._executor.submit(claim))
        return done

    def _after_upload(self, federation_id: str, number: int, done: Future[None]) -> None:
        with self._kicked_lock:  # from here on, a new upload's kick queues another run
            self._kicked.discard((federation_id, number))
        try:
            outcome = aggregation_job.run(
                self._ctx, federation_id, number, trigger=Trigger.UPLOAD, offload=self._heavy
            )
        except Exception as exc:
            # the timer retries; the lease makes a half-done attempt recoverable
            log.exception("aggregation of round %d of %s failed", number, federation_id)
            _count_failure(exc)
            outcome = None
        if outcome is None or outcome.pending is None:
            done.set_result(None)
        else:  # the heavy thread logged a failure: the kick's caller only waits
            outcome.pending.add_done_callback(
                lambda finished: done.cancel() if finished.cancelled() else done.set_result(None)
            )

    def tick(self) -> int:
        done = aggregation_job.run_due_work(self._ctx, offload=self._heavy)
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_SECONDS:
            self._last_sweep = time.monotonic()
            swept = idempotency.sweep_expired(self._ctx)
            if swept:
                log.info("deleted %d expired Idempotency-Key records", swept)
            stale = ease_process.sweep_scratch(
                self._ctx.scratch_dir,
                older_than_seconds=self._ctx.ease_solve_timeout_seconds + SCRATCH_MARGIN_SECONDS,
            )
            if stale:
                log.info("deleted %d EASE solve directories left by a crashed process", stale)
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


def _settle(done: Future[aggregation_job.Outcome], outcome: aggregation_job.Outcome) -> None:
    """Complete ``done`` with ``outcome``, or with its pending rest once that ends."""
    pending = outcome.pending
    if pending is None:
        done.set_result(outcome)
        return

    def copy(finished: Future[aggregation_job.Outcome]) -> None:
        if finished.cancelled():  # the process stopped before it ran
            done.cancel()
            return
        error = finished.exception()
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(finished.result())

    pending.add_done_callback(copy)


def _cancel_with(done: Future[Any], first: Future[None]) -> None:
    """``done`` is cancelled if ``first`` (the claim's step) never runs (shutdown)."""
    first.add_done_callback(lambda ran: done.cancel() if ran.cancelled() else None)


def _count_failure(exc: Exception) -> None:
    database = isinstance(exc, DatabaseError)
    telemetry.BACKGROUND_ERRORS.labels(str(database).lower()).inc()
