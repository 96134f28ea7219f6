"""Federated evaluation: participants report metrics, the coordinator keeps the weighted mean."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import NotFound
from coordinator.store.models import Evaluation, utc_now
from coordinator.store.repository import EvaluationRepository, ModelVersionRepository

__all__ = ["AggregatedMetrics", "aggregated_metrics", "submit_evaluation"]

Split = Literal["validation", "test"]


@dataclass
class AggregatedMetrics:
    version: int
    round: int | None
    split: str
    metrics: dict[str, float]
    num_users: int
    participants: int


def submit_evaluation(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    version: int,
    *,
    split: Split,
    metrics: Mapping[str, float],
    num_users: int,
) -> Evaluation:
    """Record (or replace) this participant's metrics for one version and split."""
    participant_id = principal.require_participant()
    with ctx.sessions.begin() as session:
        load_federation(session, principal, federation_id)
        if ModelVersionRepository(session).get(federation_id, version) is None:
            raise NotFound(
                f"model version {version} does not exist", slug="model-version-not-found"
            )
        repo = EvaluationRepository(session)
        row = repo.get(federation_id, version, split, participant_id)
        if row is None:
            row = Evaluation(
                federation_id=federation_id,
                version=version,
                split=split,
                participant_id=participant_id,
                metrics=dict(metrics),
                num_users=num_users,
                created_at=utc_now(),
            )
            repo.add(row)
        else:
            row.metrics = dict(metrics)
            row.num_users = num_users
            row.created_at = utc_now()
    return row


def aggregate_in(session: Session, federation_id: str) -> list[AggregatedMetrics]:
    """Per (version, split): metrics averaged with weights = users evaluated."""
    rounds = {
        v.version: v.round_number for v in ModelVersionRepository(session).list(federation_id)
    }
    groups: dict[tuple[int, str], list[Evaluation]] = defaultdict(list)
    for row in EvaluationRepository(session).list(federation_id):
        groups[(row.version, row.split)].append(row)
    out = []
    for (version, split), rows in sorted(groups.items()):
        total = sum(r.num_users for r in rows)
        names = sorted({name for r in rows for name in r.metrics})
        metrics = {
            name: sum(float(r.metrics.get(name, 0.0)) * r.num_users for r in rows) / total
            if total
            else 0.0
            for name in names
        }
        out.append(
            AggregatedMetrics(version, rounds.get(version), split, metrics, total, len(rows))
        )
    return out


def aggregated_metrics(
    ctx: Context, principal: Principal, federation_id: str
) -> list[AggregatedMetrics]:
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return aggregate_in(session, federation_id)
