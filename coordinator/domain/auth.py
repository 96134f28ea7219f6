"""Bearer tokens: random, shown once, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from coordinator.domain import audit
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    Forbidden,
    ParticipantRevoked,
    TokenExpired,
    TokenRevoked,
    Unauthorized,
)
from coordinator.store.models import AdminToken, Participant, new_id, utc_now
from coordinator.store.repository import (
    AdminTokenRepository,
    AuthGenerationRepository,
    ParticipantRepository,
)

__all__ = [
    "Principal",
    "authenticate",
    "cached_principal",
    "cached_principal_for_hash",
    "credentials_changed",
    "hash_token",
    "new_token",
    "principal_for_token_hash",
    "register_bootstrap_token",
    "renewal_hint",
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
    # the admin token's id (admin_tokens row): audit events of token changes name it
    admin_token_id: str | None = None
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
    return _fresh(ctx.principals.get(digest), utc_now())


def credentials_changed(session: Session) -> None:
    """In a transaction that revokes, re-enrols or re-tokens a participant, or revokes an
    admin token: every process's token cache drops its entries at its next generation
    check. The process that commits it also calls ``ctx.principals.invalidate()`` after
    the commit (at once, here)."""
    AuthGenerationRepository(session).bump()


def principal_for_token_hash(ctx: Context, digest: str, *, audit_failure: bool = True) -> Principal:
    """Resolve a token's keyed hash (a bearer token, or a dashboard session) to a principal:
    a participant's token, or an admin token (the bootstrap one is registered at its first
    use if no start registered it)."""
    generation = ctx.principals.generation(lambda: _read_generation(ctx))
    now = utc_now()
    cached = _fresh(ctx.principals.get(digest), now)
    if cached is not None:
        return cached
    via_previous = False
    admin: AdminToken | None = None
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
            admin = AdminTokenRepository(session).get_by_token_hash(digest)
    # constant-time: the comparison must not tell how much of the hash matched
    if (
        participant is None
        and admin is None
        and hmac.compare_digest(digest, ctx.bootstrap_token_hash)
    ):
        admin = register_bootstrap_token(ctx)
    if admin is not None:
        return _admin_principal(ctx, admin, digest, now, generation, audit_failure=audit_failure)
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


def renewal_hint(kind: str) -> str:
    """How to get a working admin token instead of an expired or revoked one."""
    if kind == "bootstrap":
        return (
            "set a new FEDREC_ADMIN_TOKEN, or delete data_dir/admin_token to have one "
            "generated, and restart the coordinator (the new bootstrap token revokes this "
            "one); or create a token with another admin token: `fedrec admin-tokens create`"
        )
    return (
        "create a new one with a valid admin token (`fedrec admin-tokens create`, POST "
        "/v1/admin/tokens), or use the bootstrap token (FEDREC_ADMIN_TOKEN or "
        "data_dir/admin_token)"
    )


def _admin_principal(
    ctx: Context,
    row: AdminToken,
    digest: str,
    now: datetime,
    generation: int | None,
    *,
    audit_failure: bool,
) -> Principal:
    """The admin principal of a live admin token; 401 for a revoked or expired one."""
    label = "the bootstrap admin token" if row.kind == "bootstrap" else "this admin token"
    label = f"{label} ({row.name!r}, id {row.id})"
    if row.revoked_at is not None:
        if audit_failure:
            _audit_admin_refusal(ctx, row, "revoked")
        raise TokenRevoked(
            f"{label} was revoked at {row.revoked_at.isoformat()}: {renewal_hint(row.kind)}",
            headers={"WWW-Authenticate": "Bearer"},
            admin_token_id=row.id,
        )
    if now >= row.expires_at:
        if audit_failure:
            _audit_admin_refusal(ctx, row, "token-expired")
        raise TokenExpired(
            f"{label} expired at {row.expires_at.isoformat()}: {renewal_hint(row.kind)}",
            headers={"WWW-Authenticate": "Bearer"},
            expired_at=row.expires_at.isoformat(),
            admin_token_id=row.id,
        )
    principal = Principal(is_admin=True, admin_token_id=row.id)
    ctx.principals.put(digest, (principal, row.expires_at), generation)
    return principal


def register_bootstrap_token(ctx: Context) -> AdminToken:
    """The bootstrap admin token's row, inserted (``admin_token_ttl_seconds`` of life) if
    it has none yet: a coordinator's start, or the first use by a process that did not
    start one. A newly registered bootstrap token revokes the bootstrap tokens before it
    (a changed FEDREC_ADMIN_TOKEN, a regenerated data_dir/admin_token). Idempotent, and
    safe when replicas start together (one insert wins)."""
    now = utc_now()
    row = AdminToken(
        id=new_id(),
        name="bootstrap",
        kind="bootstrap",
        token_hash=ctx.bootstrap_token_hash,
        created_at=now,
        expires_at=now + timedelta(seconds=ctx.admin_token_ttl_seconds),
        revoked_at=None,
        created_by="coordinator",
    )
    with ctx.sessions.begin() as session:
        repo = AdminTokenRepository(session)
        inserted = repo.insert_if_absent(row)
        if inserted:
            replaced = repo.revoke_other_bootstraps(ctx.bootstrap_token_hash, now)
            if replaced:
                credentials_changed(session)
            audit.record(
                session,
                actor="coordinator",
                action="admin-token-create",
                subject=row.id,
                detail={
                    "kind": "bootstrap",
                    "expires_at": row.expires_at.isoformat(),
                    "revoked_bootstrap_tokens": replaced,
                },
            )
        found = repo.get_by_token_hash(ctx.bootstrap_token_hash)
        assert found is not None  # inserted now, or by whoever won the insert
    if inserted:
        ctx.principals.invalidate()
    return found


def _fresh(entry: tuple[Principal, datetime | None] | None, now: datetime) -> Principal | None:
    """A cached principal, unless its token expired (or its grace ended) since."""
    if entry is None:
        return None
    principal, ends = entry
    return principal if ends is None or now < ends else None


def _read_generation(ctx: Context) -> int | None:
    with ctx.read_sessions() as session:
        return AuthGenerationRepository(session).read()


def _audit_admin_refusal(ctx: Context, row: AdminToken, reason: str) -> None:
    """A real admin token was refused (revoked or expired): an audit event."""
    audit.record_now_quietly(
        ctx,
        actor=f"admin-token:{row.id}",
        action="auth-failure",
        outcome="refused",
        detail={"reason": reason, "kind": row.kind},
    )


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
