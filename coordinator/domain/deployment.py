"""Stopping on a target and deploying a version: policy-driven, or by the admin."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from coordinator.domain import audit, metrics
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import NotFound
from coordinator.domain.specs import DeployPolicy, ModelSpec, TargetSpec
from coordinator.domain.validation_curve import best_version, smoothed
from coordinator.store.models import Deployment, Federation, utc_now
from coordinator.store.repository import DeploymentRepository, ModelVersionRepository

__all__ = [
    "auto_deploy",
    "deployed_version",
    "get_deployment",
    "promote",
    "target_reached",
    "validation_scores",
]


def deployed_version(session: Session, federation_id: str) -> int | None:
    current = DeploymentRepository(session).current(federation_id)
    return current.version if current else None


def validation_scores(session: Session, federation_id: str, metric: str) -> dict[int, float]:
    """Each version's aggregated validation ``metric``, for the versions evaluated so far
    (read once per transaction: :func:`coordinator.domain.metrics.validation_scores`)."""
    return metrics.validation_scores(session, federation_id, metric)


def target_reached(session: Session, federation: Federation) -> bool:
    """True once some version's aggregated validation metric reaches the target."""
    if not federation.target:
        return False
    target = TargetSpec.model_validate(federation.target)
    scores = validation_scores(session, federation.id, target.metric)
    return any(value >= target.value for value in scores.values())


def _record(
    session: Session,
    federation_id: str,
    *,
    version: int,
    actor: str,
    reason: str,
    metric_value: float | None,
    now: datetime,
) -> Deployment:
    repo = DeploymentRepository(session)
    current = repo.current(federation_id)
    row = Deployment(
        federation_id=federation_id,
        seq=(current.seq + 1) if current else 1,
        version=version,
        actor=actor,
        reason=reason,
        metric_value=metric_value,
        created_at=now,
    )
    repo.add(row)
    audit.record(
        session,
        actor=actor,
        action=reason,  # auto, promote or rollback
        federation_id=federation_id,
        subject=f"version {version}",
        now=now,
    )
    return row


def auto_deploy(session: Session, federation: Federation, *, now: datetime) -> Deployment | None:
    """Deploy per policy when a federation completes: best validation metric (on the
    curve smoothed over the policy's window), or latest."""
    policy = DeployPolicy.model_validate(federation.deploy_policy)
    if policy.policy == "none":
        return None
    version, value = federation.latest_version, None
    if policy.policy == "best":
        scores = validation_scores(session, federation.id, policy.metric)
        # highest (smoothed) metric; the later version wins a tie. An ease federation's
        # versions are candidate lambdas, not a trajectory: never smoothed
        kind = ModelSpec.model_validate(federation.model_spec).kind
        best = best_version(smoothed(scores, 1 if kind == "ease" else policy.window))
        if best is not None:
            # the deployment records the version's own value, not its window's mean
            version, value = best[0], scores[best[0]]
    return _record(
        session,
        federation.id,
        version=version,
        actor=f"policy:{policy.policy}",
        reason="auto",
        metric_value=value,
        now=now,
    )


def get_deployment(
    ctx: Context, principal: Principal, federation_id: str
) -> tuple[Federation, list[Deployment]]:
    with ctx.read_sessions() as session:
        federation = load_federation(session, principal, federation_id)
        history = list(DeploymentRepository(session).history(federation_id))
    if not history:
        raise NotFound(
            "nothing is deployed yet: the federation deploys when it completes, "
            "or the admin promotes a version"
        )
    return federation, history


def promote(
    ctx: Context, principal: Principal, federation_id: str, *, version: int
) -> tuple[Federation, list[Deployment]]:
    """Make ``version`` live (a promotion, or a roll-back to an earlier version)."""
    principal.require_admin()
    with ctx.sessions.begin() as session:
        federation = load_federation(session, principal, federation_id)
        if ModelVersionRepository(session).get(federation_id, version) is None:
            raise NotFound(
                f"model version {version} does not exist", slug="model-version-not-found"
            )
        current = deployed_version(session, federation_id)
        reason = "rollback" if current is not None and version < current else "promote"
        _record(
            session,
            federation_id,
            version=version,
            actor=principal.name,
            reason=reason,
            metric_value=None,
            now=utc_now(),
        )
        history = list(DeploymentRepository(session).history(federation_id))
    return federation, history
