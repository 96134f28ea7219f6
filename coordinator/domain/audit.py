"""The audit log: an append-only, HMAC-chained record of security-relevant events.

Each event's ``hash`` is HMAC-SHA256, under the audit key, of the previous event's hash
and the event's canonical fields. The key is a secret of its own (``FEDREC_AUDIT_KEY``
or ``data_dir/audit_key``), not in the database: whoever can write the database can
delete or edit rows, but cannot recompute the chain, so :func:`verify_audit` names the
first event that was changed, removed, or inserted, and the head row notices events
deleted from the end.

Appends take the head row's lock (``FOR UPDATE``; SQLite's writer lock already orders
them), in the caller's transaction, so an event commits exactly when what it describes
commits. The key reaches transitions that only hold a ``Session`` through
``session.info`` (set on the write-session factory by the composition root).

Events never carry a token, a tensor or a request body: ids, digests, slugs, counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from coordinator.domain.context import Context
from coordinator.store.models import AuditEvent, utc_now
from coordinator.store.repository import AuditEntry, AuditRepository

if TYPE_CHECKING:  # auth records its failures here: no import cycle at run time
    from coordinator.domain.auth import Principal

__all__ = [
    "AUDIT_KEY_INFO",
    "AUDIT_TAIL_INFO",
    "AuditTail",
    "AuditReport",
    "actor_of",
    "list_events",
    "record",
    "record_now",
    "record_now_quietly",
    "record_refusal",
    "verify_audit",
]

log = logging.getLogger("fedrec.audit")

AUDIT_KEY_INFO = "fedrec.audit_key"
AUDIT_TAIL_INFO = "fedrec.audit_tail"
GENESIS = "00" * 32
MAX_PAGE = 500


def actor_of(principal: Principal | None) -> str:
    """``admin``, ``participant:<id>``, or ``anonymous`` (no valid token)."""
    if principal is None:
        return "anonymous"
    if principal.is_admin:
        return "admin"
    return f"participant:{principal.participant_id}"


def _event_hash(key: bytes, prev: str, event: AuditEvent | AuditEntry) -> str:
    fields = {
        "seq": event.seq,
        "created_at": event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "federation_id": event.federation_id,
        "subject": event.subject,
        "outcome": event.outcome,
        "detail": event.detail,
    }
    message = prev.encode() + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    federation_id: str | None = None,
    subject: str | None = None,
    outcome: str = "ok",
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Append one event in the caller's (write) transaction."""
    key = session.info.get(AUDIT_KEY_INFO)
    if not isinstance(key, bytes):
        raise RuntimeError("this session factory carries no audit key (see build_context)")
    # Core statements and plain values, not ORM objects: every upload appends one event,
    # and the unit of work's flush, then the ORM object's attribute sets, were most of
    # the append's cost
    repo = AuditRepository(session)
    event = AuditEntry(
        created_at=now or utc_now(),
        actor=actor[:80],
        action=action,
        federation_id=federation_id,
        subject=None if subject is None else subject[:100],
        outcome=outcome,
        detail=dict(detail or {}),
    )
    tail = session.info.get(AUDIT_TAIL_INFO)
    if isinstance(tail, AuditTail) and tail.last is not None:
        # one statement: the event, inserted only if the head is still the one this
        # process saw last (the insert moves the head)
        _chain(key, event, *tail.last)
        if repo.append_after(event):
            tail.last = (event.seq, event.hash)
            return
    # no guess, or another process (or a rolled-back transaction) moved the head: read
    # it, locked, and chain to it
    _chain(key, event, *repo.head_for_append())
    repo.append(event)
    if isinstance(tail, AuditTail):
        tail.last = (event.seq, event.hash)


def _chain(key: bytes, event: AuditEntry, seq: int, prev: str) -> None:
    """Make ``event`` the one after the event ``seq`` whose hash is ``prev``."""
    event.seq = seq + 1
    event.prev_hash = prev
    event.hash = _event_hash(key, prev, event)


class AuditTail:
    """The chain's head as this process last wrote or read it: a guess, which an append
    checks in its own INSERT (:meth:`AuditRepository.append_after`). A stale guess
    (another process appended since, or the transaction that appended rolled back)
    costs the head read the guess saves, never a broken chain. One per write-session
    factory (``session.info[AUDIT_TAIL_INFO]``, set by the composition root)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[int, str] | None = None


def record_now(ctx: Context, **fields: Any) -> None:
    """Append one event in a transaction of its own (refusals, failed authentication:
    nothing else commits for them)."""
    with ctx.sessions.begin() as session:
        record(session, **fields)


def record_now_quietly(ctx: Context, **fields: Any) -> None:
    """:func:`record_now` whose failure (a busy database) is logged, not raised: the
    answer to the caller must not depend on the audit write."""
    try:
        record_now(ctx, **fields)
    except Exception:
        log.exception("could not append the audit event %s", fields.get("action"))


def record_refusal(
    ctx: Context, principal: Principal, *, action: str, federation_id: str, subject: str, slug: str
) -> None:
    """A refused request (4xx): who, what, and the problem slug that says why."""
    record_now_quietly(
        ctx,
        actor=actor_of(principal),
        action=action,
        federation_id=federation_id,
        subject=subject,
        outcome="refused",
        detail={"problem": slug},
    )


@dataclass
class AuditReport:
    checked: int
    bad_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_seq is None


def verify_audit(ctx: Context, *, batch: int = 1000) -> AuditReport:
    """Recompute the chain up to the head read first (events appended meanwhile are left
    for the next run); name the first event that does not hold."""
    with ctx.read_sessions() as session:
        head = AuditRepository(session).head()
        head_seq, head_hash = head.seq, head.hash
    prev, checked = GENESIS, 0
    while checked < head_seq:
        with ctx.read_sessions() as session:
            events = list(AuditRepository(session).page(after=checked, limit=batch))
        events = [e for e in events if e.seq <= head_seq]
        if not events:
            break
        for event in events:
            expected = checked + 1
            if event.seq != expected:
                return AuditReport(checked, expected, f"event {expected} is missing")
            if event.prev_hash != prev or event.hash != _event_hash(ctx.audit_key, prev, event):
                return AuditReport(checked, event.seq, "the event was changed")
            prev, checked = event.hash, expected
    if checked != head_seq or prev != head_hash:
        return AuditReport(
            checked,
            checked + 1,
            f"the head says {head_seq} events but the chain holds {checked}: events were "
            "deleted, or the head was edited",
        )
    return AuditReport(checked)


def list_events(
    ctx: Context, principal: Principal, *, after: int = 0, limit: int = 100
) -> list[AuditEvent]:
    """One page of events after ``after`` (admin only), oldest first."""
    principal.require_admin()
    with ctx.read_sessions() as session:
        return list(AuditRepository(session).page(after=after, limit=min(limit, MAX_PAGE)))
