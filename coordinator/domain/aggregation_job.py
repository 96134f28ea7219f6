"""The aggregation job: the one path by which a round aggregates, fails or is extended.

Three triggers run it: an accepted upload (the worker's kick), the timer (deadlines,
expired leases) and the admin's ``POST …/aggregate`` (which waits for it). Each run is
two transactions around work done outside any transaction:

1. **claim** — lock the federation and the round, ask :func:`lifecycle.next_step` what
   the round needs, apply a fail/extend at once, or claim the round (compare-and-set
   with a lease) and read what aggregation needs: the updates' digests, the base
   version, the server state;
2. aggregate: stream the updates through the strategy, encode and fsync the new model
   (and server state) as blobs — the database lock is not held meanwhile;
3. **commit** — close the round if this process still holds the lease, record the new
   version, and open the next round or complete the federation, in one transaction.

**A small plaintext round** (at most ``ONE_TRANSACTION_MAX_VALUES`` values to fold),
kicked by the upload that completed it, runs 1-3 in **one** write transaction: the same
decision, claim, fold and record, with one BEGIN/COMMIT and one load of the federation
instead of two; the fold (a few ms) holds the write lock. Nothing is visible before its
COMMIT: a crash inside it leaves the round ``open`` and complete, which the timer (of
any process) claims and aggregates as above.

A crash between 1 and 3 leaves the round ``aggregating`` with a lease that expires;
the timer of any process then runs the job again and gets identical bytes (same
updates in the same order, float64 sums) — except under DP, whose noise is drawn from
a CSPRNG per aggregation: there the first committed result is the round's only one.

**Heavy rounds** (model kind ``ease``: a dense solve, minutes at 20 000 items) run steps
2–3 elsewhere when the caller passes an :class:`Offload` (the worker's heavy threads):
a free slot is reserved before the claim (none free: the round is still failed or
extended when due, but not claimed: it stays open for the timer or another process),
the claim is taken here, and the outcome carries the pending rest. While it runs, a
:class:`_LeaseKeeper` renews the lease every third of its length, so no process takes
over a solve that is alive, and one that died (its renewals stop) is taken over once
its lease expires. A large solve itself runs in a child process
(:mod:`coordinator.domain.ease_process`), stopped when the lease is lost or the
process stops.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from coordinator.domain import (
    audit,
    backoff,
    deployment,
    ease_process,
    lifecycle,
    sampling,
    secure_rounds,
)
from coordinator.domain.access import load_federation
from coordinator.domain.aggregation import WeightedMean
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.ease_strategy import EaseStrategy
from coordinator.domain.errors import (
    NonFiniteAggregate,
    NotFound,
    PrivacyBudgetExhausted,
    RoundNotOpen,
)
from coordinator.domain.federations import (
    FederationSettings,
    federation_settings,
    federation_settings_by_id,
)
from coordinator.domain.model_versions import (
    MODEL_METADATA,
    VersionLink,
    record_version,
    serve_new_version,
    served_bytes,
)
from coordinator.domain.privacy import (
    Accounting,
    DPAggregation,
    accounting_of,
    clip_norm_of,
    count_stddev,
    draw_count_noise,
    next_clip_norm,
    update_noise_multiplier,
)
from coordinator.domain.round_notifier import Moved
from coordinator.domain.specs import DeployPolicy, RoundPolicy
from coordinator.domain.stored_updates import load_stored_update
from coordinator.domain.strategy import Strategy, build_strategy
from coordinator.domain.transport import encode_version
from coordinator.domain.validation_curve import smoothed
from coordinator.store.blobs import sha256_hex
from coordinator.store.database_blobs import store_in
from coordinator.store.models import Federation, ModelVersion, Round, utc_now
from coordinator.store.repository import (
    FederationMark,
    FederationRepository,
    ModelVersionRepository,
    RoundCompleteness,
    RoundRepository,
    RoundView,
    UpdateRepository,
)
from coordinator.store.round_change import RoundChange, write_round_change
from participant_sdk.wire import decode_weights, encode_weights, representable

__all__ = [
    "Claim",
    "Offload",
    "Outcome",
    "aggregate_before_commit",
    "claim_in",
    "claim_round",
    "complete_claim",
    "run",
    "run_due_work",
    "run_if_small",
    "settle_final_evaluations",
]

log = logging.getLogger("fedrec.rounds")

# Test-only (documented in docs/architecture.md): the fault tests pause a real
# coordinator between aggregating and committing, to kill it exactly there.
TEST_PAUSE_ENV = "FEDREC_TEST_AGGREGATION_PAUSE_SECONDS"

# An upload's kick claims, aggregates and commits a round whose updates hold at most this
# many values in all (K x the update's parameters) in one write transaction
# (_run_at_once): folding 4 M values takes ~10 ms here, the longest the database's write
# lock is held for it. Larger rounds claim, fold outside any transaction, then commit.
ONE_TRANSACTION_MAX_VALUES = 4_000_000


@dataclass(frozen=True)
class Claim:
    """A round this process claimed, with everything aggregation reads."""

    federation_id: str
    number: int
    round_id: str
    owner: str
    settings: FederationSettings
    update_digests: tuple[str, ...]  # in aggregation order (participant id)
    base_version: int
    base_sha256: str
    base_chain_hash: str
    base_state_sha256: str | None
    base_step_scale: float
    # a collapsed base: the best validated version whose weights the new version restores
    restore_version: int | None = None
    restore_sha256: str | None = None
    # secure aggregation: the survivors' sum (float64, per tensor) and their lineage digests
    secure_sum: Mapping[str, npt.NDArray[np.float64]] | None = None
    survivors: tuple[str, ...] = ()

    # a sampled DP round divides its noised sum by the expected cohort, not the count
    dp_denominator: float | None = None
    # the federation's DP accounting and rounds counted before this one
    accounting: Accounting | None = None
    completed_rounds: int = 0
    # adaptive clipping: the C this round clips to, handed on by its base version
    clip_norm: float | None = None
    # not claimed yet: the one transaction that decided records the round by a
    # compare-and-set that claims it as of this time (lifecycle.claim_and_close)
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class _Committed:
    """A recorded version, and whether the transaction opened the next round (``moved``:
    an unsampled one, with the federation's new round mark, as a read would answer them)."""

    version: ModelVersion
    next_round_opened: bool
    moved: Moved | None = None


@dataclass(frozen=True)
class Outcome:
    """What one run did: the step taken, and the new version if it aggregated; or, for a
    heavy round handed to an :class:`Offload`, the rest of the run still ``pending``."""

    step: lifecycle.Step
    version: ModelVersion | None = None
    pending: Future[Outcome] | None = None
    # the round this run opened and its federation's mark, for this process's long-polls
    # (RoundNotifier.poke): None when it opened none, or one a read must see (sampled)
    moved: Moved | None = None

    @property
    def changed(self) -> bool:
        """The round changed state (aggregated, failed or extended)."""
        return (
            self.pending is None
            and self.step is not lifecycle.Step.WAIT
            and (self.step is not lifecycle.Step.AGGREGATE or self.version is not None)
        )


class Offload(Protocol):
    """Where heavy rounds are aggregated: a bounded set of threads of their own."""

    def reserve(self) -> bool:
        """Take a free slot without waiting; False if every slot is busy."""
        ...

    def release(self) -> None:
        """Give back a slot reserved and not submitted to."""
        ...

    def submit(self, job: Callable[[], Outcome]) -> Future[Outcome]:
        """Run ``job`` on a reserved slot, which is freed when it ends (also if this
        raises)."""
        ...

    def stopping(self) -> bool:
        """The process is stopping: a running solve should stop too."""
        ...


def run(
    ctx: Context,
    federation_id: str,
    number: int,
    *,
    trigger: lifecycle.Trigger,
    principal: Principal | None = None,
    offload: Offload | None = None,
) -> Outcome:
    """Take the round's next step. For the admin trigger the reasons it cannot
    aggregate are raised (404, 409) and a returned outcome always has a version (or is
    ``pending``: its future has the version or raises). With ``offload``, a heavy round
    (``ease``) is aggregated there: see the module doc."""
    outcome: Outcome | None = None
    try:
        outcome = _run(
            ctx, federation_id, number, trigger=trigger, principal=principal, offload=offload
        )
        return outcome
    finally:
        if outcome is None or outcome.changed:  # a change (or an error after one)
            # this process's long-polls learn of it now
            ctx.notifier.poke(None if outcome is None else outcome.moved)


def _run(
    ctx: Context,
    federation_id: str,
    number: int,
    *,
    trigger: lifecycle.Trigger,
    principal: Principal | None = None,
    offload: Offload | None = None,
) -> Outcome:
    facts: RoundCompleteness | None = None
    if trigger is not lifecycle.Trigger.ADMIN:
        waits, facts = _judge(ctx, federation_id, number, trigger=trigger)
        if waits:
            return Outcome(lifecycle.Step.WAIT)
    if trigger is lifecycle.Trigger.UPLOAD and _at_once(ctx, federation_id, facts):
        return _run_at_once(ctx, federation_id, number, trigger=trigger)
    heavy = offload if offload is not None and _is_heavy(ctx, federation_id) else None
    # a heavy round is claimed for aggregation only with a free slot; without one it is
    # still failed or extended, and otherwise left open, unclaimed, for the timer (of
    # this or another process)
    reserved = heavy is not None and heavy.reserve()
    try:
        step, claimed = claim_round(
            ctx,
            federation_id,
            number,
            trigger=trigger,
            principal=principal,
            may_claim=heavy is None or reserved,
        )
    except BaseException:
        if heavy is not None and reserved:
            heavy.release()
        raise
    if claimed is None:
        if heavy is not None and reserved:
            heavy.release()
        if step is lifecycle.Step.FAIL:  # the next round opened on the same base, unless
            ctx.observer.round_failed()  # that was the federation's max_failed_rounds-th
            _observe_next_round(ctx, federation_id, number)
        return Outcome(step if step is not lifecycle.Step.AGGREGATE else lifecycle.Step.WAIT)
    if heavy is None:
        return _finish(ctx, claimed, step, trigger)
    assert reserved
    keeper = _LeaseKeeper(ctx, claimed, stopping=heavy.stopping)

    def finish() -> Outcome:
        outcome: Outcome | None = None
        try:
            outcome = _finish(ctx, claimed, step, trigger, keeper=keeper)
            return outcome
        finally:
            keeper.stop()
            if outcome is None or outcome.changed:
                ctx.notifier.poke(None if outcome is None else outcome.moved)

    def never_ran(pending: Future[Outcome]) -> None:
        if pending.cancelled():  # the process stopped before the job started
            keeper.stop()
            _release(ctx, claimed)

    keeper.start()  # from the claim: a queued job's lease must not run out either
    try:
        pending = heavy.submit(finish)
    except BaseException:
        keeper.stop()
        _release(ctx, claimed)
        raise
    pending.add_done_callback(never_ran)
    return Outcome(step, pending=pending)


def _at_once(ctx: Context, federation_id: str, facts: RoundCompleteness | None) -> bool:
    """Whether an upload's kick aggregates the round inside the transaction that claims
    it (:func:`_run_at_once`): a plaintext round, averaged (not solved), open, whose
    updates fold in a few milliseconds. Larger rounds keep the claim and the commit
    apart, so the database lock is not held while they fold."""
    settings = ctx.settings_cache.get(federation_id)
    if (
        facts is None
        or facts.state != lifecycle.RoundState.OPEN
        or not isinstance(settings, FederationSettings)
        or settings.model.kind == "ease"
        or settings.privacy.secure_aggregation is not None
        or os.environ.get(TEST_PAUSE_ENV)  # the hook pauses between a claim and its commit
    ):
        return False
    values = sum(math.prod(spec.shape) for spec in settings.update_tensors.values())
    return facts.update_count * values <= ONE_TRANSACTION_MAX_VALUES


def _run_at_once(
    ctx: Context, federation_id: str, number: int, *, trigger: lifecycle.Trigger
) -> Outcome:
    """Claim, aggregate and commit a small round in one write transaction (synced once).

    The claim's decision and compare-and-set, the fold and the version's record are the
    two-step path's own (:func:`claim_in`, :func:`_aggregate`, :func:`_record`); what
    goes is the claim's separate transaction and the commit's second load of the
    federation. Exactly once and durable as before: nothing of the claim is visible
    until the one COMMIT, and a crash (or an error) before it leaves the round open and
    complete, for the timer of any process to aggregate.
    """
    started = time.perf_counter()
    refused: _NotFinite | None = None
    committed: _Committed | None = None
    weights = b""
    with ctx.sessions.begin() as session:
        step, claimed, federation = claim_in(
            ctx, session, federation_id, number, trigger=trigger, now=utc_now(), defer_claim=True
        )
        if claimed is not None:
            assert federation is not None
            try:
                result = _aggregate(ctx, claimed)
            except _NotFinite as exc:
                refused = exc
                round_row = RoundRepository(session).get(federation_id, number)
                assert round_row is not None
                lifecycle.fail_aggregation(
                    session,
                    federation,
                    round_row,
                    owner=claimed.owner,
                    reason=f"aggregation refused: {exc.reason}",
                    now=utc_now(),
                    claimed_at=claimed.claimed_at,
                )
            else:
                weights = result.weights
                committed = _record(ctx, session, federation, claimed, result)
                if committed is None:  # not with the claim in this very transaction
                    session.rollback()
    if claimed is None:
        if step is lifecycle.Step.FAIL:
            ctx.observer.round_failed()
            _observe_next_round(ctx, federation_id, number)
        return Outcome(step if step is not lifecycle.Step.AGGREGATE else lifecycle.Step.WAIT)
    ctx.recent_updates.forget(claimed.update_digests)  # aggregated or failed: not read again
    if refused is not None:
        ctx.observer.round_failed()  # fail_aggregation logged why
        _observe_next_round(ctx, federation_id, number)
        return Outcome(lifecycle.Step.FAIL)
    if committed is None:
        return Outcome(lifecycle.Step.WAIT)
    _served_after_commit(ctx, claimed, committed, weights)
    ctx.observer.round_closed(time.perf_counter() - started)
    if committed.next_round_opened:
        ctx.observer.round_opened()
    return Outcome(step, committed.version, moved=committed.moved)


def run_if_small(
    ctx: Context, federation_id: str, number: int, facts: RoundCompleteness | None = None
) -> Outcome | None:
    """An upload's kick run on the upload's own thread, after its COMMIT: a round that
    certainly waits is left (a read), a small plaintext one is aggregated here in one
    transaction (:func:`_run_at_once`); None for any other round, which the caller hands to
    the worker's thread (:func:`run`, whose first read this repeats).

    ``facts``: the round's completeness as the upload's own transaction read it, under the
    round's lock, after its update: for a plaintext round they replace the read (the claim
    decides again under the write lock, so facts a later upload or another process moved
    on change nothing but that decision)."""
    outcome: Outcome | None = None
    try:
        if facts is not None and _plaintext(ctx, federation_id):
            waits = lifecycle.certainly_waits(facts, utc_now())
        else:
            waits, facts = _judge(ctx, federation_id, number, trigger=lifecycle.Trigger.UPLOAD)
        if waits:
            outcome = Outcome(lifecycle.Step.WAIT)
        elif _at_once(ctx, federation_id, facts):
            outcome = _run_at_once(ctx, federation_id, number, trigger=lifecycle.Trigger.UPLOAD)
        return outcome
    finally:
        if outcome is not None and outcome.changed:
            ctx.notifier.poke(outcome.moved)  # this process's long-polls learn of it now


class _Declined(Exception):  # noqa: N818 - rolls back the SAVEPOINT, never raised out
    """The round is not aggregated before the upload's COMMIT: left to the kick after it."""


def aggregate_before_commit(
    ctx: Context, session: Session, federation_id: str, number: int, facts: RoundCompleteness
) -> Callable[[], Outcome] | None:
    """The round job of a small plaintext round, inside the write transaction of the
    upload that completed it (the upload group commit's finish, before its COMMIT): the
    claim, the fold and the version's record of :func:`_run_at_once`, in a SAVEPOINT of
    that transaction, so the uploads and the new version share one COMMIT (one fsync, no
    second transaction). Returns what to run once that COMMIT succeeded (the served
    version's cache, the long-polls' poke; its Outcome), or None when nothing was done
    (the SAVEPOINT rolled back: the round is not this path's, was claimed elsewhere, or
    folds to a non-finite model; any error is logged): then the caller kicks the round
    after the COMMIT as before (:func:`run_if_small`), which decides it again.

    SQLite only: there one writer lock serialises every transaction. On PostgreSQL the
    upload batch holds its federation ``FOR KEY SHARE`` and the claim needs it ``FOR
    UPDATE``: two processes' batches of one round could deadlock on that upgrade.

    Exactly once and durable as :func:`_run_at_once`: the claim's compare-and-set and the
    version are in the transaction that acknowledges the uploads; a crash before its
    COMMIT loses the uploads' acknowledgements and the aggregation together."""
    if (
        session.get_bind().dialect.name != "sqlite"
        or not _plaintext(ctx, federation_id)
        or lifecycle.certainly_waits(facts, utc_now())
        or not _at_once(ctx, federation_id, facts)
    ):
        return None
    started = time.perf_counter()
    try:
        with session.begin_nested():
            step, claimed, federation = claim_in(
                ctx,
                session,
                federation_id,
                number,
                trigger=lifecycle.Trigger.UPLOAD,
                now=utc_now(),
                defer_claim=True,
            )
            if claimed is None or federation is None:
                raise _Declined
            try:
                result = _aggregate(ctx, claimed)
            except _NotFinite as exc:  # the kick after the COMMIT fails the round
                raise _Declined from exc
            committed = _record(ctx, session, federation, claimed, result)
            if committed is None:
                raise _Declined
    except _Declined:
        return None
    except Exception:
        log.exception(
            "aggregation of round %d of %s before its upload's commit failed; "
            "the round is aggregated after it",
            number,
            federation_id,
        )
        return None

    def after_commit() -> Outcome:
        ctx.recent_updates.forget(claimed.update_digests)
        _served_after_commit(ctx, claimed, committed, result.weights)
        ctx.observer.round_closed(time.perf_counter() - started)
        if committed.next_round_opened:
            ctx.observer.round_opened()
        # this process's long-polls learn of it now, from the round it opened: no read
        ctx.notifier.poke(committed.moved)
        return Outcome(step, committed.version, moved=committed.moved)

    return after_commit


def _plaintext(ctx: Context, federation_id: str) -> bool:
    """The federation's settings are parsed (cached) and it is not secure aggregation."""
    settings = ctx.settings_cache.get(federation_id)
    return isinstance(settings, FederationSettings) and settings.privacy.secure_aggregation is None


def _is_heavy(ctx: Context, federation_id: str) -> bool:
    """The federation's rounds are solved (``ease``), not averaged."""
    settings = ctx.settings_cache.get(federation_id)
    if not isinstance(settings, FederationSettings):
        with ctx.read_sessions() as session:
            federation = FederationRepository(session).get(federation_id)
            if federation is None:
                return False
            settings = federation_settings(ctx, federation)
    return settings.model.kind == "ease"


class _LeaseKeeper:
    """Renews a claimed round's lease every third of its length until stopped; tells
    the solve to stop (:meth:`should_stop`) once the lease is lost or the process stops."""

    def __init__(self, ctx: Context, claimed: Claim, *, stopping: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._claimed = claimed
        self._stopping = stopping
        self._done = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"fedrec-lease-{claimed.number}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def should_stop(self) -> bool:
        return self.lost.is_set() or self._stopping()

    def _run(self) -> None:
        ctx, claimed = self._ctx, self._claimed
        interval = ctx.lease_seconds / 3
        # bounded: past twice the solve's timeout the job is overdue; the lease then runs out
        for _ in range(int(2 * ctx.ease_solve_timeout_seconds / interval) + 10):
            if self._done.wait(interval):
                return
            try:
                assert ctx.unsynced_sessions is not None
                # a renewal lost in a power cut is harmless: the process died with it
                with ctx.unsynced_sessions.begin() as session:
                    kept = lifecycle.renew_lease(
                        session,
                        claimed.round_id,
                        owner=claimed.owner,
                        now=utc_now(),
                        lease=ctx.lease_seconds,
                    )
            except Exception:  # the next renewal tries again; the lease has 2/3 left
                log.exception("could not renew the lease of round %d", claimed.number)
                continue
            if not kept:
                log.warning(
                    "federation %s round %d: lost the aggregation lease (taken over); "
                    "stopping this process's attempt",
                    claimed.federation_id,
                    claimed.number,
                )
                self.lost.set()
                return


def _release(ctx: Context, claimed: Claim) -> None:
    try:
        with ctx.sessions.begin() as session:
            lifecycle.release(session, claimed.round_id, owner=claimed.owner)
    except Exception:  # pragma: no cover - the lease covers us
        log.exception("could not release round %d of %s", claimed.number, claimed.federation_id)


def _finish(
    ctx: Context,
    claimed: Claim,
    step: lifecycle.Step,
    trigger: lifecycle.Trigger,
    *,
    keeper: _LeaseKeeper | None = None,
) -> Outcome:
    """Steps 2 and 3 of a claimed round, with the outcome's bookkeeping."""
    number, federation_id = claimed.number, claimed.federation_id
    started = time.perf_counter()
    try:
        committed = _complete_claim(
            ctx, claimed, should_stop=keeper.should_stop if keeper is not None else _never
        )
    except NonFiniteAggregate:
        ctx.recent_updates.forget(claimed.update_digests)  # the round failed
        ctx.observer.round_failed()
        _observe_next_round(ctx, federation_id, number)
        if trigger is lifecycle.Trigger.ADMIN:
            raise
        return Outcome(lifecycle.Step.FAIL)
    if committed is None:
        if trigger is lifecycle.Trigger.ADMIN:
            raise RoundNotOpen(f"round {number} was taken over by another aggregator", round=number)
        return Outcome(step)
    ctx.recent_updates.forget(claimed.update_digests)  # aggregated: not read again
    ctx.observer.round_closed(time.perf_counter() - started)
    if committed.next_round_opened:  # unless training stopped
        ctx.observer.round_opened()
    return Outcome(step, committed.version, moved=committed.moved)


def _observe_next_round(ctx: Context, federation_id: str, number: int) -> None:
    with ctx.read_sessions() as session:
        if RoundRepository(session).get(federation_id, number + 1) is not None:
            ctx.observer.round_opened()


def _judge(
    ctx: Context,
    federation_id: str,
    number: int,
    *,
    trigger: lifecycle.Trigger = lifecycle.Trigger.UPLOAD,
) -> tuple[bool, RoundCompleteness | None]:
    """Whether the round certainly waits, decided without the write lock; and the
    plaintext round's facts it was judged from (None: not read).

    Every accepted upload kicks the job; all but the last find the round incomplete,
    and taking the write lock just to learn that queued them behind (and in front of)
    the uploads. Safe: the upload that completes a round committed before its own
    kick reads, so that kick sees the round complete and goes on to claim it. A
    plaintext round is judged from one row (:func:`lifecycle.certainly_waits`); a
    secure-aggregation round by its protocol's phase (:func:`lifecycle.next_step`).

    The timer asks too (every open round, every tick): for it a plaintext round whose
    sample is not drawn yet does not certainly wait (the claim draws it once enough
    participants are active), and a secure-aggregation round never does (the claim
    closes a phase past its deadline), so those go on to the claim as before.
    """
    settings = ctx.settings_cache.get(federation_id)
    timer = trigger is lifecycle.Trigger.TIMER
    with ctx.read_sessions() as session:
        if timer and not isinstance(settings, FederationSettings):
            try:  # parsed once per process (the upload's kick finds them cached)
                settings = federation_settings_by_id(ctx, session, federation_id)
            except NotFound:
                return True, None
        plaintext = isinstance(settings, FederationSettings) and (
            settings.privacy.secure_aggregation is None
        )
        if timer and not plaintext:
            return False, None
        if plaintext:
            facts = RoundRepository(session).completeness(federation_id, number)
            if facts is None:
                return True, None
            if timer and facts.sampled and facts.population is None:
                return False, facts  # the timer's claim draws the cohort when it is due
            return lifecycle.certainly_waits(facts, utc_now()), facts
        federation = FederationRepository(session).get(federation_id)
        round_row = RoundRepository(session).get(federation_id, number)
        if federation is None or round_row is None:
            return True, None
        federation_settings(ctx, federation)  # parsed once: the next kick takes the row
        step = lifecycle.next_step(
            session, federation, round_row, trigger=lifecycle.Trigger.UPLOAD, now=utc_now()
        )
        return step is lifecycle.Step.WAIT, None


def _refuse_past_budget(session: Session, federation: Federation, number: int) -> None:
    """409 for the admin asking for the round that the privacy budget did not open."""
    accounting = accounting_of(session, federation)
    if accounting is None or accounting.round_allowed(federation.completed_rounds):
        return
    assert accounting.dp.max_epsilon is not None
    raise PrivacyBudgetExhausted(
        f"round {number} was not opened: one more round would spend epsilon "
        f"{accounting.epsilon(federation.completed_rounds + 1):.4g} > privacy.dp.max_epsilon "
        f"{accounting.dp.max_epsilon:g} (delta {accounting.dp.delta:g}); the federation "
        f"stopped training at version {federation.latest_version}",
        round=number,
        max_epsilon=accounting.dp.max_epsilon,
        epsilon_spent=accounting.epsilon(federation.completed_rounds),
    )


def claim_round(
    ctx: Context,
    federation_id: str,
    number: int,
    *,
    trigger: lifecycle.Trigger,
    principal: Principal | None = None,
    may_claim: bool = True,
) -> tuple[lifecycle.Step, Claim | None]:
    """Transaction 1: decide, then fail/extend the round or claim it for aggregation
    (unless not ``may_claim``: no heavy slot is free, the round waits)."""
    # commits without waiting for its fsync (one fewer on the round's critical path): a
    # claim lost in a power cut is harmless, the round is open again and the timer claims
    # it anew; and the round's commit, synced, flushes the log up to and past the claim
    assert ctx.unsynced_sessions is not None  # built by Context
    with ctx.unsynced_sessions.begin() as session:
        step, claimed, _ = claim_in(
            ctx,
            session,
            federation_id,
            number,
            trigger=trigger,
            principal=principal,
            may_claim=may_claim,
            now=utc_now(),
        )
        return step, claimed


def claim_in(
    ctx: Context,
    session: Session,
    federation_id: str,
    number: int,
    *,
    trigger: lifecycle.Trigger,
    now: datetime,
    principal: Principal | None = None,
    may_claim: bool = True,
    defer_claim: bool = False,
) -> tuple[lifecycle.Step, Claim | None, Federation | None]:
    """The claim's work inside the caller's write transaction: lock, decide, apply a
    fail/extend or claim the round and read what aggregation needs; also the locked
    federation (None when it does not exist). ``defer_claim``: the caller records (or
    fails) the round in this same transaction, by a compare-and-set that claims it too
    (the returned claim's ``claimed_at``), so no claim is written here."""
    admin = trigger is lifecycle.Trigger.ADMIN
    if principal is not None:
        load_federation(session, principal, federation_id)  # 404/403 before any lock
    # lock order everywhere: federation, then round; one statement, which also reads the
    # round's base version
    rounds = RoundRepository(session)
    loaded = rounds.lock_for_claim(federation_id, number)
    base_row: ModelVersion | None = None
    if loaded is not None:
        federation: Federation | None = loaded.federation
        round_row: Round | None = loaded.round
        base_row = loaded.base
    else:  # no such round (yet): lock the federation alone, and look again under its lock
        federation = FederationRepository(session).get(federation_id, for_update=True)
        round_row = rounds.get(federation_id, number, for_update=True) if federation else None
    if federation is None or round_row is None:
        if admin and federation is not None:
            _refuse_past_budget(session, federation, number)
        if admin:
            current = federation.current_round if federation else None
            raise NotFound(
                f"round {number} does not exist; the current round is {current}",
                slug="round-not-found",
                current_round=current,
            )
        return lifecycle.Step.WAIT, None, federation
    if sampling.draw_pending(round_row):
        policy = RoundPolicy.model_validate(federation.round_policy)
        sampling.draw_if_due(session, round_row, policy, now)
    # a secure-aggregation phase past its deadline closes first (with who answered)
    secure_rounds.close_due_phase(session, federation, round_row, now)
    settings = federation_settings(ctx, federation)
    # a plaintext round's digests, read once: the decision counts them, the claim folds
    # them (the locks held since keep them as read); with them, the cohort's active
    # members, the decision's expected count (counted by next_step when there is no digest)
    digests: tuple[str, ...] | None = None
    cohort_active: int | None = None
    if settings.privacy.secure_aggregation is None:
        read, cohort_active = UpdateRepository(session).digests_and_cohort(
            round_row.id, federation_id=federation_id, sampled=round_row.sampled
        )
        digests = tuple(read)
    step = lifecycle.next_step(
        session,
        federation,
        round_row,
        trigger=trigger,
        now=now,
        contributing=None if digests is None else len(digests),
        expected=cohort_active,
    )
    if step is lifecycle.Step.EXTEND:
        lifecycle.extend_deadline(federation, round_row, now)
        return step, None, federation
    if step is lifecycle.Step.FAIL:
        reason = secure_rounds.failure_reason(session, round_row)
        lifecycle.fail(session, federation, round_row, now, reason=reason)
        return step, None, federation
    if step is lifecycle.Step.WAIT:
        return step, None, federation
    if not may_claim:
        if admin:
            raise RoundNotOpen(
                f"round {number} waits for a free heavy aggregation slot: this process "
                "is solving other ease models (FEDREC_HEAVY_WORKERS); the timer "
                "aggregates it when one frees, or retry",
                round=number,
            )
        return lifecycle.Step.WAIT, None, federation
    # deferred: the caller records the round in this transaction, where the close is the
    # claim's compare-and-set too (lifecycle.claim_and_close); under the locks held since
    # the decision, the round is as claimable then as now
    if not defer_claim and not lifecycle.claim(
        session, round_row, owner=ctx.instance_id, now=now, lease=ctx.lease_seconds
    ):
        if admin:
            raise RoundNotOpen(f"round {number} is already being aggregated", round=number)
        return lifecycle.Step.WAIT, None, federation
    if digests is None:
        digests = tuple(UpdateRepository(session).digests_from_active(round_row.id))
    versions = ModelVersionRepository(session)
    base = base_row if base_row is not None else versions.get(federation_id, round_row.base_version)
    assert base is not None
    restore = None
    step_scale = base.step_scale
    dp_policy = settings.privacy.dp
    summed = (
        secure_rounds.secure_sum(session, round_row, settings.update_tensors)
        if settings.privacy.secure_aggregation is not None
        else None
    )
    # ease: a weak lambda is a candidate the deploy policy skips, not a collapse
    if settings.model.kind != "ease":
        deploy = DeployPolicy.model_validate(federation.deploy_policy)
        scores = deployment.validation_scores(session, federation_id, deploy.metric)
        target = backoff.restore_target(scores, base.version)
        restore = versions.get(federation_id, target) if target is not None else None
        if settings.strategy.plateau_decay is not None:
            step_scale = backoff.plateau_scale(
                base.step_scale,
                smoothed(scores, deploy.window),
                factor=settings.strategy.plateau_decay,
                patience=settings.strategy.plateau_patience,
                min_delta=settings.rounds.min_delta,
            )
    return (
        step,
        Claim(
            federation_id=federation_id,
            number=number,
            round_id=round_row.id,
            owner=ctx.instance_id,
            settings=settings,
            update_digests=digests,
            base_version=base.version,
            base_sha256=base.sha256,
            base_chain_hash=base.chain_hash,
            base_state_sha256=base.server_state_sha256,
            base_step_scale=step_scale,
            restore_version=restore.version if restore else None,
            restore_sha256=restore.sha256 if restore else None,
            secure_sum=summed[0] if summed else None,
            survivors=summed[1] if summed else (),
            dp_denominator=sampling.expected_cohort_size(settings.rounds.sampling, round_row),
            accounting=accounting_of(session, federation),
            completed_rounds=federation.completed_rounds,
            clip_norm=clip_norm_of(dp_policy, base.privacy_spent)
            if dp_policy is not None and dp_policy.adaptive_clipping is not None
            else None,
            claimed_at=now if defer_claim else None,
        ),
        federation,
    )


def complete_claim(ctx: Context, claimed: Claim) -> ModelVersion | None:
    """Aggregate a claimed round and commit it (transaction 2); None if the lease was lost."""
    committed = _complete_claim(ctx, claimed)
    return committed.version if committed is not None else None


def _never() -> bool:
    return False


def _complete_claim(
    ctx: Context, claimed: Claim, *, should_stop: Callable[[], bool] = _never
) -> _Committed | None:
    try:
        return _aggregate_and_commit(ctx, claimed, should_stop=should_stop)
    except BaseException:
        # give the round back at once rather than waiting for the lease to expire
        _release(ctx, claimed)
        raise


def _aggregate_and_commit(
    ctx: Context, claimed: Claim, *, should_stop: Callable[[], bool] = _never
) -> _Committed | None:
    """Steps 2 and 3 of the two-step path: fold outside any transaction, then commit."""
    try:
        result = _aggregate(ctx, claimed, should_stop=should_stop)
    except _NotFinite as exc:
        _refuse(ctx, claimed, exc.reason)
    _test_pause()
    with ctx.sessions.begin() as session:
        federation = FederationRepository(session).get(claimed.federation_id, for_update=True)
        assert federation is not None
        committed = _record(ctx, session, federation, claimed, result)
        if committed is None:
            session.rollback()
            settings = claimed.settings
            if (
                settings.privacy.dp is not None
                and settings.model.kind != "ease"
                and not result.inline[0]
            ):
                _discard_losing_draw(ctx, claimed, result.digests[0])
            return None
    _served_after_commit(ctx, claimed, committed, result.weights)
    return committed


@dataclass
class _Aggregate:
    """A folded round, encoded: what its commit records."""

    weights: bytes
    blobs: list[bytes]  # the weights, and the server state if any
    digests: list[str]
    inline: list[bool]  # stored as rows of the commit's transaction (else files, stored)
    encodings: Mapping[str, object] | None
    contributors: tuple[str, ...]
    scale: float
    clip_norms: tuple[float, float] | None


class _NotFinite(Exception):  # noqa: N818 - a signal to the callers, never raised out
    """The aggregate is not finite (or not representable): the round must fail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _aggregate(
    ctx: Context, claimed: Claim, *, should_stop: Callable[[], bool] = _never
) -> _Aggregate:
    """Fold the claimed round's updates, encode the new version and store its large
    blobs (files: written and fsynced); no transaction. Raises :class:`_NotFinite`."""
    settings = claimed.settings
    dp_policy = settings.privacy.dp
    adaptive = dp_policy.adaptive_clipping if dp_policy is not None else None
    # adaptive clipping: m, what the unclipped count is a fraction of, and the updates'
    # share of the noise (z_delta) once the count's sigma_b is paid for
    cohort = claimed.dp_denominator or float(max(len(claimed.update_digests), 1))
    count_std = count_stddev(dp_policy, cohort) if dp_policy and adaptive else 0.0
    strategy: Strategy | EaseStrategy
    if settings.model.kind == "ease":
        # an exact Gram sum and a closed-form solve instead of a gradient step
        target = ease_process.SolveTarget(
            federation_id=claimed.federation_id,
            round_number=claimed.number,
            scratch_dir=ctx.scratch_dir,
            timeout_seconds=ctx.ease_solve_timeout_seconds,
            should_stop=should_stop,
        )
        strategy = EaseStrategy(
            settings.model.ease_lambdas,
            settings.model.num_items,
            top_k=settings.model.ease_top_k,
            solver=ease_process.solver(
                target,
                num_items=settings.model.num_items,
                subprocess_min_items=ctx.ease_subprocess_min_items,
            ),
        )
    else:
        strategy = build_strategy(
            settings.strategy,
            settings.update_tensors,
            # a CSPRNG seed drawn here, never stored: a taken-over aggregation draws
            # other noise, and only the first committed result counts
            dp=DPAggregation.fresh(
                dp_policy,
                denominator=claimed.dp_denominator,
                clip_norm=claimed.clip_norm,
                noise_multiplier=update_noise_multiplier(dp_policy.noise_multiplier, count_std)
                if adaptive
                else None,
            )
            if dp_policy
            else None,
        )
    scale = claimed.base_step_scale
    # adaptive clipping: (C used, C handed on); a restored round reads no update: C stays
    clip_norms = (claimed.clip_norm, claimed.clip_norm) if claimed.clip_norm else None
    new_tensors: Mapping[str, npt.NDArray[np.generic]]
    new_state: Mapping[str, npt.NDArray[np.generic]]
    if claimed.restore_sha256 is not None:
        # the base collapsed on validation: carry the best version's weights, step shorter;
        # the round's updates are not read
        new_tensors = decode_weights(ctx.blobs.get(claimed.restore_sha256))
        new_state = {}  # moments built on the diverged path are dropped
        contributors: tuple[str, ...] = ()  # no update went into these weights
        scale /= 2
        log.warning(
            "federation %s round %d: version %d collapsed on validation; restoring version "
            "%d and halving the server step to %g",
            claimed.federation_id,
            claimed.number,
            claimed.base_version,
            claimed.restore_version,
            scale,
        )
    else:
        if claimed.secure_sum is not None:
            # secure aggregation: the participants clipped, the coordinator holds only the sum
            assert isinstance(strategy, Strategy)
            assert isinstance(strategy.aggregator, WeightedMean)
            strategy.aggregator.add_sum(claimed.secure_sum, len(claimed.survivors))
        # stream: one update in memory at a time, float64 sums, fixed order; the bytes
        # were validated at upload, so they are read as views, not decoded again
        # (from memory when this process accepted them: domain/recent_updates.py)
        for data in ctx.recent_updates.read_each(ctx.blobs, claimed.update_digests):
            update = load_stored_update(
                data, settings.update_tensors, encoding=settings.transport.encoding
            )
            strategy.add(update)
            del update, data
        if adaptive is not None and claimed.clip_norm is not None:
            # DP runs the mean aggregator, which counted the updates it did not clip
            # from the norms it clipped with
            assert isinstance(strategy, Strategy)
            assert isinstance(strategy.aggregator, WeightedMean)
            unclipped = strategy.aggregator.unclipped
            handed_on, fraction = next_clip_norm(
                claimed.clip_norm, unclipped, cohort, draw_count_noise(count_std), adaptive
            )
            clip_norms = (claimed.clip_norm, handed_on)
            log.info(
                "federation %s round %d: adaptive clipping C %.6g -> %.6g (noised "
                "unclipped fraction %.3f)",
                claimed.federation_id,
                claimed.number,
                claimed.clip_norm,
                handed_on,
                fraction,
            )
        # the base is the version the last round handed to the cache of served versions
        base_tensors = decode_weights(served_bytes(ctx, claimed.base_sha256))
        state = (
            decode_weights(ctx.blobs.get(claimed.base_state_sha256))
            if claimed.base_state_sha256
            else {}
        )
        contributors = claimed.update_digests or claimed.survivors
        new_tensors, new_state = _result(strategy, base_tensors, state, scale)
        # a version must be finite, and fit the federation's encoding (float16: ±65504)
        while not (
            backoff.all_finite(new_tensors)
            and representable(new_tensors, settings.transport.encoding)
        ):
            if scale / 2 < backoff.MIN_STEP_SCALE:
                raise _NotFinite("the aggregate is not finite even at the smallest step")
            scale /= 2
            log.warning(
                "federation %s round %d: the server step overflowed; halving it to %g",
                claimed.federation_id,
                claimed.number,
                scale,
            )
            new_tensors, new_state = _result(strategy, base_tensors, state, scale)
        del base_tensors, state
        if not backoff.all_finite(new_state):
            # e.g. a second moment that overflowed float32: it would poison every later round
            raise _NotFinite("the server optimizer's state is not finite")
    if claimed.accounting is not None:
        # a PLD can take seconds: compute (and cache) the epsilon this version records and
        # the next round's budget check here, not under the federation's row lock
        claimed.accounting.epsilon(claimed.completed_rounds + 1)
        claimed.accounting.epsilon(claimed.completed_rounds + 2)
    # encode before the transaction, and store large blobs (files: write and fsync) there
    # too: the database lock is held only briefly. Small ones become rows of the
    # transaction, durable with its one COMMIT.
    weights = encode_weights(new_tensors, MODEL_METADATA)
    encodings = encode_version(ctx, new_tensors, settings.transport, MODEL_METADATA)
    del new_tensors
    blobs = [weights]
    if new_state:
        blobs.append(encode_weights(new_state, {"kind": "server-state"}))
    digests = [sha256_hex(data) for data in blobs]
    inline = [len(data) <= ctx.inline_blob_max_bytes for data in blobs]
    for data, blob_digest, in_rows in zip(blobs, digests, inline, strict=True):
        if not in_rows:
            ctx.blobs.put(data, blob_digest)
    return _Aggregate(
        weights=weights,
        blobs=blobs,
        digests=digests,
        inline=inline,
        encodings=encodings,
        contributors=contributors,
        scale=scale,
        clip_norms=clip_norms,
    )


def _record(
    ctx: Context, session: Session, federation: Federation, claimed: Claim, result: _Aggregate
) -> _Committed | None:
    """Step 3 in the caller's transaction (which holds the federation's row lock): close
    the round if this process still holds its lease, record the version, open the next
    round or stop. None (the caller rolls back) if the lease was lost."""
    settings = claimed.settings
    now = utc_now()
    digest = result.digests[0]
    # no autoflush: the round's close and the blob's rows are statements that do not
    # read the federation, whose changes are written once, with the version
    with session.no_autoflush:
        if claimed.claimed_at is not None:  # claimed and closed by one compare-and-set
            closed = lifecycle.claim_and_close(
                session,
                federation,
                claimed.round_id,
                owner=claimed.owner,
                claimed_at=claimed.claimed_at,
                result_version=federation.latest_version + 1,
                now=now,
            )
        else:
            closed = lifecycle.close(
                session,
                federation,
                claimed.round_id,
                owner=claimed.owner,
                result_version=federation.latest_version + 1,
                now=now,
            )
        if not closed:
            return None
        for data, blob_digest, in_rows in zip(
            result.blobs, result.digests, result.inline, strict=True
        ):
            if in_rows:
                store_in(session, data, blob_digest)
    version = record_version(
        session,
        federation,
        parent=VersionLink(claimed.base_version, claimed.base_chain_hash),
        round_number=claimed.number,
        sha256=digest,
        size=len(result.weights),
        contributors=result.contributors,
        server_state_sha256=result.digests[1] if len(result.digests) > 1 else None,
        step_scale=result.scale,
        restored_from=claimed.restore_version,
        encodings=result.encodings,
        clip_norms=result.clip_norms,
        now=now,
        signer=ctx.signer,
    )
    audit.record(
        session,
        actor="coordinator",
        action="aggregate",
        federation_id=claimed.federation_id,
        subject=f"round {claimed.number}",
        detail={
            "version": version.version,
            "sha256": digest,
            "updates": len(result.contributors),
            "step_scale": result.scale,
        },
        now=now,
    )
    if settings.privacy.secure_aggregation is not None:
        secure_rounds.forget_sum(session, claimed.round_id)
    change = lifecycle.advance(session, federation, closed_round=claimed.number, now=now)
    opened = federation.current_round == claimed.number + 1
    moved: Moved | None = None
    if change is not None:
        # the federation's counters and the next round's row by two prebuilt statements,
        # not the unit of work's flush at COMMIT (which writes a stop's or a draw's change)
        moved = _moved(federation.state, change)
        write_round_change(session, federation, change)
    return _Committed(version, opened, moved)


def _moved(state: str, change: RoundChange) -> Moved | None:
    """The federation's round mark and its new round after ``change`` as
    ``rounds.current_round`` reads them once committed (every column: the defaults of an
    unsampled round just opened), for the long-polls this process wakes without a read."""
    opened = change.opened
    if opened is None:
        return None
    federation = FederationMark(
        id=change.federation_id,
        current_round=change.current_round,
        state=state,
        latest_version=change.latest_version,
    )
    row = RoundView(
        id=opened.id,
        federation_id=opened.federation_id,
        number=opened.number,
        state=lifecycle.RoundState.OPEN.value,
        base_version=opened.base_version,
        result_version=None,
        update_count=0,
        opened_at=opened.opened_at,
        deadline_at=opened.deadline_at,
        closed_at=None,
        sampled=False,
        cohort_size=None,
        population=None,
    )
    return federation, row


def _served_after_commit(
    ctx: Context, claimed: Claim, committed: _Committed, weights: bytes
) -> None:
    # downloads of the new version (and the next round's aggregation) read it from here
    serve_new_version(ctx, committed.version, weights)
    log.info(
        "federation %s round %d aggregated %d updates into version %d",
        claimed.federation_id,
        claimed.number,
        len(committed.version.contributors),
        committed.version.version,
    )


def _result(
    strategy: Strategy | EaseStrategy,
    base: Mapping[str, npt.NDArray[np.generic]],
    state: Mapping[str, npt.NDArray[np.generic]],
    scale: float,
) -> tuple[Mapping[str, npt.NDArray[np.generic]], Mapping[str, npt.NDArray[np.generic]]]:
    # an overflow becomes inf or NaN here, silently: the back-off and the finite-model
    # guard below look at the result, not at numpy's warnings
    with np.errstate(over="ignore", invalid="ignore"):
        return strategy.result(base, state, step_scale=scale)


def _refuse(ctx: Context, claimed: Claim, reason: str) -> NoReturn:
    """The finite-model guard: fail the round instead of recording NaN or Inf, which every
    later round would inherit. The next round opens on the same base (or the federation
    fails at ``max_failed_rounds``); raises :class:`NonFiniteAggregate` either way."""
    with ctx.sessions.begin() as session:
        federation = FederationRepository(session).get(claimed.federation_id, for_update=True)
        round_row = RoundRepository(session).get(claimed.federation_id, claimed.number)
        assert federation is not None
        assert round_row is not None
        failed = lifecycle.fail_aggregation(
            session,
            federation,
            round_row,
            owner=claimed.owner,
            reason=f"aggregation refused: {reason}",
            now=utc_now(),
        )
    raise NonFiniteAggregate(
        f"round {claimed.number} failed: {reason}; its updates were not applied and "
        + ("the next round opens on the same base version" if failed else "its lease was lost"),
        round=claimed.number,
    )


def _discard_losing_draw(ctx: Context, claimed: Claim, digest: str) -> None:
    """Remove the weights of a DP aggregation that lost its lease. They carry other noise
    than the recorded version of the round, and two noised copies of one round's sum
    average to less noise than the accountant charged for."""
    with ctx.read_sessions() as session:
        recorded = ModelVersionRepository(session).get_by_round(
            claimed.federation_id, claimed.number
        )
    if recorded is None or recorded.sha256 != digest:
        ctx.blobs.remove(digest)
        log.warning(
            "federation %s round %d: another process recorded the round first; removed "
            "this process's differently noised weights",
            claimed.federation_id,
            claimed.number,
        )


def _test_pause() -> None:
    seconds = float(os.environ.get(TEST_PAUSE_ENV) or 0)
    if seconds > 0:
        log.warning("test hook: pausing %.1fs before committing (%s)", seconds, TEST_PAUSE_ENV)
        time.sleep(seconds)


def settle_final_evaluations(ctx: Context) -> int:
    """Complete the ``evaluating`` federations whose final evaluation is in or timed out
    (also after a revocation left only participants that already reported)."""
    with ctx.read_sessions() as session:
        waiting = list(
            FederationRepository(session).ids_in_state(lifecycle.FederationState.EVALUATING)
        )
    done = 0
    for federation_id in waiting:
        try:
            with ctx.sessions.begin() as session:
                federation = FederationRepository(session).get(federation_id, for_update=True)
                if federation is not None:
                    done += lifecycle.settle_final_evaluation(session, federation, utc_now())
        except Exception:
            log.exception("timer work on the final evaluation of %s failed", federation_id)
    return done


def run_due_work(ctx: Context, *, offload: Offload | None = None) -> int:
    """One timer tick: run the job for every open round and every expired lease, and
    complete the federations whose final evaluation is settled.

    Safe in every process at once: the claim is a compare-and-set, and completing a
    federation happens under its row lock. Returns how many rounds and federations
    changed state (aggregated, failed, extended or completed; a heavy round handed to
    ``offload`` counts when it ends, not here).
    """
    now = utc_now()
    with ctx.read_sessions() as session:
        rounds = RoundRepository(session)
        candidates = [(r.federation_id, r.number) for r in rounds.due(now)]
        candidates += [(r.federation_id, r.number) for r in rounds.open_rounds()]
    done = 0
    for federation_id, number in dict.fromkeys(candidates):
        try:
            outcome = run(
                ctx, federation_id, number, trigger=lifecycle.Trigger.TIMER, offload=offload
            )
            done += outcome.changed
        except Exception:
            log.exception("timer work on round %d of %s failed", number, federation_id)
    return done + settle_final_evaluations(ctx)
