"""All v1 routers in one place."""

from typing import Any

from fastapi import APIRouter

from coordinator.api.routes import (
    audit,
    deployment,
    evaluations,
    federations,
    models,
    participants,
    rounds,
    signing,
)
from coordinator.api.schemas import Problem

_problem: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
# every v1 route can answer these; routes add their own (409, 413, 415) where they apply
COMMON_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {**_problem, "description": "No token, an unknown token, or a revoked participant"},
    403: {**_problem, "description": "The token may not do this (admin-only, other federation)"},
    404: {**_problem, "description": "No such federation, round, version or participant"},
    422: {**_problem, "description": "The request does not validate; `detail` says what to fix"},
    503: {**_problem, "description": "The database is busy; retry after `Retry-After` seconds"},
}

api_router = APIRouter(prefix="/v1", responses=COMMON_PROBLEMS)
for module in (
    federations,
    participants,
    rounds,
    models,
    evaluations,
    deployment,
    signing,
    audit,
):
    api_router.include_router(module.router)
