"""Deployment: which version is live; promote or roll back."""

from fastapi import APIRouter

from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.schemas import Deployment, DeploymentCreate, DeploymentEvent
from coordinator.domain import deployment
from coordinator.domain.specs import DeployPolicy

router = APIRouter(prefix="/federations/{federation_id}/deployment", tags=["deployment"])


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


@router.get("", response_model=Deployment)
def get_deployment(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Deployment:
    """The live version and the history of promotions and roll-backs."""
    federation, history = deployment.get_deployment(ctx, principal, federation_id)
    return _render(federation, list(history))


@router.post("", response_model=Deployment)
def promote(
    federation_id: str, body: DeploymentCreate, ctx: ContextDep, admin: AdminDep
) -> Deployment:
    """Make a version live: promote a newer one or roll back to an earlier one."""
    federation, history = deployment.promote(ctx, admin, federation_id, version=body.version)
    return _render(federation, list(history))
