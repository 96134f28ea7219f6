"""Admin tokens: create (with a lifetime), list (never the secret), revoke.

Every admin token, the bootstrap one included, is an ``admin_tokens`` row holding its
keyed hash, its expiry and its revocation; :mod:`coordinator.domain.auth` resolves them.
Rotation is create, switch, revoke (docs/security.md, "Admin tokens").
"""

from __future__ import annotations

import math
from datetime import timedelta

from coordinator.domain import audit
from coordinator.domain.auth import Principal, credentials_changed, hash_token, new_token
from coordinator.domain.context import Context
from coordinator.domain.errors import LastAdminToken, NotFound, ValidationFailed
from coordinator.store.models import AdminToken, new_id, utc_now
from coordinator.store.repository import AdminTokenRepository

__all__ = [
    "MAX_EXPIRES_IN_SECONDS",
    "MIN_EXPIRES_IN_SECONDS",
    "create_admin_token",
    "list_admin_tokens",
    "revoke_admin_token",
    "token_state",
]

MIN_EXPIRES_IN_SECONDS = 60
MAX_EXPIRES_IN_SECONDS = 366 * 24 * 3600  # a year: longer-lived admin tokens are refused


def token_state(row: AdminToken) -> str:
    """``active``, ``expired`` or ``revoked`` (now)."""
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if utc_now() >= row.expires_at else "active"


def create_admin_token(
    ctx: Context, principal: Principal, *, name: str, expires_in_seconds: float | None = None
) -> tuple[AdminToken, str]:
    """A new admin token expiring ``expires_in_seconds`` from now (default: the configured
    ``admin_token_ttl_seconds``); returned with the token, shown only this once."""
    principal.require_admin()
    seconds = ctx.admin_token_ttl_seconds if expires_in_seconds is None else expires_in_seconds
    if expires_in_seconds is not None and not (
        math.isfinite(seconds) and MIN_EXPIRES_IN_SECONDS <= seconds <= MAX_EXPIRES_IN_SECONDS
    ):
        raise ValidationFailed(
            f"expires_in_seconds must be between {MIN_EXPIRES_IN_SECONDS} and "
            f"{MAX_EXPIRES_IN_SECONDS} (366 days), got {expires_in_seconds}"
        )
    token = new_token("fra")
    now = utc_now()
    row = AdminToken(
        id=new_id(),
        name=name,
        kind="issued",
        token_hash=hash_token(ctx.secret_key, token),
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
        revoked_at=None,
        created_by=_actor(principal),
    )
    with ctx.sessions.begin() as session:
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=audit.actor_of(principal),
            action="admin-token-create",
            subject=row.id,
            detail={
                "kind": "issued",
                "expires_at": row.expires_at.isoformat(),
                "by_token": principal.admin_token_id,
            },
        )
    return row, token


def list_admin_tokens(ctx: Context, principal: Principal) -> list[AdminToken]:
    """Every admin token, active, expired and revoked, oldest first (no secrets)."""
    principal.require_admin()
    with ctx.read_sessions() as session:
        return list(AdminTokenRepository(session).list())


def revoke_admin_token(ctx: Context, principal: Principal, token_id: str) -> AdminToken:
    """Revoke an admin token: it stops working in every process within 0.5 s (in this
    one at once). The last active admin token is not revoked (409): create another
    first, so the API keeps an admin."""
    principal.require_admin()
    now = utc_now()
    with ctx.sessions.begin() as session:
        repo = AdminTokenRepository(session)
        row = repo.get(token_id)
        if row is None:
            raise NotFound(f"admin token {token_id} does not exist", slug="admin-token-not-found")
        if row.revoked_at is None:
            others = [other for other in repo.active(now, for_update=True) if other.id != row.id]
            if now < row.expires_at and not others:
                raise LastAdminToken(
                    f"admin token {token_id} is the last active one: create another "
                    "(POST /v1/admin/tokens) before revoking it",
                    admin_token_id=token_id,
                )
            row.revoked_at = now
            credentials_changed(session)
            audit.record(
                session,
                actor=audit.actor_of(principal),
                action="admin-token-revoke",
                subject=row.id,
                detail={"kind": row.kind, "by_token": principal.admin_token_id},
            )
    # after the commit: no lookup of this process is served from before it
    ctx.principals.invalidate()
    return row


def _actor(principal: Principal) -> str:
    if principal.admin_token_id is None:
        return "admin"
    return f"admin-token:{principal.admin_token_id}"
