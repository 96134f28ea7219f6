"""Aggregated evaluation figures: per version and split, weighted by users evaluated.

Apart from the use cases in :mod:`evaluation`, so the lifecycle and the deploy policy
can read them without importing the use cases that drive the lifecycle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from coordinator.store.models import Evaluation
from coordinator.store.repository import EvaluationRepository, ModelVersionRepository

__all__ = ["AggregatedMetrics", "aggregate_in", "validation_scores"]

# session.info key of the per-transaction memo of validation_scores
_SCORES_MEMO = "fedrec.validation_scores"


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


def validation_scores(session: Session, federation_id: str, metric: str) -> dict[int, float]:
    """Each version's aggregated validation ``metric`` (as :func:`aggregate_in` computes
    it), for the versions that some report carries it for.

    A round's commit asks up to three times (target, patience, the deploy policy);
    the figures are read once per transaction, only the columns they need, and the
    memo is dropped whenever the session flushes (a new report may be among the changes)
    and when the transaction ends.
    """
    memo: dict[tuple[str, str], dict[int, float]] = session.info.setdefault(_SCORES_MEMO, {})
    key = (federation_id, metric)
    if key not in memo:
        rows = EvaluationRepository(session).validation_figures(federation_id)
        sums: dict[int, float] = defaultdict(float)
        users: dict[int, int] = defaultdict(int)
        reported: set[int] = set()
        for version, metrics, num_users in rows:
            users[version] += num_users
            if metric in metrics:
                reported.add(version)
                sums[version] += float(metrics[metric]) * num_users
        memo[key] = {
            version: sums[version] / users[version] if users[version] else 0.0
            for version in sorted(reported)
        }
    return dict(memo[key])


@event.listens_for(Session, "after_flush")
def _forget_scores_after_flush(session: Session, _flush_context: Any) -> None:
    session.info.pop(_SCORES_MEMO, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_scores_after_transaction(session: Session, _transaction: Any) -> None:
    session.info.pop(_SCORES_MEMO, None)
