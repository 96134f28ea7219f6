"""Participants: enrol, list, revoke, who-am-I."""

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from coordinator.api import examples
from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import (
    body_examples,
    keyed_write,
    problem,
    problems,
    secret_not_replayable,
    success,
)
from coordinator.api.schemas import (
    EnrolledParticipant,
    Participant,
    ParticipantCreate,
    ParticipantList,
)
from coordinator.domain import participants

router = APIRouter(
    route_class=JsonOffLoopRoute,
    prefix="/federations/{federation_id}/participants",
    tags=["participants"],
)

_ADMIN = problem(403, "Only the admin manages participants")
_NO_FEDERATION = problem(404, "No such federation")
_NO_PARTICIPANT = problem(
    404,
    "No such federation, or the participant is not enrolled in it",
    slug="participant-not-found",
    detail=f"participant {examples.PID} is not enrolled in this federation",
)
# overrides keyed_write's 409: an enrolment's Idempotency-Key never replays its token
_NOT_REPLAYABLE = secret_not_replayable(
    "enrolled",
    f"re-enrol participant {examples.PID} (POST …/participants/{examples.PID}/reenrol) "
    "for a fresh token",
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrolledParticipant,
    summary="Enrol a participant",
    responses=success(201, "The participant and its token", examples.ENROLLED_PARTICIPANT)
    | _ADMIN
    | _NO_FEDERATION
    | problems(413)
    | keyed_write()
    | _NOT_REPLAYABLE,
)
def enrol_participant(
    federation_id: str,
    body: Annotated[
        ParticipantCreate,
        Body(openapi_examples=body_examples(shop=("A shop", examples.PARTICIPANT_CREATE))),
    ],
    response: Response,
    ctx: ContextDep,
    admin: AdminDep,
) -> EnrolledParticipant:
    """Enrol a participant; the response carries its token, shown only this once."""
    participant, token = participants.enrol_participant(ctx, admin, federation_id, name=body.name)
    return _with_token(response, participant, token)


def _with_token(response: Response, participant: object, token: str) -> EnrolledParticipant:
    # no-store: no cache keeps the token, nor the Idempotency-Key record (api/idempotency)
    response.headers["Cache-Control"] = "no-store"
    return EnrolledParticipant.model_validate(
        {**Participant.model_validate(participant).model_dump(), "token": token}
    )


@router.get(
    "",
    response_model=ParticipantList,
    summary="List participants",
    responses=success(200, "Active and revoked participants", {"items": [examples.PARTICIPANT]})
    | _ADMIN
    | _NO_FEDERATION,
)
def list_participants(federation_id: str, ctx: ContextDep, admin: AdminDep) -> ParticipantList:
    """List the federation's participants (never their tokens)."""
    rows = participants.list_participants(ctx, admin, federation_id)
    return ParticipantList(items=[Participant.model_validate(r) for r in rows])


@router.get(
    "/me",
    response_model=Participant,
    summary="Read the calling participant",
    responses=success(200, "The participant whose token made the call", examples.PARTICIPANT)
    | problem(
        403,
        "The admin token has no participant, or the token belongs to another federation",
        detail="this operation needs a participant token",
    )
    | _NO_FEDERATION,
)
def get_me(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Participant:
    """The calling participant."""
    return Participant.model_validate(participants.get_participant(ctx, principal, federation_id))


@router.post(
    "/me/token",
    response_model=EnrolledParticipant,
    summary="Refresh the calling participant's token",
    responses=success(
        200, "The participant with its new token and expiry", examples.ENROLLED_PARTICIPANT
    )
    | problem(
        403,
        "The admin token has no participant, or the token belongs to another federation",
        detail="this operation needs a participant token",
    )
    | _NO_FEDERATION,
)
def refresh_token(
    federation_id: str, response: Response, ctx: ContextDep, principal: PrincipalDep
) -> EnrolledParticipant:
    """A new token for the calling participant, with a new expiry; the token used for this
    call keeps working for a short grace (never replayed from an Idempotency-Key)."""
    participant, token = participants.refresh_token(ctx, principal, federation_id)
    return _with_token(response, participant, token)


@router.delete(
    "/{participant_id}",
    response_model=Participant,
    summary="Revoke a participant",
    responses=success(200, "The participant, now revoked", examples.REVOKED_PARTICIPANT)
    | _ADMIN
    | _NO_PARTICIPANT
    | keyed_write(validates=False),
)
def revoke_participant(
    federation_id: str, participant_id: str, ctx: ContextDep, admin: AdminDep
) -> Participant:
    """Revoke a participant: its token stops working at once."""
    row = participants.revoke_participant(ctx, admin, federation_id, participant_id)
    return Participant.model_validate(row)


@router.post(
    "/{participant_id}/reenrol",
    response_model=EnrolledParticipant,
    summary="Re-enrol a participant with a fresh token",
    responses=success(
        200, "The participant, active, and its new token", examples.ENROLLED_PARTICIPANT
    )
    | _ADMIN
    | _NO_PARTICIPANT
    | keyed_write(validates=False)
    | _NOT_REPLAYABLE,
)
def reenrol_participant(
    federation_id: str,
    participant_id: str,
    response: Response,
    ctx: ContextDep,
    admin: AdminDep,
) -> EnrolledParticipant:
    """Re-activate a (revoked) participant with a fresh token, shown only this once."""
    participant, token = participants.reenrol_participant(ctx, admin, federation_id, participant_id)
    return _with_token(response, participant, token)
