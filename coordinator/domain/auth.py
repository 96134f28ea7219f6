"""Bearer tokens: random, shown once, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from coordinator.domain import audit
from coordinator.domain.context import Context
from coordinator.domain.errors import Forbidden, ParticipantRevoked, TokenExpired, Unauthorized
from coordinator.store.models import Participant, utc_now
from coordinator.store.repository import AuthGenerationRepository, ParticipantRepository

__all__ = [
    "Principal",
    "authenticate",
    "cached_principal",
    "cached_principal_for_hash",
    "credentials_changed",
    "hash_token",
    "new_token",
    "principal_for_token_hash",
]


def new_token(prefix: str) -> str:
    """A fresh bearer token with 256 bits of randomness."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(secret_key: bytes, token: str) -> str:
    # keyed: a leaked database alone does not allow offline guessing of tokens
    return hmac.new(secret_key, token.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one participant of one federation."""

    is_admin: bool
    participant_id: str | None = None
    federation_id: str | None = None
    name: str = "admin"
    # authenticated with the token a refresh replaced (valid for the grace period only)
    via_previous_token: bool = False

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this operation needs the admin token")

    def require_participant(self) -> str:
        if self.participant_id is None:
            raise Forbidden("this operation needs a participant token")
        return self.participant_id

    def check_federation(self, federation_id: str) -> None:
        if not self.is_admin and self.federation_id != federation_id:
            raise Forbidden("this participant token belongs to another federation")


def authenticate(ctx: Context, token: str | None, *, audit_failure: bool = True) -> Principal:
    """Resolve a bearer token to a principal; raise 401 for no or unknown tokens.

    An unknown, revoked or expired token is an audit event (``audit_failure``: the idempotency
    middleware, which authenticates first and lets the app answer, passes False so a
    request is recorded once). A missing token is not: it is a client that forgot it.
    """
    if not token:
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' with the admin or a participant token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal_for_token_hash(
        ctx, hash_token(ctx.secret_key, token), audit_failure=audit_failure
    )


def cached_principal(ctx: Context, token: str) -> Principal | None:
    """The token's principal if this process authenticated it moments ago (no database
    read: safe on the event loop); None: call :func:`authenticate`."""
    return cached_principal_for_hash(ctx, hash_token(ctx.secret_key, token))


def cached_principal_for_hash(ctx: Context, digest: str) -> Principal | None:
    """:func:`cached_principal` of a token's keyed hash (a caller that needs the hash too
    computes it once)."""
    if hmac.compare_digest(digest, ctx.admin_token_hash):
        return Principal(is_admin=True)
    return _fresh(ctx.principals.get(digest), utc_now())


def credentials_changed(session: Session) -> None:
    """In a transaction that revokes, re-enrols or re-tokens a participant: every process's
    token cache drops its entries at its next generation check. The process that commits
    it also calls ``ctx.principals.invalidate()`` after the commit (at once, here)."""
    AuthGenerationRepository(session).bump()


def principal_for_token_hash(ctx: Context, digest: str, *, audit_failure: bool = True) -> Principal:
    """Resolve a token's keyed hash (a bearer token, or a dashboard session) to a principal."""
    # constant-time comparison: the admin hash must not leak through timing
    if hmac.compare_digest(digest, ctx.admin_token_hash):
        return Principal(is_admin=True)
    generation = ctx.principals.generation(lambda: _read_generation(ctx))
    now = utc_now()
    cached = _fresh(ctx.principals.get(digest), now)
    if cached is not None:
        return cached
    via_previous = False
    with ctx.read_sessions() as session:
        repo = ParticipantRepository(session)
        participant = repo.get_by_token_hash(digest)
        if participant is None:
            # a token replaced by a refresh works until its grace ends
            previous = repo.get_by_previous_token_hash(digest)
            grace_end = previous.previous_token_expires_at if previous else None
            if previous is not None and grace_end is not None and now < grace_end:
                participant, via_previous = previous, True
    if participant is None:
        if audit_failure:
            # the digest's prefix tells repeated guesses apart; the token itself is never kept
            audit.record_now_quietly(
                ctx,
                actor="anonymous",
                action="auth-failure",
                outcome="refused",
                detail={"token_hash_prefix": digest[:12]},
            )
        raise Unauthorized("unknown token", headers={"WWW-Authenticate": "Bearer"})
    if participant.state != "active":
        if audit_failure:
            _audit_refusal(ctx, participant, "revoked")
        raise ParticipantRevoked(
            f"participant {participant.id} was revoked; ask the admin to re-enrol you",
            participant_id=participant.id,
        )
    expires = participant.token_expires_at
    if not via_previous and expires is not None and now >= expires:
        if audit_failure:
            _audit_refusal(ctx, participant, "token-expired")
        raise TokenExpired(
            f"this token expired at {expires.isoformat()}; the SDK refreshes tokens before "
            "they expire (POST …/participants/me/token): ask the admin to re-enrol you",
            headers={"WWW-Authenticate": "Bearer"},
            expired_at=expires.isoformat(),
        )
    principal = Principal(
        is_admin=False,
        participant_id=participant.id,
        federation_id=participant.federation_id,
        name=participant.name,
        via_previous_token=via_previous,
    )
    # never past the token's own end: its expiry, or the end of a replaced token's grace
    ends = participant.previous_token_expires_at if via_previous else expires
    ctx.principals.put(digest, (principal, ends), generation)
    return principal


def _fresh(entry: tuple[Principal, datetime | None] | None, now: datetime) -> Principal | None:
    """A cached principal, unless its token expired (or its grace ended) since."""
    if entry is None:
        return None
    principal, ends = entry
    return principal if ends is None or now < ends else None


def _read_generation(ctx: Context) -> int | None:
    with ctx.read_sessions() as session:
        return AuthGenerationRepository(session).read()


def _audit_refusal(ctx: Context, participant: Participant, reason: str) -> None:
    """A real participant's token was refused (revoked or expired): an audit event."""
    audit.record_now_quietly(
        ctx,
        actor=f"participant:{participant.id}",
        action="auth-failure",
        federation_id=participant.federation_id,
        outcome="refused",
        detail={"reason": reason},
    )
