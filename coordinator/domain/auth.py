"""Bearer tokens: random, shown once, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from coordinator.domain.context import Context
from coordinator.domain.errors import Forbidden, ParticipantRevoked, Unauthorized
from coordinator.store.repository import ParticipantRepository

__all__ = ["Principal", "authenticate", "hash_token", "new_token", "principal_for_token_hash"]


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


def authenticate(ctx: Context, token: str | None) -> Principal:
    """Resolve a bearer token to a principal; raise 401 for no or unknown tokens."""
    if not token:
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' with the admin or a participant token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal_for_token_hash(ctx, hash_token(ctx.secret_key, token))


def principal_for_token_hash(ctx: Context, digest: str) -> Principal:
    """Resolve a token's keyed hash (a bearer token, or a dashboard session) to a principal."""
    # constant-time comparison: the admin hash must not leak through timing
    if hmac.compare_digest(digest, ctx.admin_token_hash):
        return Principal(is_admin=True)
    with ctx.read_sessions() as session:
        participant = ParticipantRepository(session).get_by_token_hash(digest)
    if participant is None:
        raise Unauthorized("unknown token", headers={"WWW-Authenticate": "Bearer"})
    if participant.state != "active":
        raise ParticipantRevoked(
            f"participant {participant.id} was revoked; ask the admin to re-enrol you",
            participant_id=participant.id,
        )
    return Principal(
        is_admin=False,
        participant_id=participant.id,
        federation_id=participant.federation_id,
        name=participant.name,
    )
