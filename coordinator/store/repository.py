"""Repositories: every SQL statement of the coordinator lives here.

Each repository wraps one session; the caller owns the transaction. Queries are
written once for SQLite and PostgreSQL; row locks (``FOR UPDATE``) are ignored by
SQLite, where ``BEGIN IMMEDIATE`` already serialises writers.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Integer,
    Select,
    Table,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.store.models import (
    AdminToken,
    AuditEvent,
    AuditHead,
    AuthGeneration,
    Deployment,
    Evaluation,
    Federation,
    IdempotencyRecord,
    ModelVersion,
    Participant,
    Round,
    RoundCohortMember,
    SecAggMaskedInput,
    SecAggShareCiphertext,
    SecAggState,
    Update,
    new_id,
)
from coordinator.store.prebuilt import Prebuilt

__all__ = [
    "AdminTokenRepository",
    "AuditEntry",
    "AuditRepository",
    "AuthGenerationRepository",
    "ClaimLoad",
    "DeploymentRepository",
    "EvaluationRepository",
    "FederationMark",
    "FederationRepository",
    "IdempotencyRepository",
    "ModelVersionRepository",
    "ParticipantRepository",
    "RoundCohortRepository",
    "RoundCompleteness",
    "RoundRepository",
    "RoundView",
    "SecAggRepository",
    "UpdateRepository",
    "current_view",
    "referenced_blobs",
]


@dataclass(frozen=True)
class RoundCompleteness:
    """A round's columns that decide whether it is complete, and its cohort's size."""

    state: str
    update_count: int  # every accepted update, from active participants or not
    deadline_at: datetime | None
    lease_expires_at: datetime | None
    sampled: bool
    population: int | None
    cohort_size: int | None
    cohort_active: int  # the cohort's active participants: the updates that complete it


def _completeness_columns() -> tuple[Any, ...]:
    """The columns of :class:`RoundCompleteness`, of the ``rounds`` row in the statement
    (its cohort's active members counted by correlated subqueries)."""
    active = Participant.state == "active"
    participants = (
        select(func.count())
        .select_from(Participant)
        .where(Participant.federation_id == Round.federation_id, active)
        .scalar_subquery()
    )
    members = (
        select(func.count())
        .select_from(RoundCohortMember)
        .join(Participant, Participant.id == RoundCohortMember.participant_id)
        .where(RoundCohortMember.round_id == Round.id, active)
        .scalar_subquery()
    )
    return (
        Round.state,
        Round.update_count,
        Round.deadline_at,
        Round.lease_expires_at,
        Round.sampled,
        Round.population,
        Round.cohort_size,
        case((Round.sampled, members), else_=participants),
    )


def _completeness_statement() -> Select[Any]:
    return select(*_completeness_columns()).where(
        Round.federation_id == bindparam("federation_id"), Round.number == bindparam("number")
    )


# Built once: every upload's kick runs it, and building this select took ~4 x as much
# CPU as running it
_COMPLETENESS = _completeness_statement()
_DIGESTS_FROM_ACTIVE = (
    select(Update.sha256)
    .join(Participant, Participant.id == Update.participant_id)
    .where(Update.round_id == bindparam("round_id"), Participant.state == "active")
    .order_by(Update.participant_id)
)


@dataclass(frozen=True)
class FederationMark:
    """What a poll needs of its federation: the columns of its round mark."""

    id: str
    current_round: int | None
    state: str
    latest_version: int


@dataclass(frozen=True)
class RoundView:
    """A round's columns as a poll answers them (read-only, no ORM identity)."""

    id: str
    federation_id: str
    number: int
    state: str
    base_version: int
    result_version: int | None
    update_count: int
    opened_at: datetime
    deadline_at: datetime | None
    closed_at: datetime | None
    sampled: bool
    cohort_size: int | None
    population: int | None

    @classmethod
    def of(cls, row: Round) -> RoundView:
        return cls(*(getattr(row, name) for name in cls.__dataclass_fields__))


@dataclass(frozen=True)
class ClaimLoad:
    """What a round's claim reads under its locks, loaded by one statement
    (:meth:`RoundRepository.lock_for_claim`): the federation and the round (both locked),
    and the round's base version."""

    federation: Federation
    round: Round
    base: ModelVersion | None


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, obj: object) -> None:
        self.session.add(obj)
        self.session.flush()


def _table(model: type[Any]) -> Table:
    """The Core table of a mapped class (for statements that skip the unit of work)."""
    return cast(Table, model.__table__)


def _upsert(session: Session, table: Table) -> Any:
    """The dialect's ``INSERT`` that takes ``ON CONFLICT`` (SQLite and PostgreSQL)."""
    return _upsert_of(session.get_bind().dialect.name, table)


def _upsert_of(dialect: str, table: Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class AuthGenerationRepository(_Repository):
    """The counter that tells token caches a participant's credentials changed."""

    def read(self) -> int | None:
        """The current generation (None: a database created without the migrations)."""
        return self.session.scalar(select(AuthGeneration.generation).where(AuthGeneration.id == 1))

    def bump(self) -> None:
        """In the transaction that changes credentials: the row lock orders the bumps."""
        self.session.execute(
            update(AuthGeneration)
            .where(AuthGeneration.id == 1)
            .values(generation=AuthGeneration.generation + 1)
        )


class AdminTokenRepository(_Repository):
    """Admin tokens by keyed hash: lookup, listing, and the bootstrap token's row."""

    def get(self, token_id: str) -> AdminToken | None:
        return self.session.get(AdminToken, token_id)

    def get_by_token_hash(self, token_hash: str) -> AdminToken | None:
        return self.session.scalars(
            select(AdminToken).where(AdminToken.token_hash == token_hash)
        ).one_or_none()

    def list(self) -> Sequence[AdminToken]:
        return self.session.scalars(
            select(AdminToken).order_by(AdminToken.created_at, AdminToken.id)
        ).all()

    def active(self, now: datetime, *, for_update: bool = False) -> Sequence[AdminToken]:
        """The tokens neither revoked nor expired at ``now`` (row-locked: a revocation
        that must leave one standing)."""
        stmt = select(AdminToken).where(
            AdminToken.revoked_at.is_(None), AdminToken.expires_at > now
        )
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).all()

    def insert_if_absent(self, row: AdminToken) -> bool:
        """Insert ``row`` unless its token hash has a row already (a replica or another
        worker registered the same bootstrap token first); whether it was inserted."""
        table = _table(AdminToken)
        # RETURNING, not the rowcount: psycopg reports -1 for an INSERT that did nothing
        stmt = (
            _upsert(self.session, table)
            .on_conflict_do_nothing(index_elements=["token_hash"])
            .returning(table.c.id)
        )
        values = {column.name: getattr(row, column.name) for column in table.c}
        return self.session.connection().execute(stmt, values).first() is not None

    def revoke_other_bootstraps(self, keep_hash: str, now: datetime) -> int:
        """Revoke every unrevoked bootstrap token but ``keep_hash``'s: a new bootstrap
        token replaces the one before it. How many were revoked."""
        result = self.session.execute(
            update(AdminToken)
            .where(
                AdminToken.kind == "bootstrap",
                AdminToken.token_hash != keep_hash,
                AdminToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(slots=True)
class AuditEntry:
    """An audit event to append, as plain values: the columns of ``audit_events``. The
    append is a Core statement, so an ORM ``AuditEvent`` built for it only cost its
    instrumented attribute sets (~50 µs an event; every upload and every round appends
    one)."""

    created_at: datetime
    actor: str
    action: str
    federation_id: str | None
    subject: str | None
    outcome: str
    detail: dict[str, Any]
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""


class AuditRepository(_Repository):
    """The append-only audit chain: the head row (locked to append) and the events."""

    def head(self, *, for_update: bool = False) -> AuditHead:
        stmt = select(AuditHead).where(AuditHead.id == 1)
        if for_update:
            stmt = stmt.with_for_update()
        head = self.session.scalars(stmt).one_or_none()
        if head is None:  # only a database created without the migrations
            head = AuditHead(id=1, seq=0, hash="00" * 32)
            self.session.add(head)
        return head

    def head_for_append(self) -> tuple[int, str]:
        """(seq, hash) of the head, its row locked until the transaction ends (Core: no
        ORM object to flush)."""
        connection = self.session.connection()
        row = _AUDIT_HEAD_FOR_UPDATE.first(connection, {})
        if row is None:  # only a database created without the migrations
            connection.execute(insert(_table(AuditHead)).values(id=1, seq=0, hash="00" * 32))
            return 0, "00" * 32
        return int(row[0]), str(row[1])

    def append(self, event: AuditEntry) -> None:
        """Insert ``event`` (after :meth:`head_for_append`); the insert moves the head
        (the trigger ``audit_events_move_head``)."""
        _AUDIT_INSERT.execute(
            self.session.connection(),
            {column.name: getattr(event, column.name) for column in _AUDIT_COLUMNS},
        )

    def append_after(self, event: AuditEntry) -> bool:
        """Insert ``event`` if the head is still the event it chains to (``seq - 1``,
        ``prev_hash``), in one statement that also moves the head (its row locked first
        on PostgreSQL, as :meth:`head_for_append` locks it); False (nothing written) if
        the head is another: read it with :meth:`head_for_append`."""
        row = _AUDIT_APPEND_AFTER.first(
            self.session.connection(),
            {column.name: getattr(event, column.name) for column in _AUDIT_COLUMNS},
        )
        return row is not None

    def page(self, *, after: int, limit: int) -> Sequence[AuditEvent]:
        return self.session.scalars(
            select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(limit)
        ).all()


class FederationRepository(_Repository):
    def get(self, federation_id: str, *, for_update: bool = False) -> Federation | None:
        stmt = _FEDERATION_FOR_UPDATE if for_update else _FEDERATION
        return self.session.scalars(stmt, {"federation_id": federation_id}).one_or_none()

    def lock_in_order(self, ids: Iterable[str]) -> None:
        """Lock these federations in id order (a group commit of evaluations takes its
        federation locks first, in one global order)."""
        if self.session.get_bind().dialect.name == "sqlite":
            return  # BEGIN IMMEDIATE took the one writer lock: there is nothing to order
        for federation_id in sorted(set(ids)):
            self.get(federation_id, for_update=True)

    def list(self, ids: Sequence[str] | None = None) -> Sequence[Federation]:
        stmt = select(Federation).order_by(Federation.created_at, Federation.id)
        if ids is not None:
            stmt = stmt.where(Federation.id.in_(ids))
        return self.session.scalars(stmt).all()

    def round_marks(self, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Per federation, what changes when a round opens, its sample is drawn, or the
        state moves (one query): current round, state, latest version, and whether the
        current round's draw is pending (a sampled round without its population yet)."""
        current = (Round.federation_id == Federation.id) & (
            Round.number == Federation.current_round
        )
        stmt = (
            select(
                Federation.id,
                Federation.current_round,
                Federation.state,
                Federation.latest_version,
                Round.sampled,
                Round.population,
            )
            .outerjoin(Round, current)
            .where(Federation.id.in_(ids))
        )
        return {
            fid: (number, state, latest, bool(sampled) and population is None)
            for fid, number, state, latest, sampled, population in self.session.execute(stmt)
        }

    def active_ids(self) -> Sequence[str]:
        return self.session.scalars(select(Federation.id).where(Federation.state == "active")).all()

    def ids_in_state(self, state: str) -> Sequence[str]:
        return self.session.scalars(select(Federation.id).where(Federation.state == state)).all()


class ParticipantRepository(_Repository):
    def get(self, participant_id: str) -> Participant | None:
        return self.session.get(Participant, participant_id)

    def get_by_token_hash(self, token_hash: str) -> Participant | None:
        return self.session.scalars(
            select(Participant).where(Participant.token_hash == token_hash)
        ).one_or_none()

    def get_by_previous_token_hash(self, token_hash: str) -> Participant | None:
        return self.session.scalars(
            select(Participant).where(Participant.previous_token_hash == token_hash)
        ).first()

    def list(self, federation_id: str) -> Sequence[Participant]:
        return self.session.scalars(
            select(Participant)
            .where(Participant.federation_id == federation_id)
            .order_by(Participant.created_at, Participant.id)
        ).all()

    def active_ids(self, federation_id: str) -> set[str]:
        # a Core statement: each round's draw reads every active id (10,000 of them in a
        # cross-device federation), and the ORM's row loading cost more than the read
        return set(self.session.execute(_ACTIVE_IDS, {"federation_id": federation_id}).scalars())

    def count_active(self, federation_id: str) -> int:
        return int(self.session.scalar(_COUNT_ACTIVE, {"federation_id": federation_id}) or 0)

    def count(self, federation_id: str) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(Participant)
                .where(Participant.federation_id == federation_id)
            )
            or 0
        )

    def last_seen(self, federation_id: str) -> dict[str, datetime]:
        """Per participant: when it last uploaded an update or reported an evaluation."""
        seen: dict[str, datetime] = {}
        uploads = (
            select(Update.participant_id, func.max(Update.received_at))
            .join(Participant, Participant.id == Update.participant_id)
            .where(Participant.federation_id == federation_id)
            .group_by(Update.participant_id)
        )
        reports = (
            select(Evaluation.participant_id, func.max(Evaluation.created_at))
            .where(Evaluation.federation_id == federation_id)
            .group_by(Evaluation.participant_id)
        )
        for stmt in (uploads, reports):
            for participant_id, at in self.session.execute(stmt):
                if at is not None and (participant_id not in seen or at > seen[participant_id]):
                    seen[participant_id] = at
        return seen


def _changed_one_row(result: Result[Any]) -> bool:
    """A compare-and-set's verdict: its guarded UPDATE matched exactly one row (the ORM's
    ``Session.execute`` types its result as a plain ``Result``; an UPDATE's is a cursor's)."""
    return cast("CursorResult[Any]", result).rowcount == 1


class RoundRepository(_Repository):
    def get(self, federation_id: str, number: int, *, for_update: bool = False) -> Round | None:
        stmt = _ROUND_FOR_UPDATE if for_update else _ROUND
        return self.session.scalars(
            stmt, {"federation_id": federation_id, "number": number}
        ).one_or_none()

    def lock_for_claim(self, federation_id: str, number: int) -> ClaimLoad | None:
        """Lock the federation and its round ``number`` (in that order: PostgreSQL's
        ``FOR UPDATE OF federations, rounds``; SQLite's write lock is the caller's
        BEGIN IMMEDIATE) and read the round's base version (immutable) in the same
        statement; None when the round (or the federation) does not exist, nothing
        locked. What may change under other rows' locks (the participants' states) is read
        by later statements: on PostgreSQL a statement that waited for a row lock keeps the
        snapshot it started with for the rows it did not lock."""
        row = self.session.execute(
            _LOCK_FOR_CLAIM, {"federation_id": federation_id, "number": number}
        ).one_or_none()
        if row is None:
            return None
        return ClaimLoad(row[0], row[1], row[2])

    def current_view(self, federation_id: str) -> tuple[FederationMark, RoundView | None] | None:
        """:func:`current_view` on this session's connection."""
        return current_view(self.session.connection(), federation_id)

    def upload_target(self, federation_id: str, number: int) -> Any:
        """One row for an upload's checks: the federation's ``state`` and
        ``current_round``, and the round's ``round_id``, ``round_state``,
        ``base_version`` and ``sampled`` (None where there is no such round); None when
        there is no such federation. One Core statement: no ORM objects."""
        return (
            self.session.connection()
            .execute(_UPLOAD_TARGET, {"federation_id": federation_id, "number": number})
            .first()
        )

    def upload_check(
        self, federation_id: str, number: int, participant_id: str, key: str | None
    ) -> Any:
        """:meth:`upload_target`'s row with one more column, ``repeats``: whether the
        participant has an update that this upload may repeat (one in the round, or one
        sent with ``key``), i.e. whether :meth:`UpdateRepository.repeated_by` can find
        anything. One Core statement: a first upload reads nothing else."""
        return (
            self.session.connection()
            .execute(
                _UPLOAD_CHECK,
                {
                    "federation_id": federation_id,
                    "number": number,
                    "participant_id": participant_id,
                    "key": key,
                },
            )
            .first()
        )

    def count_update_judged(self, round_id: str, *, if_state: str) -> RoundCompleteness | None:
        """Add one to the round's ``update_count`` if it is in state ``if_state`` (the
        caller's transaction holds the round's row lock from then on), and return its
        :meth:`completeness` as counted, in one statement (UPDATE … RETURNING); None if
        the round was not in that state (nothing counted)."""
        row = _COUNT_UPDATE_JUDGED.first(
            self.session.connection(), {"b_round_id": round_id, "b_state": if_state}
        )
        return None if row is None else RoundCompleteness(*row)

    def count_update_unless_repeat(
        self, round_id: str, participant_id: str, key: str | None, *, if_state: str
    ) -> tuple[RoundCompleteness | None, bool]:
        """:meth:`count_update_judged`, and in the same statement whether the participant
        already has an update in the round or one sent with ``key`` (``upload_check``'s
        ``repeats``, read under the round's row lock): an upload that skipped the read
        phase learns here that it may repeat one, and rolls its count back. ``(None,
        False)`` if the round was not in state ``if_state``."""
        row = _COUNT_UPDATE_UNLESS_REPEAT.first(
            self.session.connection(),
            {
                "b_round_id": round_id,
                "b_state": if_state,
                "b_participant_id": participant_id,
                "b_key": key,
            },
        )
        if row is None:
            return None, False
        *facts, repeats = row
        return RoundCompleteness(*facts), bool(repeats)

    def completeness(self, federation_id: str, number: int) -> RoundCompleteness | None:
        """What an upload's kick needs to tell an incomplete round, in one statement: the
        round's state, deadline, lease, draw, accepted updates, and its cohort's active
        members (every active participant, or the drawn ones)."""
        row = self.session.execute(
            _COMPLETENESS, {"federation_id": federation_id, "number": number}
        ).one_or_none()
        return None if row is None else RoundCompleteness(*row)

    def lock_in_order(self, keys: Iterable[tuple[str, int]]) -> None:
        """Lock these (federation, number) rounds for a group commit of uploads, in the
        global order: the federations first (``FOR KEY SHARE``, the lock the rows'
        foreign keys to the federation take anyway, here taken before the round's as the
        aggregation's claim takes them), then the rounds, all sorted; the audit head last.
        Batches and claims in different processes then cannot deadlock."""
        if self.session.get_bind().dialect.name == "sqlite":
            return  # BEGIN IMMEDIATE took the one writer lock: there is nothing to order
        ordered = sorted(set(keys))
        for federation_id in sorted({federation_id for federation_id, _ in ordered}):
            self.session.execute(
                select(Federation.id)
                .where(Federation.id == federation_id)
                .with_for_update(read=True, key_share=True)
            )
        for federation_id, number in ordered:
            self.get(federation_id, number, for_update=True)

    def list(self, federation_id: str) -> Sequence[Round]:
        return self.session.scalars(
            select(Round).where(Round.federation_id == federation_id).order_by(Round.number)
        ).all()

    def smallest_population(self, federation_id: str) -> int | None:
        """The fewest active participants any sampled round of the federation drew from."""
        value = self.session.scalar(
            select(func.min(Round.population)).where(
                Round.federation_id == federation_id, Round.population.is_not(None)
            )
        )
        return int(value) if value is not None else None

    def result_versions(self, federation_id: str) -> builtins.list[int]:
        """The versions closed rounds produced (the lineage's head check reads them)."""
        return [
            v
            for v in self.session.scalars(
                select(Round.result_version).where(
                    Round.federation_id == federation_id, Round.result_version.is_not(None)
                )
            )
            if v is not None
        ]

    def claim_for_aggregation(
        self, round_id: str, *, owner: str, now: datetime, lease_until: datetime
    ) -> bool:
        """Compare-and-set ``open -> aggregating`` (or take over an expired lease).

        A Core statement on the caller's connection: no autoflush, and the session's
        loaded ``Round`` is not updated (the callers read the round no further)."""
        changed = _CLAIM.rowcount(
            self.session.connection(),
            {"b_round_id": round_id, "b_now": now, "b_owner": owner, "b_until": lease_until},
        )
        return changed == 1

    def renew_lease(self, round_id: str, *, owner: str, lease_until: datetime) -> bool:
        """Compare-and-set: extend ``owner``'s lease of an ``aggregating`` round; false if
        the lease was lost (taken over, or the round is no longer aggregating)."""
        result = self.session.execute(
            update(Round)
            .where(Round.id == round_id, Round.state == "aggregating", Round.lease_owner == owner)
            .values(lease_expires_at=lease_until)
            .execution_options(synchronize_session=False)
        )
        return _changed_one_row(result)

    def close_if_owned(
        self, round_id: str, *, owner: str, result_version: int, closed_at: datetime
    ) -> bool:
        """Compare-and-set ``aggregating -> closed``; false if the lease was lost. A Core
        statement, as :meth:`claim_for_aggregation`."""
        changed = _CLOSE.rowcount(
            self.session.connection(),
            {
                "b_round_id": round_id,
                "b_owner": owner,
                "b_version": result_version,
                "b_closed_at": closed_at,
            },
        )
        return changed == 1

    def claim_and_close(
        self, round_id: str, *, owner: str, now: datetime, result_version: int, closed_at: datetime
    ) -> bool:
        """:meth:`claim_for_aggregation` and :meth:`close_if_owned` as one compare-and-set
        (a round claimed, folded and recorded inside one transaction): ``open`` (or an
        expired lease at ``now``) ``-> closed``, ``owner`` recorded as the lease's last
        holder, as the two statements leave it; false if it is not claimable."""
        changed = _CLAIM_AND_CLOSE.rowcount(
            self.session.connection(),
            {
                "b_round_id": round_id,
                "b_now": now,
                "b_owner": owner,
                "b_version": result_version,
                "b_closed_at": closed_at,
            },
        )
        return changed == 1

    def claim_and_fail(
        self, round_id: str, *, owner: str, now: datetime, reason: str, closed_at: datetime
    ) -> bool:
        """:meth:`claim_for_aggregation` and :meth:`fail_if_owned` as one compare-and-set
        (as :meth:`claim_and_close`)."""
        result = self.session.execute(
            update(Round)
            .where(Round.id == round_id, _CLAIMABLE)
            .values(
                state="failed",
                lease_owner=owner,
                failure_reason=reason,
                closed_at=closed_at,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False),
            {"b_now": now},
        )
        return _changed_one_row(result)

    def fail_if_owned(self, round_id: str, *, owner: str, reason: str, closed_at: datetime) -> bool:
        """Compare-and-set ``aggregating -> failed``; false if the lease was lost."""
        result = self.session.execute(
            update(Round)
            .where(Round.id == round_id, Round.state == "aggregating", Round.lease_owner == owner)
            .values(
                state="failed", failure_reason=reason, closed_at=closed_at, lease_expires_at=None
            )
            .execution_options(synchronize_session=False)
        )
        return _changed_one_row(result)

    def count_failed(self, federation_id: str) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(Round)
                .where(Round.federation_id == federation_id, Round.state == "failed")
            )
            or 0
        )

    def release(self, round_id: str, *, owner: str) -> None:
        """Give a claimed round back (``aggregating -> open``) after a failed attempt."""
        self.session.execute(
            update(Round)
            .where(Round.id == round_id, Round.state == "aggregating", Round.lease_owner == owner)
            .values(state="open", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )

    def due(self, now: datetime) -> Sequence[Round]:
        """Rounds that need the timer: deadline passed, or an aggregation lease expired."""
        return self.session.scalars(
            select(Round)
            .where(
                ((Round.state == "open") & (Round.deadline_at.is_not(None)))
                & (Round.deadline_at <= now)
                | ((Round.state == "aggregating") & (Round.lease_expires_at < now))
            )
            .order_by(Round.federation_id, Round.number)
        ).all()

    def open_rounds(self) -> Sequence[Round]:
        return self.session.scalars(select(Round).where(Round.state == "open")).all()


def current_view(
    connection: Connection, federation_id: str
) -> tuple[FederationMark, RoundView | None] | None:
    """The federation's round mark and its current round, in one Core statement (a poll
    reads this; loading the wide federation row and the round through the ORM cost
    ~0.5 ms): None when there is no such federation, a None round when it has no round
    numbered ``current_round``. Takes a Core connection: every poll and every
    ``…/rounds/current/weights`` reads this, and an ORM session around one statement cost
    as much again (``domain.rounds.current_round``)."""
    found = connection.execute(_CURRENT_VIEW, {"federation_id": federation_id}).first()
    if found is None:
        return None
    mark = FederationMark(*found[:4])
    return mark, (None if found[4] is None else RoundView(*found[4:]))


class RoundCohortRepository(_Repository):
    """Who was drawn into a sampled round (``round_cohorts``)."""

    def add_members(self, round_id: str, participant_ids: Sequence[str]) -> None:
        self.session.add_all(
            RoundCohortMember(round_id=round_id, participant_id=pid) for pid in participant_ids
        )

    def members(self, round_id: str) -> set[str]:
        return set(
            self.session.scalars(
                select(RoundCohortMember.participant_id).where(
                    RoundCohortMember.round_id == round_id
                )
            )
        )

    def active_members(self, round_id: str) -> set[str]:
        """The cohort's participants that are still active (revoked ones drop out)."""
        return set(
            self.session.scalars(
                select(RoundCohortMember.participant_id)
                .join(Participant, Participant.id == RoundCohortMember.participant_id)
                .where(RoundCohortMember.round_id == round_id, Participant.state == "active")
            )
        )

    def count_active_members(self, round_id: str) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(RoundCohortMember)
                .join(Participant, Participant.id == RoundCohortMember.participant_id)
                .where(RoundCohortMember.round_id == round_id, Participant.state == "active")
            )
            or 0
        )

    def contains(self, round_id: str, participant_id: str) -> bool:
        return self.session.get(RoundCohortMember, (round_id, participant_id)) is not None

    def rounds_containing(self, participant_id: str, round_ids: Sequence[str]) -> set[str]:
        """Which of ``round_ids`` drew ``participant_id``."""
        if not round_ids:
            return set()
        return set(
            self.session.scalars(
                select(RoundCohortMember.round_id).where(
                    RoundCohortMember.participant_id == participant_id,
                    RoundCohortMember.round_id.in_(round_ids),
                )
            )
        )


class UpdateRepository(_Repository):
    def get(self, round_id: str, participant_id: str) -> Update | None:
        return self.session.scalars(
            select(Update).where(
                Update.round_id == round_id, Update.participant_id == participant_id
            )
        ).one_or_none()

    def for_round(self, round_id: str) -> Sequence[Update]:
        """Updates of a round in the fixed aggregation order (participant id)."""
        return self.session.scalars(
            select(Update).where(Update.round_id == round_id).order_by(Update.participant_id)
        ).all()

    def digests_from_active(self, round_id: str) -> builtins.list[str]:
        """The sha256 of the round's updates whose participant is still active, in the
        fixed aggregation order (participant id)."""
        return list(self.session.scalars(_DIGESTS_FROM_ACTIVE, {"round_id": round_id}))

    def digests_and_cohort(
        self, round_id: str, *, federation_id: str, sampled: bool
    ) -> tuple[builtins.list[str], int | None]:
        """:meth:`digests_from_active`, and in the same statement the round's cohort's
        active members (``sampling.cohort_count``: a sampled round's drawn members still
        active, else the federation's active participants); None if there is no digest."""
        if sampled:
            stmt, params = _DIGESTS_AND_MEMBERS, {"round_id": round_id}
        else:
            stmt, params = (
                _DIGESTS_AND_ACTIVE,
                {"round_id": round_id, "federation_id": federation_id},
            )
        rows = stmt.all(self.session.connection(), params)
        return [row[0] for row in rows], (int(rows[0][1]) if rows else None)

    def count_from_active(self, round_id: str) -> int:
        """Updates of a round whose participant is still active (they will be aggregated)."""
        return int(self.session.scalar(_COUNT_FROM_ACTIVE, {"round_id": round_id}) or 0)

    def count_all(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Update)) or 0)

    def repeated_by(
        self, participant_id: str, round_id: str | None, key: str | None
    ) -> Sequence[Update]:
        """The participant's updates that an upload to ``round_id`` with ``key`` may
        repeat: the round's, and the one first uploaded with the key (one query)."""
        return self.session.scalars(
            _REPEATED_BY, {"participant_id": participant_id, "round_id": round_id, "key": key}
        ).all()

    def insert(self, row: Update) -> None:
        """Insert ``row`` with one Core statement (its ``id`` and ``received_at`` set):
        the row stays a plain object, outside the session. Raises ``IntegrityError`` if
        the participant already has an update in the round."""
        _UPDATE_INSERT.execute(
            self.session.connection(),
            {column.name: getattr(row, column.name) for column in _UPDATE_COLUMNS},
        )

    def by_idempotency_key(self, participant_id: str, key: str) -> Update | None:
        """The participant's update first uploaded with this ``Idempotency-Key``."""
        return self.session.scalars(
            select(Update)
            .where(Update.participant_id == participant_id, Update.idempotency_key == key)
            .order_by(Update.received_at)
            .limit(1)
        ).first()


class ModelVersionRepository(_Repository):
    def insert(self, row: ModelVersion) -> None:
        """Insert ``row`` now, a Core statement (the unit of work's flush of a new version
        was most of a small round's commit): ``row`` stays out of the session, its id
        drawn here."""
        if row.id is None:
            row.id = new_id()
        columns = _table(ModelVersion).c
        _MODEL_VERSION_INSERT.execute(
            self.session.connection(),
            {column.name: getattr(row, column.name) for column in columns},
        )

    def get(self, federation_id: str, version: int) -> ModelVersion | None:
        return self.session.scalars(
            _MODEL_VERSION, {"federation_id": federation_id, "version": version}
        ).one_or_none()

    def list(self, federation_id: str) -> Sequence[ModelVersion]:
        return self.session.scalars(
            select(ModelVersion)
            .where(ModelVersion.federation_id == federation_id)
            .order_by(ModelVersion.version)
        ).all()

    def get_by_round(self, federation_id: str, round_number: int) -> ModelVersion | None:
        return self.session.scalars(
            select(ModelVersion).where(
                ModelVersion.federation_id == federation_id,
                ModelVersion.round_number == round_number,
            )
        ).first()

    def count_for_round(self, federation_id: str, round_number: int) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(ModelVersion)
                .where(
                    ModelVersion.federation_id == federation_id,
                    ModelVersion.round_number == round_number,
                )
            )
            or 0
        )


class EvaluationRepository(_Repository):
    def put(self, row: Evaluation) -> None:
        """Insert ``row`` or replace the figures of the one with its key (federation,
        version, split, participant): one statement, no ORM object."""
        _EVALUATION_PUT.execute(
            self.session.connection(),
            {column.name: getattr(row, column.name) for column in _table(Evaluation).c},
        )

    def validation_figures(self, federation_id: str) -> builtins.list[tuple[Any, ...]]:
        """``(version, metrics, num_users)`` of each validation report of the federation,
        by version then participant: one prebuilt statement (every small round's claim
        reads it), no ORM object. The session's pending changes are flushed first, as a
        query through the session would (its autoflush): a report added by the unit of
        work is among the figures."""
        if self.session.autoflush:
            self.session.flush()
        return _VALIDATION_FIGURES.all(self.session.connection(), {"federation_id": federation_id})

    def get(
        self, federation_id: str, version: int, split: str, participant_id: str
    ) -> Evaluation | None:
        return self.session.scalars(
            select(Evaluation).where(
                Evaluation.federation_id == federation_id,
                Evaluation.version == version,
                Evaluation.split == split,
                Evaluation.participant_id == participant_id,
            )
        ).one_or_none()

    def list(self, federation_id: str) -> Sequence[Evaluation]:
        return self.session.scalars(
            select(Evaluation)
            .where(Evaluation.federation_id == federation_id)
            .order_by(Evaluation.version, Evaluation.split, Evaluation.participant_id)
        ).all()

    def reporters(self, federation_id: str, version: int, split: str) -> set[str]:
        """The participants that reported figures for one version and split."""
        return set(
            self.session.scalars(
                select(Evaluation.participant_id).where(
                    Evaluation.federation_id == federation_id,
                    Evaluation.version == version,
                    Evaluation.split == split,
                )
            )
        )


class DeploymentRepository(_Repository):
    def history(self, federation_id: str) -> Sequence[Deployment]:
        return self.session.scalars(
            select(Deployment)
            .where(Deployment.federation_id == federation_id)
            .order_by(Deployment.seq)
        ).all()

    def current(self, federation_id: str) -> Deployment | None:
        return self.session.scalars(
            select(Deployment)
            .where(Deployment.federation_id == federation_id)
            .order_by(Deployment.seq.desc())
            .limit(1)
        ).first()


class IdempotencyRepository(_Repository):
    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        return self.session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
            )
        ).one_or_none()

    def insert_pending(self, record: IdempotencyRecord) -> bool:
        """Insert a new record; False if the (principal, key) pair already exists."""
        try:
            with self.session.begin_nested():
                self.session.add(record)
                self.session.flush()
        except IntegrityError:
            return False
        return True

    def insert(self, record: IdempotencyRecord) -> bool:
        """Insert a record without a SAVEPOINT of its own; False if the (principal, key)
        pair already exists, and then the session must roll back (its flush failed)."""
        self.session.add(record)
        try:
            self.session.flush()
        except IntegrityError:
            return False
        return True

    def complete(
        self, record_id: str, *, status_code: int, content_type: str | None, body: str
    ) -> None:
        self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == record_id)
            .values(status_code=status_code, content_type=content_type, response_body=body)
        )

    def delete(self, record_id: str) -> None:
        self.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))

    def delete_created_before(self, cutoff: datetime) -> int:
        result = self.session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def referenced_blobs(session: Session, *, updates_of_finished_rounds: bool = True) -> set[str]:
    """Digests of every blob a row points at: model versions (and their compressed
    encodings), server states, and updates.

    Without ``updates_of_finished_rounds`` only updates of rounds still ``open`` or
    ``aggregating`` count: a closed or failed round never reads its updates again.
    """
    digests = set(session.scalars(select(ModelVersion.sha256).distinct()))
    digests.update(
        session.scalars(
            select(ModelVersion.server_state_sha256)
            .where(ModelVersion.server_state_sha256.is_not(None))
            .distinct()
        )
    )
    # the weights in a compressed encoding are never removed either (the manifest signs them)
    for encodings in session.scalars(
        select(ModelVersion.encodings).where(ModelVersion.encodings.is_not(None))
    ):
        digests.update(str(entry["sha256"]) for entry in (encodings or {}).values())
    updates = select(Update.sha256).distinct()
    if not updates_of_finished_rounds:
        updates = updates.join(Round, Round.id == Update.round_id).where(
            Round.state.in_(("open", "aggregating"))
        )
    digests.update(session.scalars(updates))
    return digests


class SecAggRepository(_Repository):
    """Secure-aggregation state rows; callers hold the round's row lock to change one."""

    def get(self, round_id: str) -> SecAggState | None:
        return self.session.get(SecAggState, round_id)

    def masked_ids(self, round_id: str) -> builtins.list[str]:
        return list(
            self.session.scalars(
                select(SecAggMaskedInput.participant_id).where(
                    SecAggMaskedInput.round_id == round_id
                )
            )
        )

    def masked_words(self, round_id: str, participant_id: str) -> bytes | None:
        row = self.session.get(SecAggMaskedInput, (round_id, participant_id))
        return None if row is None else row.words

    def all_masked(self, round_id: str) -> dict[str, bytes]:
        rows = self.session.scalars(
            select(SecAggMaskedInput).where(SecAggMaskedInput.round_id == round_id)
        )
        return {row.participant_id: row.words for row in rows}

    def add_masked(self, round_id: str, participant_id: str, words: bytes) -> None:
        self.session.add(
            SecAggMaskedInput(round_id=round_id, participant_id=participant_id, words=words)
        )

    def delete_masked(self, round_id: str) -> None:
        self.session.execute(
            delete(SecAggMaskedInput).where(SecAggMaskedInput.round_id == round_id)
        )

    def sharer_ids(self, round_id: str) -> builtins.set[str]:
        """Who has share ciphertexts stored in the round."""
        return set(
            self.session.scalars(
                select(SecAggShareCiphertext.sender_id)
                .where(SecAggShareCiphertext.round_id == round_id)
                .distinct()
            )
        )

    def ciphertexts_of(
        self, round_id: str, participant_id: str
    ) -> builtins.list[tuple[str, str, bytes]]:
        """(sender, recipient, ciphertext) of every share message the participant sent or
        is sent: its inbox (the recipient index) and its own, to compare a repeat."""
        table = SecAggShareCiphertext
        rows = self.session.execute(
            select(table.sender_id, table.recipient_id, table.ciphertext).where(
                table.round_id == round_id,
                (table.recipient_id == participant_id) | (table.sender_id == participant_id),
            )
        )
        return [(sender, recipient, ciphertext) for sender, recipient, ciphertext in rows]

    def add_ciphertexts(
        self, round_id: str, sender_id: str, by_recipient: dict[str, bytes]
    ) -> None:
        self.session.add_all(
            SecAggShareCiphertext(
                round_id=round_id, sender_id=sender_id, recipient_id=recipient, ciphertext=data
            )
            for recipient, data in by_recipient.items()
        )

    def delete_ciphertexts(self, round_id: str) -> None:
        self.session.execute(
            delete(SecAggShareCiphertext).where(SecAggShareCiphertext.round_id == round_id)
        )


# statements built once: building a statement's expression was a good part of its cost
_UPLOAD_TARGET = (
    select(
        _table(Federation).c.state,
        _table(Federation).c.current_round,
        _table(Round).c.id.label("round_id"),
        _table(Round).c.state.label("round_state"),
        _table(Round).c.base_version,
        _table(Round).c.sampled,
    )
    .select_from(_table(Federation))
    .outerjoin(
        _table(Round),
        (_table(Round).c.federation_id == _table(Federation).c.id)
        & (_table(Round).c.number == bindparam("number")),
    )
    .where(_table(Federation).c.id == bindparam("federation_id"))
)
_UPDATES = _table(Update)
_UPLOAD_CHECK = _UPLOAD_TARGET.add_columns(
    select(_UPDATES.c.id)
    .where(
        _UPDATES.c.participant_id == bindparam("participant_id"),
        or_(
            _UPDATES.c.round_id == _table(Round).c.id,
            _UPDATES.c.idempotency_key == bindparam("key"),
        ),
    )
    .exists()
    .label("repeats")
)
_CURRENT_VIEW = (
    select(
        _table(Federation).c.id,
        _table(Federation).c.current_round,
        _table(Federation).c.state,
        _table(Federation).c.latest_version,
        *(_table(Round).c[name] for name in RoundView.__dataclass_fields__),
    )
    .select_from(_table(Federation))
    .outerjoin(
        _table(Round),
        (_table(Round).c.federation_id == _table(Federation).c.id)
        & (_table(Round).c.number == _table(Federation).c.current_round),
    )
    .where(_table(Federation).c.id == bindparam("federation_id"))
)
_REPEATED_BY = select(Update).where(
    Update.participant_id == bindparam("participant_id"),
    or_(Update.round_id == bindparam("round_id"), Update.idempotency_key == bindparam("key")),
)
# the guarded count returning what certainly_waits reads. Written out: SQLAlchemy renders a
# RETURNING clause's columns unqualified on SQLite, subqueries included, which would make the
# correlated counts' "id" and "state" mean their own tables' columns
_ROUNDS = _table(Round)
_COUNT_UPDATE = (
    "UPDATE rounds SET update_count = rounds.update_count + 1"
    " WHERE rounds.id = :b_round_id AND rounds.state = :b_state"
    " RETURNING rounds.state, rounds.update_count, rounds.deadline_at,"
    " rounds.lease_expires_at, rounds.sampled, rounds.population, rounds.cohort_size,"
    " CASE WHEN rounds.sampled THEN"
    " (SELECT count(*) FROM round_cohorts AS c JOIN participants AS p"
    " ON p.id = c.participant_id WHERE c.round_id = rounds.id AND p.state = 'active')"
    " ELSE (SELECT count(*) FROM participants AS p"
    " WHERE p.federation_id = rounds.federation_id AND p.state = 'active') END"
    " AS cohort_active"
)
_COMPLETENESS_COLUMNS = (
    *(
        _ROUNDS.c[name]
        for name in (
            "state",
            "update_count",
            "deadline_at",
            "lease_expires_at",
            "sampled",
            "population",
            "cohort_size",
        )
    ),
    column("cohort_active", Integer),
)
_COUNT_UPDATE_JUDGED = Prebuilt(text(_COUNT_UPDATE).columns(*_COMPLETENESS_COLUMNS))
# ... plus upload_check's "repeats" (an update of the participant in the round, or one sent
# with the same key), for an upload that skipped the read phase (domain/open_rounds.py): two
# lookups of covering indexes, where one EXISTS with an OR read every update of the participant
_COUNT_UPDATE_UNLESS_REPEAT = Prebuilt(
    text(
        _COUNT_UPDATE  # nosec B608 # constant SQL text; every value is a bound parameter
        + ", EXISTS (SELECT 1 FROM updates AS u"
        " WHERE u.round_id = rounds.id AND u.participant_id = :b_participant_id)"
        " OR EXISTS (SELECT 1 FROM updates AS k"
        " WHERE k.participant_id = :b_participant_id AND k.idempotency_key = :b_key)"
        " AS repeats"
    ).columns(*_COMPLETENESS_COLUMNS, column("repeats", Boolean))
)
_UPDATE_COLUMNS = tuple(_table(Update).c)
_UPDATE_INSERT = Prebuilt(insert(_table(Update)))
_AUDIT_HEAD_FOR_UPDATE = Prebuilt(
    select(_table(AuditHead).c.seq, _table(AuditHead).c.hash)
    .where(_table(AuditHead).c.id == 1)
    .with_for_update()
)
_AUDIT_INSERT = Prebuilt(insert(_table(AuditEvent)))
_AUDIT_COLUMNS = tuple(_table(AuditEvent).c)
# INSERT … SELECT <the event> FROM audit_head WHERE the head is the event it chains to
# [FOR UPDATE on PostgreSQL, where READ COMMITTED re-checks the condition on the head's
# newest version once its lock is granted] RETURNING seq
_AUDIT_APPEND_AFTER = Prebuilt(
    insert(_table(AuditEvent))
    .from_select(
        [column.name for column in _AUDIT_COLUMNS],
        select(*(bindparam(column.name, type_=column.type) for column in _AUDIT_COLUMNS))
        .select_from(_table(AuditHead))
        .where(
            _table(AuditHead).c.id == 1,
            _table(AuditHead).c.seq == bindparam("seq", type_=Integer) - 1,
            _table(AuditHead).c.hash == bindparam("prev_hash"),
        )
        .with_for_update(),
    )
    .returning(_table(AuditEvent).c.seq),
    column_keys=(),  # its columns are the SELECT's
)
_MODEL_VERSION_INSERT = Prebuilt(insert(_table(ModelVersion)))


def _evaluation_put(dialect: str) -> Any:
    upsert = _upsert_of(dialect, _table(Evaluation))
    return upsert.on_conflict_do_update(
        index_elements=["federation_id", "version", "split", "participant_id"],
        set_={
            "metrics": upsert.excluded.metrics,
            "num_users": upsert.excluded.num_users,
            "created_at": upsert.excluded.created_at,
        },
    )


_EVALUATION_PUT = Prebuilt(_evaluation_put)
_EVALUATIONS = _table(Evaluation)
_VALIDATION_FIGURES = Prebuilt(
    select(_EVALUATIONS.c.version, _EVALUATIONS.c.metrics, _EVALUATIONS.c.num_users)
    .where(
        _EVALUATIONS.c.federation_id == bindparam("federation_id"),
        _EVALUATIONS.c.split == "validation",
    )
    .order_by(_EVALUATIONS.c.version, _EVALUATIONS.c.participant_id)
)
# built once: the aggregation job runs these every round (building a statement costs more
# CPU than SQLite takes to run it)
_FEDERATION = select(Federation).where(Federation.id == bindparam("federation_id"))
_FEDERATION_FOR_UPDATE = _FEDERATION.with_for_update()
_ROUND = select(Round).where(
    Round.federation_id == bindparam("federation_id"), Round.number == bindparam("number")
)
_ROUND_FOR_UPDATE = _ROUND.with_for_update()
_MODEL_VERSION = select(ModelVersion).where(
    ModelVersion.federation_id == bindparam("federation_id"),
    ModelVersion.version == bindparam("version"),
)
_MEMBER = _table(Participant).alias("member")  # the subqueries' own participants
_DIGESTS_AND_ACTIVE = Prebuilt(
    _DIGESTS_FROM_ACTIVE.add_columns(
        select(func.count())
        .select_from(_MEMBER)
        .where(_MEMBER.c.federation_id == bindparam("federation_id"), _MEMBER.c.state == "active")
        .scalar_subquery()
    )
)
_DIGESTS_AND_MEMBERS = Prebuilt(
    _DIGESTS_FROM_ACTIVE.add_columns(
        select(func.count())
        .select_from(_table(RoundCohortMember))
        .join(_MEMBER, _MEMBER.c.id == _table(RoundCohortMember).c.participant_id)
        .where(
            _table(RoundCohortMember).c.round_id == bindparam("round_id"),
            _MEMBER.c.state == "active",
        )
        .scalar_subquery()
    )
)
_COUNT_FROM_ACTIVE = (
    select(func.count())
    .select_from(Update)
    .join(Participant, Participant.id == Update.participant_id)
    .where(Update.round_id == bindparam("round_id"), Participant.state == "active")
)
_ACTIVE_IDS = select(_table(Participant).c.id).where(
    _table(Participant).c.federation_id == bindparam("federation_id"),
    _table(Participant).c.state == "active",
)
_COUNT_ACTIVE = (
    select(func.count())
    .select_from(Participant)
    .where(Participant.federation_id == bindparam("federation_id"), Participant.state == "active")
)
_LOCK_FOR_CLAIM = (
    select(Federation, Round, ModelVersion)
    .join(Round, (Round.federation_id == Federation.id) & (Round.number == bindparam("number")))
    .outerjoin(
        ModelVersion,
        (ModelVersion.federation_id == Federation.id)
        & (ModelVersion.version == Round.base_version),
    )
    .where(Federation.id == bindparam("federation_id"))
    .with_for_update(of=[_table(Federation), _table(Round)])
)
_AT = _table(Round).c.lease_expires_at.type  # the UTC timestamp type of every *_at column
# open, or aggregating under a lease that expired at b_now
_CLAIMABLE = (_table(Round).c.state == "open") | (
    (_table(Round).c.state == "aggregating")
    & (_table(Round).c.lease_expires_at < bindparam("b_now", type_=_AT))
)
_CLAIM = Prebuilt(
    update(_table(Round))
    .where(_table(Round).c.id == bindparam("b_round_id"), _CLAIMABLE)
    .values(
        state="aggregating",
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_until", type_=_AT),
    )
)
_CLAIM_AND_CLOSE = Prebuilt(
    update(_table(Round))
    .where(_table(Round).c.id == bindparam("b_round_id"), _CLAIMABLE)
    .values(
        state="closed",
        lease_owner=bindparam("b_owner"),
        result_version=bindparam("b_version"),
        closed_at=bindparam("b_closed_at", type_=_AT),
        lease_expires_at=None,
    )
)
_CLOSE = Prebuilt(
    update(_table(Round))
    .where(
        _table(Round).c.id == bindparam("b_round_id"),
        _table(Round).c.state == "aggregating",
        _table(Round).c.lease_owner == bindparam("b_owner"),
    )
    .values(
        state="closed",
        result_version=bindparam("b_version"),
        closed_at=bindparam("b_closed_at", type_=_AT),
        lease_expires_at=None,
    )
)
