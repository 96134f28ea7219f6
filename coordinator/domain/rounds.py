"""Rounds as participants see them: the current round (long-poll), history, uploads.

The state machine itself is :mod:`coordinator.domain.lifecycle`; aggregation is
:mod:`coordinator.domain.aggregation_job`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.domain import audit, lifecycle, sampling
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.cohort_cache import drawn_reader
from coordinator.domain.context import Context
from coordinator.domain.ease_strategy import check_gram
from coordinator.domain.errors import (
    CoordinatorError,
    FederationCompleted,
    FutureRound,
    IdempotencyKeyReused,
    InvalidUpdate,
    NotFound,
    NotSampled,
    RoundClosed,
    UpdateConflict,
)
from coordinator.domain.evaluation import BaseEvaluation, check_limits, record_validation
from coordinator.domain.federations import FederationSettings, federation_settings_by_id
from coordinator.domain.open_rounds import OpenRoundFacts
from coordinator.domain.round_notifier import mark_of
from coordinator.domain.secure_rounds import SecureAggregationRound
from coordinator.store.blobs import sha256_hex
from coordinator.store.database_blobs import store_in
from coordinator.store.db import read_connection
from coordinator.store.models import Federation, Round, Update, new_id, utc_now
from coordinator.store.repository import (
    EvaluationRepository,
    FederationMark,
    RoundCohortRepository,
    RoundCompleteness,
    RoundRepository,
    RoundView,
    UpdateRepository,
    current_view,
)
from participant_sdk.wire import Update as DecodedUpdate
from participant_sdk.wire import WireError, decode_update

__all__ = [
    "Receipt",
    "cohort_memberships",
    "current_round",
    "get_round",
    "list_rounds",
    "submit_update",
    "upload_arriving",
    "wait_for_round",
]

log = logging.getLogger("fedrec.rounds")


@dataclass
class Receipt:
    update: Update
    created: bool
    # a new update's transaction judged its round: False when the round certainly waits
    # for more uploads (then nobody need kick the aggregation job for it)
    may_complete: bool = True
    # what it was judged from, read under the round's lock before the COMMIT (the kick of
    # a small round starts from these instead of reading them again)
    facts: RoundCompleteness | None = None
    # its round was aggregated in the transaction that committed this update (the group
    # commit's finish: RoundWorker): nobody need kick the job for it
    aggregated: bool = False


@dataclass(frozen=True)
class _Upload:
    """One upload being accepted: who sent which bytes to which round, and what came
    with them. Built once per :func:`submit_update`; every step of the upload reads it."""

    principal: Principal
    participant_id: str
    federation_id: str
    number: int
    body: bytes
    digest: str  # sha256 of ``body``: the blob's content address, the receipt's
    idempotency_key: str | None
    evaluation: BaseEvaluation | None


def _load_round(session: Session, federation: Federation, number: int) -> Round:
    row = RoundRepository(session).get(federation.id, number)
    if row is None:
        raise NotFound(
            f"round {number} does not exist; the current round is {federation.current_round}",
            slug="round-not-found",
            current_round=federation.current_round,
        )
    return row


def get_round(ctx: Context, principal: Principal, federation_id: str, number: int) -> Round:
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        return _load_round(session, federation, number)


def list_rounds(ctx: Context, principal: Principal, federation_id: str) -> list[Round]:
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return list(RoundRepository(session).list(federation_id))


def current_round(
    ctx: Context, principal: Principal, federation_id: str
) -> tuple[FederationMark, RoundView]:
    """The federation's current round (the last one once the federation completed): one
    Core statement on a Core connection, no ORM session or objects (every poll, and every
    ``…/rounds/current/weights``, reads this)."""
    with read_connection(ctx.read_sessions) as connection:
        found = current_view(connection, federation_id)
        if found is None:
            raise NotFound(
                f"federation {federation_id} does not exist", slug="federation-not-found"
            )
        principal.check_federation(federation_id)  # after the 404, as load_federation
        federation, row = found
        if row is None:
            # no round numbered current_round: the last one, read in the same transaction
            with Session(bind=connection) as session:
                history = RoundRepository(session).list(federation.id)
                if not history:
                    raise NotFound("federation has no rounds", slug="round-not-found")
                row = RoundView.of(history[-1])
        return federation, row


async def wait_for_round(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    *,
    after: int | None,
    wait_seconds: float,
    until_in_cohort: bool = False,
) -> tuple[FederationMark, RoundView]:
    """Long-poll: return once the current round number exceeds ``after``, the federation
    completed, it is evaluating and the caller has not reported the final version on
    validation yet (a participant that has waits for the completion), or
    ``wait_seconds`` pass. Between checks it waits on the process's round notifier, which
    reads the database (so it sees rounds opened by any coordinator process) once per
    interval for every waiting poll; a participant token holds at most the notifier's cap
    of polls.

    ``until_in_cohort`` (a participant with ``after``): also wait through the rounds it
    was not drawn into. Such a poll reads nothing per round it sits out: the notifier's
    mark says which round is current, and the process reads each round's cohort once for
    all its polls (:class:`~coordinator.domain.cohort_cache.CohortCache`)."""
    deadline = time.monotonic() + wait_seconds
    # the admin is trusted and not capped
    holder = principal.participant_id
    skip_unsampled = until_in_cohort and holder is not None and after is not None
    woken: tuple[Any, ...] | None = None  # the new mark the notifier last woke it with
    with ctx.notifier.hold(holder) if wait_seconds and holder else nullcontext():
        while True:
            federation, row = await _current_or_unmoved(ctx, principal, federation_id, after, woken)
            changed = (
                after is None
                or row.number > after
                or federation.state
                in (lifecycle.FederationState.COMPLETED, lifecycle.FederationState.FAILED)
                or (
                    federation.state == lifecycle.FederationState.EVALUATING
                    and not await anyio.to_thread.run_sync(
                        _reported_final, ctx, principal, federation
                    )
                )
            )
            if changed and skip_unsampled and federation.state == lifecycle.FederationState.ACTIVE:
                assert holder is not None
                changed = await _drawn_into(ctx, holder, federation.id, row.number)
            remaining = deadline - time.monotonic()
            if changed or remaining <= 0:
                return federation, row
            seen = read = mark_of(federation, row)
            while True:
                # sitting rounds out: the notifier wakes it only for a round it is drawn
                # into (or when training stops), not at every round change
                latest = await ctx.notifier.wait(
                    federation.id,
                    seen,
                    remaining,
                    member=holder if skip_unsampled else None,
                    after=after,
                )
                remaining = deadline - time.monotonic()
                if remaining <= 0 and latest == read:
                    # ran out with the round as it was read (as of the notifier's last
                    # read): that read is the answer, with no second one (a renewal
                    # costs one read, not two)
                    return federation, row
                if (
                    not skip_unsampled
                    or latest is None
                    or latest == seen
                    or remaining <= 0
                    or not await _passes_by(ctx, holder, federation.id, after, latest)
                ):
                    woken = latest if latest is not None and latest != seen else None
                    break  # read the round again: it may be this poll's answer
                seen = latest


async def _current_or_unmoved(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    after: int | None,
    woken: tuple[Any, ...] | None = None,
) -> tuple[FederationMark, RoundView]:
    """The current round: for a long-poll, this process's last read of it while the
    notifier's mark says nothing moved since (a renewal reads nothing), or the read another
    long-poll started under that same mark (the polls a new round wakes share one read);
    else a read. ``woken``: the new mark the notifier just woke this poll with, which
    stands for the notifier's when it no longer tracks the federation (this poll was the
    last to wait): a round this process opened and handed over is answered from the
    snapshot taken under it, without a read."""
    snapshots = ctx.round_snapshots
    mark = ctx.notifier.mark(federation_id) if after is not None else None
    if mark is None and after is not None:
        mark = woken
    if mark is not None:
        snapshot = snapshots.unmoved(federation_id, mark)
        if snapshot is None:
            future, lead = snapshots.flight(federation_id, mark)
            if not lead:
                # shielded: this poll's own cancellation must not cancel the leader's read
                snapshot = await asyncio.shield(future)
            else:
                try:
                    return await _read_current(ctx, principal, federation_id)
                finally:
                    snapshots.land(federation_id, future, snapshots.unmoved(federation_id, mark))
        if snapshot is not None:
            principal.check_federation(federation_id)  # what load_federation checks
            return snapshot.federation, snapshot.round
    return await _read_current(ctx, principal, federation_id)


async def _read_current(
    ctx: Context, principal: Principal, federation_id: str
) -> tuple[FederationMark, RoundView]:
    federation, row = await anyio.to_thread.run_sync(current_round, ctx, principal, federation_id)
    ctx.round_snapshots.put(federation, row, mark_of(federation, row))
    return federation, row


async def _passes_by(
    ctx: Context, participant_id: str | None, federation_id: str, after: int | None, mark: Any
) -> bool:
    """Whether a round mark (current round, state, latest version) is one that a poll
    waiting for a round its participant is in can sit out without reading the database."""
    number, state, _latest, _pending = mark
    if participant_id is None or after is None or state != lifecycle.FederationState.ACTIVE:
        return False
    if number is None or number <= after:
        return True  # not a new round yet (a version was recorded, say)
    return not await _drawn_into(ctx, participant_id, federation_id, number)


async def _drawn_into(ctx: Context, participant_id: str, federation_id: str, number: int) -> bool:
    """Whether the participant takes part in round ``number``, from the process's cache
    of drawn cohorts (one read per round for every poll). A round whose draw is pending
    counts as not (yet) drawn into, as ``in_cohort`` says."""
    drawn, members = await drawn_reader(ctx.cohort_cache, ctx.read_sessions)(federation_id, number)
    return drawn and (members is None or participant_id in members)


async def cohort_membership(
    ctx: Context, principal: Principal, row: Round | RoundView
) -> bool | None:
    """:func:`cohort_memberships` of one round, from the process's cohort cache (a drawn
    cohort never changes: one read per round for every poll, instead of one per poll)."""
    participant_id = principal.participant_id
    if participant_id is None:
        return None
    if not row.sampled:
        return True
    return await _drawn_into(ctx, participant_id, row.federation_id, row.number)


def cohort_memberships(
    ctx: Context, principal: Principal, rows: Sequence[Round]
) -> list[bool | None]:
    """For a participant: whether it is in each round's cohort (always, for an unsampled
    round); for the admin, who takes part in none, None for each."""
    if principal.participant_id is None:
        return [None] * len(rows)
    with ctx.read_sessions() as session:
        return list(sampling.memberships(session, principal.participant_id, rows))


def _reported_final(ctx: Context, principal: Principal, federation: FederationMark) -> bool:
    """Whether this participant reported the final version on validation (never the admin)."""
    if principal.participant_id is None:
        return False
    with ctx.read_sessions() as session:
        reporters = EvaluationRepository(session).reporters(
            federation.id, federation.latest_version, "validation"
        )
    return principal.participant_id in reporters


def _check_existing(existing: Update, digest: str) -> Receipt:
    if existing.sha256 == digest:
        return Receipt(existing, created=False)
    raise UpdateConflict(
        f"a different update (sha256 {existing.sha256}) was already accepted for round "
        f"{existing.round_number}; each participant uploads once per round",
        round=existing.round_number,
        accepted_sha256=existing.sha256,
    )


def _replay_by_key(prior: Update, digest: str, number: int, key: str) -> Receipt:
    """An upload retried with its ``Idempotency-Key``: the original receipt, or 422."""
    if prior.sha256 == digest and prior.round_number == number:
        return Receipt(prior, created=False)
    raise IdempotencyKeyReused(
        f"Idempotency-Key {key!r} was used for a different upload (round "
        f"{prior.round_number}, sha256 {prior.sha256}); use a new key for new bytes",
        round=prior.round_number,
        accepted_sha256=prior.sha256,
    )


def _refuse_closed(target: Any, federation_id: str, number: int) -> NoReturn:
    """Why round ``number`` takes no upload (``target``: RoundRepository.upload_target)."""
    if target.round_id is None:
        if target.state != lifecycle.FederationState.ACTIVE:
            raise FederationCompleted(
                f"federation {federation_id} is {target.state}; no round is open",
                current_round=target.current_round,
            )
        if target.current_round is not None and number > target.current_round:
            raise FutureRound(
                f"round {number} is not open yet; the current round is {target.current_round}",
                round=number,
                current_round=target.current_round,
            )
        raise NotFound(f"round {number} does not exist", slug="round-not-found")
    raise RoundClosed(
        f"round {number} is {target.round_state}; the current round is {target.current_round}",
        round=number,
        current_round=target.current_round,
    )


def _upload_target(session: Session, principal: Principal, federation_id: str, number: int) -> Any:
    """The federation's and the round's columns an upload checks (one statement), or
    404/403 as :func:`load_federation` answers."""
    target = RoundRepository(session).upload_target(federation_id, number)
    if target is None:
        raise NotFound(f"federation {federation_id} does not exist", slug="federation-not-found")
    principal.check_federation(federation_id)
    return target


def _earlier_receipt(session: Session, upload: _Upload, round_id: str | None) -> Receipt | None:
    """The receipt of an upload this one repeats (a retry whose response was lost): the
    one first sent with the same ``Idempotency-Key``, else the participant's update of
    the round; None if it repeats none."""
    key = upload.idempotency_key
    candidates = UpdateRepository(session).repeated_by(upload.participant_id, round_id, key)
    if key is not None:
        keyed = [u for u in candidates if u.idempotency_key == key]
        if keyed:
            prior = min(keyed, key=lambda u: u.received_at)
            return _replay_by_key(prior, upload.digest, upload.number, key)
    for existing in candidates:
        if existing.round_id == round_id:
            return _check_existing(existing, upload.digest)
    return None


def upload_arriving(ctx: Context) -> AbstractContextManager[None]:
    """Announce an upload on its way (its body arriving, then its checks) around the
    call that will run :func:`submit_update`: the upload group commit's next leader waits
    briefly for it, so uploads that arrive together share one COMMIT (one fsync) instead
    of the second waiting for the first's (``store.group_commit``)."""
    commits = ctx.upload_commits
    assert commits is not None  # built by Context
    return commits.expecting()


def submit_update(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    number: int,
    body: bytes,
    *,
    idempotency_key: str | None = None,
    evaluation: BaseEvaluation | None = None,
) -> Receipt:
    """Validate and durably store a participant's update for round ``number``.

    ``evaluation``: the participant's validation figures of the round's base version,
    recorded in the upload's transaction (as ``POST …/models/{base}/evaluations`` would);
    a replayed upload records nothing new.

    Nothing is stored unless every check passes; the one write transaction re-checks
    the round under its row lock, so an accepted update is always aggregated. The same
    bytes again return the original receipt (also after the round closed: the first
    response may have been lost); different bytes get a 409, or a 422 when they reuse
    the ``Idempotency-Key`` of another upload.

    Every upload pays for this path, so it reads and writes with few Core statements
    (one read, then in the shared write transaction: the round's count, the blob, the
    row, the report, the audit event); the receipt of a concurrent repeat is looked up
    only when the insert meets the unique (round, participant) constraint. Once one
    upload found an unsampled round open, the next ones to it skip the read
    (:mod:`coordinator.domain.open_rounds`); any of them that is not a first upload to
    a round still open is answered by the full path below.
    """
    participant_id = principal.require_participant()
    upload = _Upload(
        principal,
        participant_id,
        federation_id,
        number,
        body,
        sha256_hex(body),
        idempotency_key,
        evaluation,
    )
    known = ctx.open_rounds.get(federation_id, number)
    if known is not None:
        receipt = _submit_to_open_round(ctx, upload, known)
        if receipt is not None:
            return receipt
    # read-only (no lock): answer retries and closed rounds before decoding anything
    with ctx.read_sessions() as session:
        target = RoundRepository(session).upload_check(
            federation_id, number, participant_id, idempotency_key
        )
        if target is None:
            raise NotFound(
                f"federation {federation_id} does not exist", slug="federation-not-found"
            )
        principal.check_federation(federation_id)
        # the same statement said whether a repeat is possible: a first upload (every
        # upload but a retry) skips the lookup of the receipt it would repeat
        if target.repeats:
            earlier = _earlier_receipt(session, upload, target.round_id)
            if earlier is not None:
                return earlier
        if target.round_id is None or target.round_state != lifecycle.RoundState.OPEN:
            _refuse_closed(target, federation_id, number)
        if target.sampled and not RoundCohortRepository(session).contains(
            target.round_id, participant_id
        ):
            # the cohort is written once, when the round opens: no need to re-check below
            raise NotSampled(
                f"this participant was not drawn into round {number}'s sample "
                "(rounds.sampling): nothing to upload; wait for the next round "
                "(GET .../rounds/current?after={number}&wait=60)",
                round=number,
                current_round=target.current_round,
            )
        settings = federation_settings_by_id(ctx, session, federation_id)
    facts = OpenRoundFacts(target.round_id, target.base_version)
    if not target.sampled:  # a sampled round's uploads check their cohort: always read
        ctx.open_rounds.put(federation_id, number, facts)
    return _store(ctx, upload, facts, _checked_update(settings, upload, facts), read_phase=True)


class _TakeFullPath(Exception):
    """An upload that skipped the read phase found, in its write transaction, the round
    not open (``not_open``) or an update it may repeat: its unit rolled back."""

    def __init__(self, *, not_open: bool) -> None:
        super().__init__("take the full upload path")
        self.not_open = not_open


def _submit_to_open_round(ctx: Context, upload: _Upload, known: OpenRoundFacts) -> Receipt | None:
    """:func:`submit_update` of a first upload to a round this process found open, without
    the read phase; None when the full path must answer (a refusal of any kind, which
    it makes in its own order; a retry; the round no longer open). Nothing was stored."""
    settings = ctx.settings_cache.get(upload.federation_id)
    if not isinstance(settings, FederationSettings):
        return None
    try:
        upload.principal.check_federation(upload.federation_id)
        update = _checked_update(settings, upload, known)
    except CoordinatorError:
        return None
    try:
        return _store(ctx, upload, known, update, read_phase=False)
    except _TakeFullPath as exc:
        if exc.not_open:
            ctx.open_rounds.forget(upload.federation_id, upload.number)
        return None


def _checked_update(
    settings: FederationSettings, upload: _Upload, round_facts: OpenRoundFacts
) -> DecodedUpdate:
    """The upload decoded and checked against the federation and the round's base, or
    the refusal (422, or 409 for a secure aggregation federation)."""
    federation_id, number, evaluation = upload.federation_id, upload.number, upload.evaluation
    base_version = round_facts.base_version
    if evaluation is not None:
        check_limits(settings.limits, evaluation.metrics, evaluation.num_users)
    if settings.privacy.secure_aggregation is not None:
        raise SecureAggregationRound(
            f"federation {federation_id} uses secure aggregation: the coordinator takes no "
            "plaintext update; send masked inputs through …/rounds/{number}/secagg "
            "(the SDK does this by itself)",
            round=number,
        )

    try:
        update = decode_update(
            upload.body,
            settings.update_tensors,
            max_norm=settings.privacy.max_update_norm,
            max_num_examples=settings.limits.max_num_examples,
            encoding=settings.transport.encoding,
        )
        if settings.model.kind == "ease":
            check_gram(update, settings.model.num_items)
    except WireError as exc:
        raise InvalidUpdate(exc.message, field=exc.field) from exc
    except ValueError as exc:  # check_gram: names the tensor
        raise InvalidUpdate(str(exc), field="ease_gram") from exc
    if update.round != number:
        raise InvalidUpdate(
            f"metadata 'round' is {update.round} but the upload is for round {number}",
            field="round",
        )
    if update.base_version != base_version:
        raise InvalidUpdate(
            f"metadata 'base_version' is {update.base_version}; round {number} is based on "
            f"version {base_version}: download it and train from it",
            field="base_version",
            expected=base_version,
        )
    return update


def _store(
    ctx: Context,
    upload: _Upload,
    round_facts: OpenRoundFacts,
    update: DecodedUpdate,
    *,
    read_phase: bool,
) -> Receipt:
    """Store a checked update in the shared write transaction. ``read_phase``: whether
    the upload's read phase ran (else its count also says whether it may repeat an
    update, and raises :class:`_TakeFullPath` for that or for a round no longer open)."""
    participant_id, federation_id, number = (
        upload.participant_id,
        upload.federation_id,
        upload.number,
    )
    body, digest, evaluation = upload.body, upload.digest, upload.evaluation
    round_id, base_version = round_facts.round_id, round_facts.base_version
    # durable before (a file: its own fsyncs) or with (rows of the same transaction: its
    # COMMIT) the row that points at it
    inline = len(body) <= ctx.inline_blob_max_bytes
    if not inline:
        ctx.blobs.put(body, digest)
    row = Update(
        id=new_id(),
        round_id=round_id,
        participant_id=participant_id,
        round_number=number,
        sha256=digest,
        size=len(body),
        num_examples=update.num_examples,
        kind=update.kind,
        idempotency_key=upload.idempotency_key,
        received_at=utc_now(),
    )

    def store_row(session: Session) -> Receipt:
        # counting the update re-checks that the round is open and takes its row lock
        # (the batch took it first on PostgreSQL: RoundRepository.lock_in_order), which
        # orders this insert before or after the round's claim; the same statement returns
        # the round's completeness as counted with this update (judged below)
        rounds = RoundRepository(session)
        if not read_phase:
            facts, repeats = rounds.count_update_unless_repeat(
                round_id,
                participant_id,
                upload.idempotency_key,
                if_state=lifecycle.RoundState.OPEN,
            )
            if facts is None or repeats:
                # rolled back (this unit's SAVEPOINT, or its transaction if alone)
                raise _TakeFullPath(not_open=facts is None)
        else:
            facts = rounds.count_update_judged(round_id, if_state=lifecycle.RoundState.OPEN)
        if facts is None:
            earlier = _earlier_receipt(session, upload, round_id)
            if earlier is not None:
                return earlier  # a repeat that committed while the round was open
            _refuse_closed(
                _upload_target(session, upload.principal, federation_id, number),
                federation_id,
                number,
            )
        if inline:
            store_in(session, body, digest)
        # a repeat of this upload that committed meanwhile: IntegrityError, answered below
        UpdateRepository(session).insert(row)
        if evaluation is not None:
            record_validation(session, federation_id, base_version, participant_id, evaluation)
        audit.record(
            session,
            actor=audit.actor_of(upload.principal),
            action="upload",
            federation_id=federation_id,
            subject=f"round {number}",
            detail={"sha256": digest, "size": len(body)},
        )
        # judged under the round's row lock, with every update counted that committed
        # before this one: the upload that completes the round sees it complete (a unit
        # later in this batch sees this one's count too). A round that certainly waits
        # needs no kick (an incomplete round's kick stopped at this same check). The
        # facts were read by the count above, in this transaction: the writes since (the
        # blob, the row, the report, the audit event) change none of them (the kick
        # of a small round starts from them)
        waits = lifecycle.certainly_waits(facts, utc_now())
        # the aggregation job reads these bytes from memory, and may fold them before the
        # COMMIT (the group commit's finish, in this transaction); content-addressed, so
        # bytes kept for an update whose transaction then failed name no stored row
        ctx.recent_updates.put(digest, body)
        return Receipt(row, created=True, may_complete=not waits, facts=facts)

    try:
        # uploads arriving together share one transaction and one commit (fsync); this
        # returns once the transaction holding this row committed
        commits = ctx.upload_commits
        assert commits is not None  # built by Context
        receipt = commits.run((federation_id, number), store_row)
    except IntegrityError:
        # a concurrent request of the same participant won the unique (round, participant)
        with ctx.read_sessions() as session:
            earlier = _earlier_receipt(session, upload, round_id)
        if earlier is None:
            raise
        return earlier
    return receipt
