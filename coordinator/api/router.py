"""All v1 routers in one place."""

from fastapi import APIRouter

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

api_router = APIRouter(prefix="/v1", responses=COMMON_PROBLEMS)
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
):
    api_router.include_router(module.router)
