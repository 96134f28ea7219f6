"""Request dependencies as ``Annotated`` aliases, defined once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from coordinator.domain.auth import Principal, authenticate
from coordinator.domain.context import Context
from coordinator.worker import RoundWorker

__all__ = ["AdminDep", "ContextDep", "PrincipalDep", "WorkerDep", "bearer"]

bearer = HTTPBearer(auto_error=False, description="Admin or participant token.")


# async: FastAPI runs a plain ``def`` dependency on a worker thread, a hop per request for
# what is an attribute read (or a principal admission control already resolved)
async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def get_worker(request: Request) -> RoundWorker:
    worker: RoundWorker = request.app.state.worker
    return worker


ContextDep = Annotated[Context, Depends(get_context)]
WorkerDep = Annotated[RoundWorker, Depends(get_worker)]


async def get_principal(
    request: Request,
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    # already authenticated by the idempotency middleware for a keyed request
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    # a database read: on a worker thread
    return await run_in_threadpool(
        authenticate, ctx, credentials.credentials if credentials else None
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    principal.require_admin()
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
