"""Participants of a federation: enrol, list, revoke, re-enrol."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal, hash_token, new_token
from coordinator.domain.context import Context
from coordinator.domain.errors import NotFound
from coordinator.store.models import Participant, utc_now
from coordinator.store.repository import ParticipantRepository

__all__ = [
    "enrol_participant",
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
    with ctx.sessions.begin() as session:
        load_federation(session, principal, federation_id)
        participant = Participant(
            federation_id=federation_id,
            name=name,
            token_hash=hash_token(ctx.secret_key, token),
            state="active",
            created_at=utc_now(),
        )
        session.add(participant)
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
    return participant, token
