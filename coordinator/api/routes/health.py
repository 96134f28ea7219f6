"""Liveness."""

from fastapi import APIRouter

from coordinator.api import examples
from coordinator.api.openapi import success
from coordinator.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness",
    responses=success(200, "The process answers", examples.HEALTH),
)
def healthz() -> Health:
    """Liveness: the process answers (it checks nothing else; see `/readyz`)."""
    return Health(status="ok")
