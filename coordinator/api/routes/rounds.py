"""Rounds: current (with long-poll), history, upload, aggregate."""

import asyncio
import logging
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep, WorkerDep
from coordinator.api.schemas import (
    ModelVersion,
    Problem,
    Receipt,
    Round,
    RoundList,
    model_version_out,
    receipt_out,
)
from coordinator.domain import audit, rounds
from coordinator.domain.errors import CoordinatorError, UnsupportedMediaType

log = logging.getLogger("fedrec.api")
router = APIRouter(prefix="/federations/{federation_id}/rounds", tags=["rounds"])

MAX_WAIT_SECONDS = 60.0
_problems: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 403, 404, 409, 413, 415, 422)
}


@router.get("/current", response_model=Round)
async def get_current_round(
    federation_id: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_SECONDS, description="Long-poll up to this many seconds.")
    ] = 0,
    after: Annotated[
        int | None, Query(ge=0, description="Return once the current round number exceeds this.")
    ] = None,
) -> Round:
    """The current round; with `wait` and `after`, long-poll until the next round opens."""
    _federation, row = await rounds.wait_for_round(
        ctx, principal, federation_id, after=after, wait_seconds=wait if after is not None else 0
    )
    return Round.model_validate(row)


@router.get("", response_model=RoundList)
def list_rounds(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> RoundList:
    """Round history: state, update count and resulting version."""
    return RoundList(
        items=[Round.model_validate(r) for r in rounds.list_rounds(ctx, principal, federation_id)]
    )


@router.get("/{number}", response_model=Round)
def get_round(federation_id: str, number: int, ctx: ContextDep, principal: PrincipalDep) -> Round:
    """One round."""
    return Round.model_validate(rounds.get_round(ctx, principal, federation_id, number))


@router.put(
    "/{number}/update",
    response_model=Receipt,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": Receipt, "description": "The same bytes again"}, **_problems},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_update(
    federation_id: str,
    number: int,
    request: Request,
    response: Response,
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Receipt | Response:
    """Upload this participant's update (safetensors deltas) for round `number`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"send the update as 'application/octet-stream' (safetensors), not {content_type!r}"
        )
    try:
        body = await request.body()
    except ClientDisconnect:
        # the participant went away mid-body: nothing was stored, nobody reads a reply;
        # an expected event on real networks, not an internal error (no 500, no traceback)
        log.info("upload to round %d of %s cut off by the client", number, federation_id)
        return Response(status_code=499)
    try:
        receipt = await run_in_threadpool(
            rounds.submit_update,
            ctx,
            principal,
            federation_id,
            number,
            body,
            idempotency_key=idempotency_key,
        )
    except CoordinatorError as exc:
        if exc.status_code < 500:  # a refusal, not a busy database
            await run_in_threadpool(
                partial(
                    audit.record_refusal,
                    ctx,
                    principal,
                    action="upload",
                    federation_id=federation_id,
                    subject=f"round {number}",
                    slug=exc.slug,
                )
            )
        raise
    if receipt.created:
        worker.kick(federation_id, number)
    else:
        response.status_code = status.HTTP_200_OK
    return receipt_out(receipt.update)


@router.post(
    "/{number}/aggregate",
    response_model=ModelVersion,
    status_code=status.HTTP_201_CREATED,
    responses=_problems,
)
async def aggregate(
    federation_id: str, number: int, admin: AdminDep, worker: WorkerDep
) -> ModelVersion:
    """Aggregate round `number` now (admin) and return the new model version."""
    # the same job as the upload kick and the timer, on the worker; this call waits for it
    outcome = await asyncio.wrap_future(worker.aggregate_now(admin, federation_id, number))
    assert outcome.version is not None
    return model_version_out(outcome.version)
