"""Deployment: which version is live; promote or roll back."""

from typing import Annotated

from fastapi import APIRouter, Body

from coordinator.api import examples
from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import body_examples, keyed_write, problem, problems, success
from coordinator.api.schemas import Deployment, DeploymentCreate, DeploymentEvent
from coordinator.domain import deployment
from coordinator.domain.specs import DeployPolicy

router = APIRouter(
    route_class=JsonOffLoopRoute,
    prefix="/federations/{federation_id}/deployment",
    tags=["deployment"],
)


def _render(federation: object, history: list[object]) -> Deployment:
    events = [DeploymentEvent.model_validate(h) for h in history]
    live = events[-1]
    policy = DeployPolicy.model_validate(federation.deploy_policy)  # type: ignore[attr-defined]
    return Deployment(
        version=live.version,
        policy=policy.policy,
        deployed_at=live.created_at,
        deployed_by=live.actor,
        history=events,
    )


@router.get(
    "",
    response_model=Deployment,
    summary="Read the deployment",
    responses=success(200, "The live version and its history", examples.DEPLOYMENT)
    | problems(403)
    | problem(
        404,
        "No such federation, or nothing is deployed yet",
        slug="not-found",
        detail="nothing is deployed yet: the federation deploys when it completes, "
        "or the admin promotes a version",
    ),
)
def get_deployment(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Deployment:
    """The live version and the history of promotions and roll-backs."""
    federation, history = deployment.get_deployment(ctx, principal, federation_id)
    return _render(federation, list(history))


@router.post(
    "",
    response_model=Deployment,
    summary="Promote or roll back a version",
    responses=success(200, "The deployment with the new live version", examples.DEPLOYMENT)
    | problem(403, "Only the admin promotes")
    | problem(
        404,
        "No such federation or model version",
        slug="model-version-not-found",
        detail="model version 9 does not exist",
    )
    | problems(413)
    | keyed_write(),
)
def promote(
    federation_id: str,
    body: Annotated[
        DeploymentCreate,
        Body(
            openapi_examples=body_examples(
                promote=("Make version 3 live", examples.DEPLOYMENT_CREATE)
            )
        ),
    ],
    ctx: ContextDep,
    admin: AdminDep,
) -> Deployment:
    """Make a version live: promote a newer one or roll back to an earlier one."""
    federation, history = deployment.promote(ctx, admin, federation_id, version=body.version)
    return _render(federation, list(history))
