"""Participants: enrol, list, revoke, who-am-I."""

from fastapi import APIRouter, status

from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.schemas import (
    EnrolledParticipant,
    Participant,
    ParticipantCreate,
    ParticipantList,
)
from coordinator.domain import participants

router = APIRouter(prefix="/federations/{federation_id}/participants", tags=["participants"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EnrolledParticipant)
def enrol_participant(
    federation_id: str, body: ParticipantCreate, ctx: ContextDep, admin: AdminDep
) -> EnrolledParticipant:
    """Enrol a participant; the response carries its token, shown only this once."""
    participant, token = participants.enrol_participant(ctx, admin, federation_id, name=body.name)
    return _with_token(participant, token)


def _with_token(participant: object, token: str) -> EnrolledParticipant:
    return EnrolledParticipant.model_validate(
        {**Participant.model_validate(participant).model_dump(), "token": token}
    )


@router.get("", response_model=ParticipantList)
def list_participants(federation_id: str, ctx: ContextDep, admin: AdminDep) -> ParticipantList:
    """List the federation's participants (never their tokens)."""
    rows = participants.list_participants(ctx, admin, federation_id)
    return ParticipantList(items=[Participant.model_validate(r) for r in rows])


@router.get("/me", response_model=Participant)
def get_me(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Participant:
    """The calling participant."""
    return Participant.model_validate(participants.get_participant(ctx, principal, federation_id))


@router.post("/me/token", response_model=EnrolledParticipant)
def refresh_token(
    federation_id: str, ctx: ContextDep, principal: PrincipalDep
) -> EnrolledParticipant:
    """A new token for the calling participant, with a new expiry; the token used for this
    call keeps working for a short grace (never replayed from an Idempotency-Key)."""
    participant, token = participants.refresh_token(ctx, principal, federation_id)
    return _with_token(participant, token)


@router.delete("/{participant_id}", response_model=Participant)
def revoke_participant(
    federation_id: str, participant_id: str, ctx: ContextDep, admin: AdminDep
) -> Participant:
    """Revoke a participant: its token stops working at once."""
    row = participants.revoke_participant(ctx, admin, federation_id, participant_id)
    return Participant.model_validate(row)


@router.post("/{participant_id}/reenrol", response_model=EnrolledParticipant)
def reenrol_participant(
    federation_id: str, participant_id: str, ctx: ContextDep, admin: AdminDep
) -> EnrolledParticipant:
    """Re-activate a (revoked) participant with a fresh token, shown only this once."""
    participant, token = participants.reenrol_participant(ctx, admin, federation_id, participant_id)
    return _with_token(participant, token)
