"""The round state machine: uploads, exactly-once aggregation, deadlines.

States: ``open -> aggregating -> closed`` (or ``open -> failed`` below quorum).
``open -> aggregating`` is a compare-and-set in the database with a lease, so
exactly one process aggregates a round; a crashed aggregator's round is taken
over when its lease expires. The new model version, the round's close and the
next round's opening commit in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.domain import deployment
from coordinator.domain.aggregation import FedAvgAccumulator
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    FederationCompleted,
    FutureRound,
    InvalidUpdate,
    NotFound,
    NoUpdates,
    RoundClosed,
    RoundNotOpen,
    UpdateConflict,
)
from coordinator.domain.federations import MODEL_METADATA, load_federation, open_round
from coordinator.domain.lineage import chain_hash
from coordinator.domain.privacy import DPAggregation, round_allowed
from coordinator.domain.specs import ModelSpec, PrivacyPolicy, RoundPolicy, StrategySpec
from coordinator.store.blobs import sha256_hex
from coordinator.store.models import Federation, ModelVersion, Round, Update, utc_now
from coordinator.store.repository import (
    FederationRepository,
    ModelVersionRepository,
    ParticipantRepository,
    RoundRepository,
    UpdateRepository,
)
from participant_sdk.wire import WireError, decode_update, decode_weights, encode_weights

__all__ = [
    "Receipt",
    "aggregate_round",
    "current_round",
    "get_round",
    "list_rounds",
    "run_due_work",
    "submit_update",
    "wait_for_round",
]

log = logging.getLogger("fedrec.rounds")


@dataclass
class Receipt:
    update: Update
    created: bool


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
) -> tuple[Federation, Round]:
    """The federation's current round (the last one once the federation completed)."""
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        rounds = RoundRepository(session)
        number = federation.current_round
        row = rounds.get(federation.id, number) if number is not None else None
        if row is None:
            history = rounds.list(federation.id)
            if not history:
                raise NotFound("federation has no rounds", slug="round-not-found")
            row = history[-1]
        return federation, row


async def wait_for_round(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    *,
    after: int | None,
    wait_seconds: float,
    poll_seconds: float = 0.2,
) -> tuple[Federation, Round]:
    """Long-poll: return once the current round number exceeds ``after``, the federation
    is no longer active, or ``wait_seconds`` pass. Polls the database, so it sees rounds
    opened by any coordinator process."""
    deadline = time.monotonic() + wait_seconds
    while True:
        federation, row = await anyio.to_thread.run_sync(
            current_round, ctx, principal, federation_id
        )
        changed = after is None or row.number > after or federation.state != "active"
        if changed or time.monotonic() >= deadline:
            return federation, row
        await anyio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))


def _check_existing(existing: Update, digest: str) -> Receipt:
    if existing.sha256 == digest:
        return Receipt(existing, created=False)
    raise UpdateConflict(
        f"a different update (sha256 {existing.sha256}) was already accepted for round "
        f"{existing.round_number}; each participant uploads once per round",
        round=existing.round_number,
        accepted_sha256=existing.sha256,
    )


def _check_round_open(federation: Federation, round_row: Round | None, number: int) -> Round:
    if round_row is None:
        if federation.state != "active":
            raise FederationCompleted(
                f"federation {federation.id} is {federation.state}; no round is open",
                current_round=federation.current_round,
            )
        if federation.current_round is not None and number > federation.current_round:
            raise FutureRound(
                f"round {number} is not open yet; the current round is {federation.current_round}",
                round=number,
                current_round=federation.current_round,
            )
        raise NotFound(f"round {number} does not exist", slug="round-not-found")
    if round_row.state != "open":
        raise RoundClosed(
            f"round {number} is {round_row.state}; the current round is {federation.current_round}",
            round=number,
            current_round=federation.current_round,
        )
    return round_row


def submit_update(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    number: int,
    body: bytes,
    *,
    idempotency_key: str | None = None,
) -> Receipt:
    """Validate and durably store a participant's update for round ``number``.

    Nothing is stored unless every check passes. The same bytes again return the
    original receipt (also after the round closed: the first response may have been
    lost); different bytes get a 409.
    """
    participant_id = principal.require_participant()
    digest = sha256_hex(body)
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        round_row = RoundRepository(session).get(federation_id, number)
        if round_row is not None:
            existing = UpdateRepository(session).get(round_row.id, participant_id)
            if existing is not None:
                return _check_existing(existing, digest)
        round_row = _check_round_open(federation, round_row, number)
        spec = ModelSpec.model_validate(federation.model_spec)
        privacy = PrivacyPolicy.model_validate(federation.privacy)
        base_version = round_row.base_version

    try:
        update = decode_update(body, spec.tensors(), max_norm=privacy.max_update_norm)
    except WireError as exc:
        raise InvalidUpdate(exc.message, field=exc.field) from exc
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

    # durable before the row that points at it is committed
    ctx.blobs.put(body, digest)
    try:
        with ctx.sessions.begin() as session:
            federation = load_federation(session, principal, federation_id)
            round_row = _check_round_open(
                federation,
                RoundRepository(session).get(federation_id, number, for_update=True),
                number,
            )
            updates = UpdateRepository(session)
            existing = updates.get(round_row.id, participant_id)
            if existing is not None:
                return _check_existing(existing, digest)
            row = Update(
                round_id=round_row.id,
                participant_id=participant_id,
                round_number=number,
                sha256=digest,
                size=len(body),
                num_examples=update.num_examples,
                kind=update.kind,
                idempotency_key=idempotency_key,
                received_at=utc_now(),
            )
            updates.add(row)
            round_row.update_count += 1
    except IntegrityError:
        # a concurrent request of the same participant won the unique (round, participant)
        with ctx.read_sessions() as session:
            round_row = _load_round(
                session, load_federation(session, principal, federation_id), number
            )
            existing = UpdateRepository(session).get(round_row.id, participant_id)
        if existing is None:
            raise
        return _check_existing(existing, digest)
    return Receipt(row, created=True)


def round_is_complete(ctx: Context, federation_id: str, number: int) -> bool:
    """True when every active participant has uploaded to this open round."""
    with ctx.read_sessions() as session:
        round_row = RoundRepository(session).get(federation_id, number)
        return (
            round_row is not None
            and round_row.state == "open"
            and round_is_complete_in(session, round_row)
        )


def aggregate_round(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    number: int,
    *,
    on_claimed: Callable[[], None] | None = None,
) -> ModelVersion:
    """Aggregate an open round exactly once and return the new model version."""
    principal.require_admin()
    now = utc_now()
    with ctx.sessions.begin() as session:
        federation = load_federation(session, principal, federation_id)
        round_row = _load_round(session, federation, number)
        if round_row.state != "open":
            raise RoundNotOpen(
                f"round {number} is {round_row.state}; only an open round can be aggregated",
                round=number,
                state=round_row.state,
            )
        if not UpdateRepository(session).count_from_active(round_row.id):
            raise NoUpdates(f"round {number} has no update from an active participant yet")
        claimed = RoundRepository(session).claim_for_aggregation(
            round_row.id,
            owner=ctx.instance_id,
            now=now,
            lease_until=now + timedelta(seconds=ctx.lease_seconds),
        )
        if not claimed:
            raise RoundNotOpen(f"round {number} is already being aggregated", round=number)
    if on_claimed:
        on_claimed()
    version = _complete_claimed_round(ctx, federation_id, number)
    if version is None:
        raise RoundNotOpen(f"round {number} was taken over by another aggregator", round=number)
    return version


def _contributing_updates(session: Session, round_row: Round) -> list[Update]:
    """The round's updates from participants still active, in aggregation order."""
    active = ParticipantRepository(session).active_ids(round_row.federation_id)
    return [
        u for u in UpdateRepository(session).for_round(round_row.id) if u.participant_id in active
    ]


def try_aggregate(ctx: Context, federation_id: str, number: int) -> ModelVersion | None:
    """Claim and aggregate a round if it is open (or its lease expired); None if not ours."""
    now = utc_now()
    with ctx.sessions.begin() as session:
        round_row = RoundRepository(session).get(federation_id, number)
        if round_row is None or not UpdateRepository(session).count_from_active(round_row.id):
            return None
        if not RoundRepository(session).claim_for_aggregation(
            round_row.id,
            owner=ctx.instance_id,
            now=now,
            lease_until=now + timedelta(seconds=ctx.lease_seconds),
        ):
            return None
    return _complete_claimed_round(ctx, federation_id, number)


def _complete_claimed_round(ctx: Context, federation_id: str, number: int) -> ModelVersion | None:
    """Aggregate a round this process has claimed; commit version + close + next open."""
    try:
        with ctx.read_sessions() as session:
            federation = FederationRepository(session).get(federation_id)
            assert federation is not None
            round_row = _load_round(session, federation, number)
            updates = _contributing_updates(session, round_row)
            base = ModelVersionRepository(session).get(federation_id, round_row.base_version)
            assert base is not None
            spec = ModelSpec.model_validate(federation.model_spec)
            strategy = StrategySpec.model_validate(federation.strategy)
            dp_policy = PrivacyPolicy.model_validate(federation.privacy).dp

        # stream: one update in memory at a time, float64 sums, fixed order
        accumulator = FedAvgAccumulator(
            spec.tensors(),
            server_lr=strategy.server_lr,
            row_normalization=strategy.normalization,
            weighting=strategy.weighting,
            # seeded by (federation, round): a taken-over aggregation draws the same noise
            dp=DPAggregation.for_round(
                dp_policy,
                secret_key=ctx.secret_key,
                federation_id=federation_id,
                round_number=number,
            )
            if dp_policy
            else None,
        )
        for row in updates:
            accumulator.add(decode_update(ctx.blobs.get(row.sha256), spec.tensors()))
        base_tensors = decode_weights(ctx.blobs.get(base.sha256))
        new_tensors = accumulator.result(base_tensors)
        del base_tensors
        if ctx.aggregation_pause_seconds:
            log.warning("test hook: pausing %.1fs before committing", ctx.aggregation_pause_seconds)
            time.sleep(ctx.aggregation_pause_seconds)
        contributors = sorted(row.sha256 for row in updates)
        # encode and fsync before the transaction: the database lock is held only briefly
        weights = encode_weights(new_tensors, MODEL_METADATA)
        del new_tensors
        digest = ctx.blobs.put(weights)
        now = utc_now()

        with ctx.sessions.begin() as session:
            federation = FederationRepository(session).get(federation_id, for_update=True)
            assert federation is not None
            new_number = federation.latest_version + 1
            if not RoundRepository(session).close_if_owned(
                round_row.id, owner=ctx.instance_id, result_version=new_number, closed_at=now
            ):
                session.rollback()
                return None
            version = ModelVersion(
                federation_id=federation_id,
                version=new_number,
                round_number=number,
                parent=base.version,
                sha256=digest,
                chain_hash=chain_hash(base.chain_hash, digest, contributors),
                size=len(weights),
                contributors=contributors,
                created_at=now,
            )
            session.add(version)
            federation.latest_version = new_number
            federation.completed_rounds += 1
            _advance(session, federation, next_number=number + 1, base_version=new_number, now=now)
        log.info(
            "federation %s round %d aggregated %d updates into version %d",
            federation_id,
            number,
            len(updates),
            new_number,
        )
        return version
    except BaseException:
        # give the round back at once rather than waiting for the lease to expire
        try:
            with ctx.sessions.begin() as session:
                round_row_id = RoundRepository(session).get(federation_id, number)
                if round_row_id is not None:
                    RoundRepository(session).release(round_row_id.id, owner=ctx.instance_id)
        except Exception:  # pragma: no cover - the lease covers us
            log.exception("could not release round %d of %s", number, federation_id)
        raise


def _advance(
    session: Session, federation: Federation, *, next_number: int, base_version: int, now: datetime
) -> None:
    """After a round closed: open the next round, or complete the federation (round
    budget spent, target reached, or one more round would exceed the privacy budget)."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    dp_policy = PrivacyPolicy.model_validate(federation.privacy).dp
    if (
        federation.completed_rounds >= policy.max_rounds
        or (dp_policy is not None and not round_allowed(dp_policy, federation.completed_rounds))
        or deployment.target_reached(session, federation)
    ):
        federation.state = "completed"
        federation.current_round = None
        deployment.auto_deploy(session, federation, now=now)
        return
    open_round(session, federation, number=next_number, base_version=base_version, now=now)


def _fail_or_extend(
    session: Session, federation: Federation, round_row: Round, now: datetime
) -> None:
    policy = RoundPolicy.model_validate(federation.round_policy)
    if policy.below_quorum == "extend" or policy.deadline_seconds is None:
        round_row.deadline_at = now + timedelta(seconds=policy.deadline_seconds or 0)
        log.info("round %d of %s below quorum: deadline extended", round_row.number, federation.id)
        return
    round_row.state = "failed"
    round_row.closed_at = now
    round_row.failure_reason = (
        f"deadline passed with {round_row.update_count} updates, "
        f"quorum is {policy.min_participants}"
    )
    open_round(
        session,
        federation,
        number=round_row.number + 1,
        base_version=round_row.base_version,
        now=now,
    )
    log.info("round %d of %s failed below quorum", round_row.number, federation.id)


def run_due_work(ctx: Context) -> int:
    """One timer tick: close rounds at their deadline, finish complete rounds, take over
    rounds whose aggregation lease expired. Safe to run in every process at once."""
    now = utc_now()
    done = 0
    with ctx.read_sessions() as session:
        candidates = [(r.federation_id, r.number) for r in RoundRepository(session).due(now)]
        candidates += [(r.federation_id, r.number) for r in RoundRepository(session).open_rounds()]
    for federation_id, number in dict.fromkeys(candidates):
        try:
            if _handle_round(ctx, federation_id, number, now):
                done += 1
        except Exception:
            log.exception("timer work on round %d of %s failed", number, federation_id)
    return done


def _handle_round(ctx: Context, federation_id: str, number: int, now: datetime) -> bool:
    with ctx.sessions.begin() as session:
        federation = FederationRepository(session).get(federation_id, for_update=True)
        round_row = RoundRepository(session).get(federation_id, number, for_update=True)
        if federation is None or round_row is None:
            return False
        policy = RoundPolicy.model_validate(federation.round_policy)
        expired_lease = (
            round_row.state == "aggregating"
            and round_row.lease_expires_at is not None
            and round_row.lease_expires_at < now
        )
        if round_row.state != "open" and not expired_lease:
            return False
        contributing = UpdateRepository(session).count_from_active(round_row.id)
        past_deadline = round_row.deadline_at is not None and round_row.deadline_at <= now
        complete = round_is_complete_in(session, round_row)
        if round_row.state == "open" and past_deadline and contributing < policy.min_participants:
            _fail_or_extend(session, federation, round_row, now)
            return True
        if not (expired_lease or complete or (past_deadline and contributing > 0)):
            return False
    return try_aggregate(ctx, federation_id, number) is not None


def round_is_complete_in(session: Session, round_row: Round) -> bool:
    """Every active participant has uploaded (counted in SQL: rounds can have thousands)."""
    active = ParticipantRepository(session).count_active(round_row.federation_id)
    return active > 0 and UpdateRepository(session).count_from_active(round_row.id) == active
