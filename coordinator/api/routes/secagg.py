"""Secure aggregation: the four participant phases of a round (see docs/api.md).

Each POST carries one ``participant_sdk.secagg.messages`` message as JSON; the domain
(:mod:`coordinator.domain.secure_rounds`) validates it completely, stores the round's new
state durably and closes the phase once everyone expected answered.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from coordinator.api import examples
from coordinator.api.deps import ContextDep, PrincipalDep, WorkerDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import body_examples, keyed_write, problem, problems, success
from coordinator.api.schemas import (
    SecAggKeys,
    SecAggMaskedInput,
    SecAggShares,
    SecAggStatus,
    SecAggUnmask,
)
from coordinator.domain import secure_rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.specs import DB_INT_MAX

router = APIRouter(
    route_class=JsonOffLoopRoute,
    prefix="/federations/{federation_id}/rounds/{number}/secagg",
    tags=["secure aggregation"],
)

RoundNumber = Annotated[int, Path(ge=0, le=DB_INT_MAX, description="The round number.")]
_NOT_FOUND = problem(
    404, "No such federation or round", slug="round-not-found", detail="round 9 does not exist"
)
_NUMBER = problem(
    422,
    f"The round number is not an integer in [0, {DB_INT_MAX}]",
    detail="number: Input should be a valid integer",
)
_SENDS = (
    problem(
        403,
        "Only a participant of this federation sends",
        detail="this operation needs a participant token",
    )
    | _NOT_FOUND
    | problems(413)
    | keyed_write()
    | problem(
        409,
        "The round is in another phase (`secagg-wrong-phase`, with `phase`), closed, or the "
        "federation completed; the caller is not in the round's cohort; it already sent a "
        "different message for this phase; the federation does not use secure aggregation; "
        "or the same Idempotency-Key is still running",
        slug="secagg-wrong-phase",
        title="Secure-aggregation message for another phase",
        detail="this round is in phase 'masked', not 'share'",
        phase="masked",
    )
    | problem(
        422,
        "The message does not validate (wrong sizes, another round's or federation's, "
        "another participant's, "
        "recipients other than the roster, a share count that does not match), or the "
        "Idempotency-Key was first sent with another request",
        slug="invalid-secagg-message",
        title="Invalid secure-aggregation message",
        detail="the message belongs to federation 'f1' round 2, this is 'f3b0c1d2e4a5b6c7' round 3",
    )
)


def _out(view: secure_rounds.SecAggStatus) -> SecAggStatus:
    return SecAggStatus.model_validate(view, from_attributes=True)


def _receive(
    ctx: Context,
    principal: Principal,
    kick: Callable[[str, int], object],
    federation_id: str,
    number: int,
    kind: str,
    body: dict[str, Any],
) -> SecAggStatus:
    view, ended = secure_rounds.receive(ctx, principal, federation_id, number, kind, body)
    if ended:  # the sum is unmasked, or the round aborted: the aggregation job has work
        kick(federation_id, number)
    return _out(view)


@router.get(
    "",
    response_model=SecAggStatus,
    summary="Read the round's secure-aggregation phase",
    responses=success(200, "The phase and what the caller needs next", examples.SECAGG_STATUS)
    | problems(403)
    | _NOT_FOUND
    | _NUMBER
    | problem(
        409,
        "The federation does not use secure aggregation",
        slug="not-secure-aggregation",
        title="The federation does not use secure aggregation",
        detail="federation f3b0c1d2e4a5b6c7 does not use secure aggregation",
    ),
)
def get_secagg(
    federation_id: str, number: RoundNumber, ctx: ContextDep, principal: PrincipalDep
) -> SecAggStatus:
    """The round's phase, its deadline and the fixed-point encoding, and for the caller the
    roster (phase share), its inbox (phase masked) or the unmask request (phase unmask)."""
    return _out(secure_rounds.status(ctx, principal, federation_id, number))


@router.post(
    "/keys",
    response_model=SecAggStatus,
    summary="Advertise this participant's keys",
    responses=success(200, "Recorded; the caller's view of the round", examples.SECAGG_STATUS)
    | _SENDS,
)
def post_keys(
    federation_id: str,
    number: RoundNumber,
    body: Annotated[
        SecAggKeys,
        Body(openapi_examples=body_examples(keys=("Two public keys", examples.SECAGG_KEYS))),
    ],
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
) -> SecAggStatus:
    """Phase 1: the caller's public keys and self-mask commitment for this round. The phase
    closes when the whole cohort advertised (with at least `threshold`), or at the round's
    deadline."""
    return _receive(ctx, principal, worker.kick, federation_id, number, "keys", body.model_dump())


@router.post(
    "/shares",
    response_model=SecAggStatus,
    summary="Send this participant's encrypted key shares",
    responses=success(200, "Recorded; the caller's view of the round", examples.SECAGG_STATUS)
    | _SENDS,
)
def post_shares(
    federation_id: str,
    number: RoundNumber,
    body: Annotated[
        SecAggShares,
        Body(openapi_examples=body_examples(shares=("One share", examples.SECAGG_SHARES))),
    ],
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
) -> SecAggStatus:
    """Phase 2: one ciphertext of Shamir shares per other roster member. The phase closes
    when every roster member sent, or `phase_seconds` after it opened."""
    return _receive(ctx, principal, worker.kick, federation_id, number, "shares", body.model_dump())


@router.post(
    "/masked-input",
    response_model=SecAggStatus,
    summary="Send this participant's masked input",
    responses=success(200, "Recorded; the caller's view of the round", examples.SECAGG_STATUS)
    | _SENDS,
)
def post_masked_input(
    federation_id: str,
    number: RoundNumber,
    body: Annotated[
        SecAggMaskedInput,
        Body(
            openapi_examples=body_examples(
                masked=("Six masked words", examples.SECAGG_MASKED_INPUT)
            )
        ),
    ],
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
) -> SecAggStatus:
    """Phase 3: the clipped, encoded and masked update. The phase closes when every
    participant that shared keys sent, or `phase_seconds` after it opened."""
    return _receive(
        ctx, principal, worker.kick, federation_id, number, "masked-input", body.model_dump()
    )


@router.post(
    "/unmask",
    response_model=SecAggStatus,
    summary="Answer the unmask request",
    responses=success(200, "Recorded; the caller's view of the round", examples.SECAGG_STATUS)
    | _SENDS,
)
def post_unmask(
    federation_id: str,
    number: RoundNumber,
    body: Annotated[
        SecAggUnmask,
        Body(openapi_examples=body_examples(unmask=("No one dropped", examples.SECAGG_UNMASK))),
    ],
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
) -> SecAggStatus:
    """Phase 4: seed shares of every survivor and key shares of every dropped participant.
    When every survivor answered, or `phase_seconds` after the phase opened, the
    coordinator unmasks the survivors' sum (or aborts below `threshold`) and the round
    aggregates it."""
    return _receive(ctx, principal, worker.kick, federation_id, number, "unmask", body.model_dump())
