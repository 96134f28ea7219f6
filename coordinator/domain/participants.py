"""Participants of a federation: enrol, list, revoke, re-enrol."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from coordinator.domain import audit
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal, credentials_changed, hash_token, new_token
from coordinator.domain.context import Context
from coordinator.domain.errors import NotFound
from coordinator.store.models import Participant, utc_now
from coordinator.store.repository import ParticipantRepository

__all__ = [
    "enrol_participant",
    "refresh_token",
    "get_participant",
    "list_participants",
    "reenrol_participant",
    "revoke_participant",
]


def enrol_participant(
    ctx: Context, principal: Principal, federation_id: str, *, name: str
) -> tuple[Participant, str]:
    """Enrol a participant; return it with its token (the only time the token is shown)."""
    principal.require_admin()
    token = new_token("frp")
    now = utc_now()
    with ctx.sessions.begin() as session:
        load_federation(session, principal, federation_id)
        participant = Participant(
            federation_id=federation_id,
            name=name,
            token_hash=hash_token(ctx.secret_key, token),
            state="active",
            created_at=now,
            token_expires_at=now + timedelta(seconds=ctx.token_ttl_seconds),
        )
        session.add(participant)
        session.flush()  # the id, for the audit event
        audit.record(
            session,
            actor=audit.actor_of(principal),
            action="enrol",
            federation_id=federation_id,
            subject=participant.id,
        )
    return participant, token


def list_participants(ctx: Context, principal: Principal, federation_id: str) -> list[Participant]:
    """Every participant of the federation, active and revoked (admin)."""
    principal.require_admin()
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return list(ParticipantRepository(session).list(federation_id))


def get_participant(ctx: Context, principal: Principal, federation_id: str) -> Participant:
    """The calling participant itself."""
    participant_id = principal.require_participant()
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        participant = ParticipantRepository(session).get(participant_id)
        if participant is None:
            raise NotFound("participant not found", slug="participant-not-found")
        return participant


def _load_participant(
    session: Session, principal: Principal, federation_id: str, participant_id: str
) -> Participant:
    load_federation(session, principal, federation_id)
    participant = ParticipantRepository(session).get(participant_id)
    if participant is None or participant.federation_id != federation_id:
        raise NotFound(
            f"participant {participant_id} is not enrolled in this federation",
            slug="participant-not-found",
        )
    return participant


def revoke_participant(
    ctx: Context, principal: Principal, federation_id: str, participant_id: str
) -> Participant:
    """Revoke a participant: its token stops working and its open-round update is ignored."""
    principal.require_admin()
    with ctx.sessions.begin() as session:
        participant = _load_participant(session, principal, federation_id, participant_id)
        if participant.state != "revoked":
            participant.state = "revoked"
            participant.revoked_at = utc_now()
            credentials_changed(session)
            audit.record(
                session,
                actor=audit.actor_of(principal),
                action="revoke",
                federation_id=federation_id,
                subject=participant_id,
            )
    # after the commit: no lookup of this process is served from before it
    ctx.principals.invalidate()
    return participant


def reenrol_participant(
    ctx: Context, principal: Principal, federation_id: str, participant_id: str
) -> tuple[Participant, str]:
    """Re-activate a participant with a fresh token (the old one stays invalid)."""
    principal.require_admin()
    token = new_token("frp")
    with ctx.sessions.begin() as session:
        participant = _load_participant(session, principal, federation_id, participant_id)
        participant.state = "active"
        participant.revoked_at = None
        participant.token_hash = hash_token(ctx.secret_key, token)
        participant.token_expires_at = utc_now() + timedelta(seconds=ctx.token_ttl_seconds)
        # no grace for the old tokens: re-enrolment replaces them at once
        participant.previous_token_hash = None
        participant.previous_token_expires_at = None
        credentials_changed(session)
        audit.record(
            session,
            actor=audit.actor_of(principal),
            action="reenrol",
            federation_id=federation_id,
            subject=participant_id,
        )
    ctx.principals.invalidate()
    return participant, token


def refresh_token(
    ctx: Context, principal: Principal, federation_id: str
) -> tuple[Participant, str]:
    """Issue the calling participant a new token (a new expiry); the token it replaces
    keeps working for the grace period, so a refresh whose response was lost can be
    retried with it (and issues yet another token)."""
    participant_id = principal.require_participant()
    token = new_token("frp")
    now = utc_now()
    with ctx.sessions.begin() as session:
        load_federation(session, principal, federation_id)
        participant = ParticipantRepository(session).get(participant_id)
        if participant is None or participant.state != "active":
            raise NotFound("participant not found", slug="participant-not-found")
        if not principal.via_previous_token:
            # called with the current token: it becomes the one in its grace period
            participant.previous_token_hash = participant.token_hash
            participant.previous_token_expires_at = now + timedelta(seconds=ctx.token_grace_seconds)
        participant.token_hash = hash_token(ctx.secret_key, token)
        participant.token_expires_at = now + timedelta(seconds=ctx.token_ttl_seconds)
        # the replaced token's entry must learn its grace deadline
        credentials_changed(session)
        audit.record(
            session,
            actor=audit.actor_of(principal),
            action="token-refresh",
            federation_id=federation_id,
            subject=participant_id,
        )
    ctx.principals.invalidate()
    return participant, token
