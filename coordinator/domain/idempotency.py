"""Idempotency-Key: a retried non-GET request gets the response of its first attempt.

The SDK sends one key per logical request and reuses it on every retry, so a retry
whose first attempt did reach the coordinator (a lost response, a timeout) does not
create a second federation or participant. Records are written only for an
authenticated caller and scoped to it (the admin, or one participant), so a key can
neither be probed nor filled by someone without a token. A key reused with a different
request is refused (422); a retry arriving while the first attempt still runs gets 409
with Retry-After. 5xx responses are not recorded, so the retry runs again.

No secret is ever stored: a response that carries one (an enrolment's token, marked
``Cache-Control: no-store`` by its route) is recorded only as what its replay answers
instead, a 409 naming the resource it created (the caller re-enrols it for a fresh
token). Records expire after ``Context.idempotency_ttl_seconds``: an expired key is
claimed again as new, and :func:`sweep_expired` deletes them (the worker's timer).

Uploads replay by key in :func:`coordinator.domain.rounds.submit_update` instead: their
bodies are large and the update row itself is the record. Evaluation reports replay by
key in their own write transaction (:func:`replay_in`, :func:`record_in`, called by
:func:`coordinator.domain.evaluation.submit_keyed_evaluation`): one COMMIT holds the
report and its record, instead of three (pending record, report, response).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import IdempotencyKeyReused, RequestInProgress
from coordinator.store.models import IdempotencyRecord, utc_now
from coordinator.store.repository import IdempotencyRepository

__all__ = [
    "MAX_KEY_LENGTH",
    "KeyedRequest",
    "StoredResponse",
    "begin",
    "finish",
    "record_in",
    "replay_in",
    "sweep_expired",
]

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    content_type: str | None
    body: str


@dataclass(frozen=True)
class KeyedRequest:
    """A request whose use case records its Idempotency-Key itself, in its own transaction."""

    key: str
    method: str
    path: str
    fingerprint: str


def _scope(principal: Principal) -> str:
    return "admin" if principal.is_admin else f"participant:{principal.participant_id}"


def begin(
    ctx: Context, principal: Principal, key: str, *, method: str, path: str, fingerprint: str
) -> str | StoredResponse:
    """Record a pending request and return its record id, or the stored response to replay.

    Raises :class:`IdempotencyKeyReused` for a key first used with another request and
    :class:`RequestInProgress` while the first attempt is still running.
    """
    scope = _scope(principal)
    commits = ctx.record_commits
    assert commits is not None  # built by Context

    def claim(session: Session) -> str | IdempotencyRecord | None:
        """The new record's id, the existing record, or None (claim again)."""
        repo = IdempotencyRepository(session)
        existing = repo.get(scope, key)
        if existing is not None and existing.created_at < _expiry(ctx):
            repo.delete(existing.id)  # expired: the key is new again
            existing = None
        if existing is not None:
            return existing
        record = IdempotencyRecord(
            principal=scope,
            key=key,
            method=method,
            path=path[:500],
            request_sha256=fingerprint,
            created_at=utc_now(),
        )
        # None: a concurrent first attempt won the unique key
        return record.id if repo.insert_pending(record) else None

    for _ in range(3):  # a record deleted meanwhile (its attempt failed): claim again
        # records written together share one commit (store/group_commit)
        outcome = commits.run(scope, claim)
        if outcome is None:
            continue
        if isinstance(outcome, str):
            return outcome
        existing = outcome
        if existing.request_sha256 != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request; use a new key"
            )
        if existing.status_code is None:
            raise RequestInProgress(
                "the first request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        return StoredResponse(
            existing.status_code, existing.content_type, existing.response_body or ""
        )
    raise RequestInProgress(
        "the first request with this Idempotency-Key is still being processed",
        headers={"Retry-After": "1"},
    )


def finish(
    ctx: Context, record_id: str, *, status_code: int | None, content_type: str | None, body: bytes
) -> None:
    """Store the response of a recorded request; forget the record after a 5xx or none."""

    def store(session: Session) -> None:
        repo = IdempotencyRepository(session)
        if status_code is None or status_code >= 500:
            repo.delete(record_id)
            return
        repo.complete(
            record_id,
            status_code=status_code,
            content_type=content_type,
            body=body.decode("utf-8", errors="replace"),
        )

    commits = ctx.record_commits
    assert commits is not None  # built by Context
    commits.run(record_id, store)


def replay_in(
    session: Session, ctx: Context, principal: Principal, request: KeyedRequest
) -> StoredResponse | None:
    """Inside the caller's write transaction: the response to replay for this key, or None
    (a new key: the caller runs the request and :func:`record_in` its response).

    Raises as :func:`begin` does for a key used with another request or still running
    (a pending record of a request recorded the middleware's way).
    """
    repo = IdempotencyRepository(session)
    existing = repo.get(_scope(principal), request.key)
    if existing is not None and existing.created_at < _expiry(ctx):
        repo.delete(existing.id)  # expired: the key is new again
        existing = None
    if existing is None:
        return None
    if existing.request_sha256 != request.fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    if existing.status_code is None:
        raise RequestInProgress(
            "the first request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )
    return StoredResponse(existing.status_code, existing.content_type, existing.response_body or "")


def record_in(
    session: Session, principal: Principal, request: KeyedRequest, response: StoredResponse
) -> None:
    """Inside the caller's write transaction: record the response the key replays; it
    commits with what the request wrote, or not at all. Raises
    :class:`RequestInProgress` if another request claimed the key meanwhile (the caller's
    transaction must then roll back, which raising does)."""
    record = IdempotencyRecord(
        principal=_scope(principal),
        key=request.key,
        method=request.method,
        path=request.path[:500],
        request_sha256=request.fingerprint,
        status_code=response.status_code,
        content_type=response.content_type,
        response_body=response.body,
        created_at=utc_now(),
    )
    if not IdempotencyRepository(session).insert(record):
        raise RequestInProgress(
            "the first request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )


def _expiry(ctx: Context) -> datetime:
    return utc_now() - timedelta(seconds=ctx.idempotency_ttl_seconds)


def sweep_expired(ctx: Context) -> int:
    """Delete the records older than the TTL; returns how many."""
    with ctx.sessions.begin() as session:
        return IdempotencyRepository(session).delete_created_before(_expiry(ctx))
