"""Federated evaluation: participants report metrics, the coordinator keeps the weighted mean."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from coordinator.domain import idempotency, lifecycle
from coordinator.domain.access import load_federation
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import EvaluationExists, NotFound, ValidationFailed
from coordinator.domain.federations import federation_settings
from coordinator.domain.idempotency import StoredResponse
from coordinator.domain.metrics import AggregatedMetrics, aggregate_in
from coordinator.domain.specs import LimitsPolicy
from coordinator.store.models import Evaluation, new_id, utc_now
from coordinator.store.repository import EvaluationRepository, ModelVersionRepository

__all__ = [
    "AggregatedMetrics",
    "BaseEvaluation",
    "aggregated_metrics",
    "check_limits",
    "record_validation",
    "submit_evaluation",
    "submit_keyed_evaluation",
]

Split = Literal["validation", "test"]


@dataclass(frozen=True)
class BaseEvaluation:
    """A participant's validation figures of a round's base version, carried by its upload
    (one request and one transaction instead of a report and an upload)."""

    metrics: Mapping[str, float]
    num_users: int


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
    """Record (or replace) this participant's metrics for one version and split.

    Validation figures may be replaced (a participant re-evaluates after a restart);
    test figures are written once: a different report for the same version raises
    :class:`EvaluationExists` (a re-run participant must not silently rewrite the
    federation's final result), the same report again is accepted as is. The report
    that completes an ``evaluating`` federation's final evaluation also completes the
    federation, in the same transaction.
    """
    store = _report(ctx, principal, federation_id, version, split, metrics, num_users)
    # reports arriving together share one transaction and one commit (store/group_commit)
    commits = ctx.evaluation_commits
    assert commits is not None  # built by Context
    return commits.run(federation_id, store)


def submit_keyed_evaluation(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    version: int,
    *,
    split: Split,
    metrics: Mapping[str, float],
    num_users: int,
    request: idempotency.KeyedRequest,
    render: Callable[[Evaluation], StoredResponse],
) -> tuple[StoredResponse, bool]:
    """:func:`submit_evaluation` with an Idempotency-Key, in one write transaction: the
    key's record is read, the report stored and its response (``render``) recorded under
    the key, all under one COMMIT (fsynced before the caller answers). Returns the response
    and whether it is a replay of the key's first attempt. A refusal stores nothing, its
    record neither: a retry is checked again (as an upload's is).
    """
    report = _report(ctx, principal, federation_id, version, split, metrics, num_users)

    def store(session: Session) -> tuple[StoredResponse, bool]:
        replay = idempotency.replay_in(session, ctx, principal, request)
        if replay is not None:
            return replay, True
        response = render(report(session))
        idempotency.record_in(session, principal, request, response)
        return response, False

    commits = ctx.evaluation_commits
    assert commits is not None  # built by Context
    return commits.run(federation_id, store)


def _report(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    version: int,
    split: Split,
    metrics: Mapping[str, float],
    num_users: int,
) -> Callable[[Session], Evaluation]:
    """The report's work inside a write transaction (the participant checked now)."""
    participant_id = principal.require_participant()
    return lambda session: _store_report(
        ctx, session, principal, participant_id, federation_id, version, split, metrics, num_users
    )


def _store_report(
    ctx: Context,
    session: Session,
    principal: Principal,
    participant_id: str,
    federation_id: str,
    version: int,
    split: Split,
    metrics: Mapping[str, float],
    num_users: int,
) -> Evaluation:
    # the batch locked the federation first: concurrent final reports see each other
    # (one completes it)
    federation = load_federation(session, principal, federation_id)
    check_limits(federation_settings(ctx, federation).limits, metrics, num_users)
    if ModelVersionRepository(session).get(federation_id, version) is None:
        raise NotFound(f"model version {version} does not exist", slug="model-version-not-found")
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
    elif split == "validation":
        _replace(row, metrics, num_users)
    elif split == "test" and (row.metrics, row.num_users) != (dict(metrics), num_users):
        raise EvaluationExists(
            f"this participant already reported test figures for version {version} "
            f"({row.num_users} users, {_brief(row.metrics)}); test figures are written "
            "once, so a re-run cannot replace them",
            reported=row.metrics,
            reported_num_users=row.num_users,
        )
    session.flush()
    lifecycle.settle_final_evaluation(session, federation, utc_now())
    return row


def record_validation(
    session: Session, federation_id: str, version: int, participant_id: str, report: BaseEvaluation
) -> None:
    """Record (or replace) validation figures inside the caller's transaction; the caller
    checked them (:func:`check_limits`) and that the version exists."""
    EvaluationRepository(session).put(
        Evaluation(
            id=new_id(),
            federation_id=federation_id,
            version=version,
            split="validation",
            participant_id=participant_id,
            metrics=dict(report.metrics),
            num_users=report.num_users,
            created_at=utc_now(),
        )
    )


def _replace(row: Evaluation, metrics: Mapping[str, float], num_users: int) -> None:
    row.metrics = dict(metrics)
    row.num_users = num_users
    row.created_at = utc_now()


def check_limits(limits: LimitsPolicy, metrics: Mapping[str, float], num_users: int) -> None:
    """Only declared metrics, and a bounded weight: a participant cannot fill the table
    nor outweigh the others without limit in the figures behind target and deploy."""
    undeclared = sorted(set(metrics) - set(limits.metrics))
    if undeclared:
        raise ValidationFailed(
            f"metrics {undeclared[:5]} are not declared by this federation; it accepts "
            f"{list(limits.metrics)} (limits.metrics)",
            field="metrics",
        )
    if num_users > limits.max_num_users:
        raise ValidationFailed(
            f"num_users must be at most {limits.max_num_users} for this federation "
            f"(limits.max_num_users), got {num_users}",
            field="num_users",
        )


def _brief(metrics: Mapping[str, float]) -> str:
    shown = sorted(metrics.items())[:2]
    return ", ".join(f"{name} {value:.4f}" for name, value in shown) or "no metrics"


def aggregated_metrics(
    ctx: Context, principal: Principal, federation_id: str
) -> list[AggregatedMetrics]:
    with ctx.read_sessions() as session:
        load_federation(session, principal, federation_id)
        return aggregate_in(session, federation_id)
