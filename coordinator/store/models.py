"""SQLAlchemy 2.0 tables. Alembic migrations in ``migrations/`` are the only way they change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AdminToken",
    "AuditEvent",
    "AuthGeneration",
    "AuditHead",
    "Base",
    "Blob",
    "BlobChunk",
    "Deployment",
    "Evaluation",
    "Federation",
    "IdempotencyRecord",
    "ModelVersion",
    "Participant",
    "Round",
    "SecAggMaskedInput",
    "SecAggShareCiphertext",
    "SecAggState",
    "Update",
    "new_id",
    "utc_now",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps naive UTC text that sorts right)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 - signature fixed by TypeDecorator
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_N_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Federation(Base):
    __tablename__ = "federations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="active")
    model_spec: Mapped[dict[str, Any]]
    strategy: Mapped[dict[str, Any]]
    round_policy: Mapped[dict[str, Any]]
    target: Mapped[dict[str, Any] | None]
    deploy_policy: Mapped[dict[str, Any]]
    privacy: Mapped[dict[str, Any]]
    # bounds on what participants report (specs.LimitsPolicy); null: the defaults
    limits: Mapped[dict[str, Any] | None]
    # how updates and downloads travel (specs.TransportPolicy); null: float32
    transport: Mapped[dict[str, Any] | None]
    # loaded only when read (GET …/catalog): thousands of ids, JSON-decoded on every
    # load of the row otherwise, and nearly every request loads its federation
    catalog: Mapped[list[Any] | None] = mapped_column(deferred=True)
    current_round: Mapped[int | None] = mapped_column(Integer)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    # rounds that produced a version; max_rounds counts these
    completed_rounds: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (
        # every upload's guarded count counts its federation's active participants: from
        # this index alone, not their rows; also the index of federation_id alone
        # (0017_upload_indexes)
        Index("ix_participants_federation_state", "federation_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # keyed hash (HMAC-SHA256) of the bearer token; the token itself is never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # token rotation: the current token expires (None: issued before expiry existed); a
    # refresh keeps the token it replaced valid for a short grace (its hash and deadline)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    previous_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("federation_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    federation_id: Mapped[str] = mapped_column(
        ForeignKey("federations.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="open")
    base_version: Mapped[int] = mapped_column(Integer)
    result_version: Mapped[int | None] = mapped_column(Integer)
    update_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # compare-and-set lease of the process aggregating this round
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # client sampling (rounds.sampling): a sampled round draws its cohort once, when it
    # opens or (fewer than rounds.min_participants active then) once enough are: how many
    # were drawn (the round_cohorts rows) out of how many active participants, both null
    # until the draw; an unsampled round's cohort is every active participant
    sampled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cohort_size: Mapped[int | None] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(Integer)


class AuthGeneration(Base):
    """One row: a counter bumped in every transaction that revokes, re-enrols or re-tokens a
    participant, so each process's cache of authenticated tokens (domain/token_cache.py)
    learns by one cheap read that its entries may be stale."""

    __tablename__ = "auth_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class AdminToken(Base):
    """An admin bearer token: its keyed hash, lifetime and revocation (never the token).

    ``kind`` ``bootstrap``: the token of ``FEDREC_ADMIN_TOKEN`` or ``data_dir/admin_token``,
    registered when a coordinator first starts with it; ``issued``: created through
    ``POST /v1/admin/tokens``."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the audit actor that created it (``admin-token:<id>``, or ``coordinator``)
    created_by: Mapped[str] = mapped_column(String(80))


class RoundCohortMember(Base):
    """One participant drawn into a sampled round's cohort (never changes once written)."""

    __tablename__ = "round_cohorts"

    round_id: Mapped[str] = mapped_column(
        ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True
    )
    participant_id: Mapped[str] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class SecAggState(Base):
    """One round's secure-aggregation state (``coordinator.domain.secagg.SecAggRound``).

    Rewritten after every change under the round's row lock, so a restarted coordinator or
    another replica resumes the protocol where it stood.
    """

    __tablename__ = "secagg_states"

    round_id: Mapped[str] = mapped_column(
        ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True
    )
    federation_id: Mapped[str] = mapped_column(
        ForeignKey("federations.id", ondelete="CASCADE"), index=True
    )
    round_number: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(20))
    # when the current phase closes without the participants that have not answered
    phase_deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # SecAggRound.to_dict() as JSON text without the masked inputs (secagg_masked_inputs)
    # and without the share ciphertexts (secagg_share_ciphertexts): only who shared
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class SecAggMaskedInput(Base):
    """One participant's masked input of a secure-aggregation round, in a row of its own so
    that a message does not rewrite every other participant's input (deleted when the round's
    protocol ends)."""

    __tablename__ = "secagg_masked_inputs"

    round_id: Mapped[str] = mapped_column(
        ForeignKey("secagg_states.round_id", ondelete="CASCADE"), primary_key=True
    )
    participant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    words: Mapped[bytes] = mapped_column(LargeBinary)


class SecAggShareCiphertext(Base):
    """One encrypted share message of a secure-aggregation round, sender to recipient, in a
    row of its own: a round of n participants holds up to n(n-1) of them (n·k with a sparse
    graph), too many to rewrite in the state row on every message. Indexed by recipient,
    which is how they are read (a participant's inbox); deleted when the protocol ends."""

    __tablename__ = "secagg_share_ciphertexts"
    __table_args__ = (Index("ix_secagg_share_ciphertexts_recipient", "round_id", "recipient_id"),)

    round_id: Mapped[str] = mapped_column(
        ForeignKey("secagg_states.round_id", ondelete="CASCADE"), primary_key=True
    )
    sender_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class Update(Base):
    __tablename__ = "updates"
    __table_args__ = (
        # also the index of round_id alone (a round's updates, the foreign key's cascade)
        UniqueConstraint("round_id", "participant_id"),
        # an upload retried with its Idempotency-Key finds the update it created; also the
        # index of participant_id alone. Every index here is a page every upload writes:
        # none repeats another's leading column (0017_upload_indexes)
        Index("ix_updates_participant_idempotency_key", "participant_id", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    round_number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    # 64-bit: a federation may allow more than 2^31 examples (limits.max_num_examples)
    num_examples: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("federation_id", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    federation_id: Mapped[str] = mapped_column(
        ForeignKey("federations.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    round_number: Mapped[int | None] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    contributors: Mapped[list[Any]]
    # blob of the server optimizer's state after this version (None: stateless optimizer)
    server_state_sha256: Mapped[str | None] = mapped_column(String(64))
    # back-off of a diverging federation (domain/backoff.py): the server step's scale used
    # to make this version (the next round inherits it), and the version whose weights a
    # collapse restored
    step_scale: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    restored_from: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    # the canonical manifest (participant_sdk.wire.encode_manifest) and its base64 Ed25519
    # signature by the coordinator's lineage key (domain/signing.py); None before 0006
    manifest: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[str | None] = mapped_column(String(100))
    # the weights in the federation's compressed encoding, signed by the manifest:
    # {"float16": {"sha256": ..., "size": ...}}; null: float32 only
    encodings: Mapped[dict[str, Any] | None]
    # the (epsilon, delta) spent up to this version, computed once when it is recorded
    # (a PLD can take seconds) and signed in its manifest; null without DP
    privacy_spent: Mapped[dict[str, Any] | None]


class Evaluation(Base):
    __tablename__ = "evaluations"
    # also the index of federation_id alone (every upload's report writes these pages:
    # 0017_upload_indexes dropped the one that repeated its leading column)
    __table_args__ = (UniqueConstraint("federation_id", "version", "split", "participant_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(20))
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    metrics: Mapped[dict[str, Any]]
    num_users: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Deployment(Base):
    """One promotion or roll-back; the newest row per federation is the live version."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_federation_seq", "federation_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(50))
    metric_value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class IdempotencyRecord(Base):
    """The response to a non-GET request sent with an ``Idempotency-Key``, for replays."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # keyed hash of the caller's credentials: keys are scoped to one caller
    principal: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_sha256: Mapped[str] = mapped_column(String(64))
    # a response that carried a secret (an enrolment's token) is never stored: its replay
    # is a problem naming what was created (coordinator.domain.idempotency)
    # null while the first request is still being processed
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    response_body: Mapped[str | None] = mapped_column(Text)
    # records expire (FEDREC_IDEMPOTENCY_TTL_SECONDS); the worker sweeps by this index
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)


class Blob(Base):
    """A blob of the ``postgres`` or ``s3`` blob store (coordinator/store/blob_index.py).

    The row says the blob is stored: for ``postgres`` (and the small blobs of ``local``)
    its bytes are ``data`` when they fit one chunk, else the chunks below, written in the
    same transaction; for ``s3`` they are an object in the bucket.
    """

    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # last stored (again): the collector's grace period counts from here
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # the bytes of a blob of one chunk at most, written by the INSERT that registers it
    # (an upload's blob is one statement); None: chunks (or an s3 object, or empty)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class BlobChunk(Base):
    """The bytes of a ``postgres`` blob, in order; chunks keep each value far below bytea's
    1 GB limit and let a read stream them."""

    __tablename__ = "blob_chunks"

    digest: Mapped[str] = mapped_column(
        ForeignKey("blobs.digest", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """One security-relevant event; append-only, HMAC-chained (domain/audit.py).

    No federation foreign key: the record outlives what it describes. Never holds a
    token, a tensor or a request body, only ids, digests, slugs and small numbers.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    # not indexed: every audited transaction (every upload) would write a page of it, and
    # the log is read by seq only (0017_upload_indexes dropped the index)
    federation_id: Mapped[str | None] = mapped_column(String(36))
    subject: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's newest (seq, hash), one row: its row lock orders appends on every
    backend, and it lets verification notice events deleted from the end. An event's
    INSERT moves it (the trigger ``audit_events_move_head``, migration 0016, and below
    for ``create_all``)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


# the audit head follows every inserted event, in the INSERT's own statement (migration
# 0016_upload_statements creates the same trigger; these are for metadata.create_all)
_MOVE_HEAD = "UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;"
_ON_INSERT = "CREATE TRIGGER audit_events_move_head AFTER INSERT ON audit_events FOR EACH ROW "
for _dialect, _statements in (
    ("sqlite", [f"{_ON_INSERT}BEGIN {_MOVE_HEAD} END"]),
    (
        "postgresql",
        [
            "CREATE FUNCTION audit_events_move_head() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_MOVE_HEAD} RETURN NULL; END $$",
            f"{_ON_INSERT}EXECUTE FUNCTION audit_events_move_head()",
        ],
    ),
):
    for _statement in _statements:
        event.listen(
            AuditEvent.__table__,
            "after_create",
            DDL(_statement).execute_if(dialect=_dialect),  # type: ignore[no-untyped-call]
        )
