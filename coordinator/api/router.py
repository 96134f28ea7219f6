"""All v1 routers in one place."""

from fastapi import APIRouter, FastAPI

from coordinator.api.openapi import problems
from coordinator.api.routes import (
    admin_tokens,
    audit,
    deployment,
    evaluations,
    federations,
    models,
    participants,
    rounds,
    secagg,
    signing,
)

# every v1 route authenticates, is rate limited (coordinator/api/admission.py) and reads the
# database; each route adds what else it can answer (coordinator/api/openapi.py), so the
# document lists only errors that can happen
COMMON_PROBLEMS = problems(401, 429, 503)

V1_PREFIX = "/v1"
V1_ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router
    for module in (
        federations,
        participants,
        rounds,
        secagg,
        models,
        evaluations,
        deployment,
        signing,
        audit,
        admin_tokens,
    )
)


def include_v1(app: FastAPI) -> None:
    """Each v1 router straight into the app (same paths, order and document as one
    ``/v1`` router holding them): FastAPI matches a request once per level of included
    routers, so a level fewer is one pass fewer over the routes per request."""
    for router in V1_ROUTERS:
        app.include_router(router, prefix=V1_PREFIX, responses=COMMON_PROBLEMS)
