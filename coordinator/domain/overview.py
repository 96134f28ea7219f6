"""Read-only views of a federation for people watching it (the dashboard).

One read session gathers what a page shows: the federation, its rounds, model versions,
deployment history, aggregated metrics and (for the admin) its participants with when each
was last seen. The chain check is separate because it reads every version's blob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.deployment import deployed_version
from coordinator.domain.federations import FederationView, latest_privacy_of
from coordinator.domain.lineage import LineageReport, verify_lineage
from coordinator.domain.metrics import AggregatedMetrics, aggregate_in
from coordinator.domain.specs import DeployPolicy
from coordinator.store.models import Deployment, ModelVersion, Round
from coordinator.store.repository import (
    DeploymentRepository,
    ModelVersionRepository,
    ParticipantRepository,
    RoundRepository,
)

__all__ = ["FederationOverview", "ParticipantActivity", "check_lineage", "federation_overview"]


@dataclass(frozen=True)
class ParticipantActivity:
    """A participant as the admin watches it: its state and when it last did anything."""

    id: str
    name: str
    state: str
    created_at: datetime
    revoked_at: datetime | None
    # the latest update upload or evaluation report; None if it never did either
    last_seen: datetime | None


@dataclass
class FederationOverview:
    federation: FederationView
    deploy_metric: str
    rounds: Sequence[Round]
    versions: Sequence[ModelVersion]
    deployments: Sequence[Deployment]
    metrics: list[AggregatedMetrics]
    active_participants: int
    # None when the caller may not list participants (a participant token)
    participants: list[ParticipantActivity] | None


def federation_overview(
    ctx: Context, principal: Principal, federation_id: str
) -> FederationOverview:
    """Everything the dashboard shows about one federation, from one read session."""
    with ctx.read_sessions() as session:
        row = load_federation(session, principal, federation_id)
        people = ParticipantRepository(session)
        participants = None
        if principal.is_admin:
            seen = people.last_seen(federation_id)
            participants = [
                ParticipantActivity(
                    p.id, p.name, p.state, p.created_at, p.revoked_at, seen.get(p.id)
                )
                for p in people.list(federation_id)
            ]
        return FederationOverview(
            federation=FederationView(
                row,
                people.count(federation_id),
                deployed_version(session, federation_id),
                latest_privacy_of(session, row),
            ),
            deploy_metric=DeployPolicy.model_validate(row.deploy_policy).metric,
            rounds=RoundRepository(session).list(federation_id),
            versions=ModelVersionRepository(session).list(federation_id),
            deployments=DeploymentRepository(session).history(federation_id),
            metrics=aggregate_in(session, federation_id),
            active_participants=people.count_active(federation_id),
            participants=participants,
        )


def check_lineage(ctx: Context, principal: Principal, federation_id: str) -> LineageReport:
    """Verify the federation's version chain (every blob is read) for a caller who may see it."""
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
    return verify_lineage(ctx, federation_id)
