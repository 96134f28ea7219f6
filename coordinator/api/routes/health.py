"""Liveness and readiness."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from coordinator.api import examples
from coordinator.api.deps import ContextDep
from coordinator.api.openapi import problem, success
from coordinator.api.schemas import Health
from coordinator.domain.readiness import check_ready

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness",
    responses=success(200, "The process answers", examples.HEALTH),
)
async def healthz() -> Health:
    """Liveness: the process answers (it checks nothing else; see `/readyz`)."""
    # async: on the event loop, not behind requests queued for a worker thread
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses=success(200, "The database answers and the blob store is usable", examples.READY)
    | problem(
        503,
        "The database or the blob store is not usable; `checks` says which",
        detail="not ready: database (see `checks`; the log says why)",
        checks={"database": "unreachable (OperationalError)", "blobs": "ok"},
    ),
)
async def readyz(ctx: ContextDep) -> Health:
    """Readiness: the database answers a query and the blob store can take blobs.
    No token needed; a load balancer sends traffic only while this answers 200."""
    await run_in_threadpool(check_ready, ctx)
    return Health(status="ready")
