"""Aggregated evaluation figures: per version and split, weighted by users evaluated.

Apart from the use cases in :mod:`evaluation`, so the lifecycle and the deploy policy
can read them without importing the use cases that drive the lifecycle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordinator.store.models import Evaluation
from coordinator.store.repository import EvaluationRepository, ModelVersionRepository

__all__ = ["AggregatedMetrics", "aggregate_in"]


@dataclass
class AggregatedMetrics:
    version: int
    round: int | None
    split: str
    metrics: dict[str, float]
    num_users: int
    participants: int


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
