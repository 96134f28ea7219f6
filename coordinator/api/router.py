"""All v1 routers in one place."""

from fastapi import APIRouter

from coordinator.api.routes import (
    deployment,
    evaluations,
    federations,
    models,
    participants,
    rounds,
)

api_router = APIRouter(prefix="/v1")
for module in (federations, participants, rounds, models, evaluations, deployment):
    api_router.include_router(module.router)
