"""When a federation stops training: round budget, privacy budget, target, or patience.

Patience is early stopping on the aggregated validation metric of the deploy policy
(default ``ndcg@10``): training stops once ``patience`` evaluated versions in a row
failed to beat the best so far by more than ``min_delta``, and not before ``min_rounds``
rounds have completed. The deploy policy then picks the best validated version, so the
versions trained past the best cost time, not quality. Both read the curve smoothed
over the deploy policy's ``window`` (:mod:`coordinator.domain.validation_curve`), so they
agree on which version is best.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from coordinator.domain import deployment
from coordinator.domain.privacy import accounting_of
from coordinator.domain.specs import DeployPolicy, ModelSpec, RoundPolicy
from coordinator.domain.validation_curve import smoothed, stale_versions
from coordinator.store.models import Federation

__all__ = ["StopReason", "stale_versions", "stop_reason"]


class StopReason(StrEnum):
    MAX_ROUNDS = "max_rounds"
    PRIVACY_BUDGET = "privacy_budget"
    TARGET = "target"
    PATIENCE = "patience"


def stop_reason(session: Session, federation: Federation) -> StopReason | None:
    """Why the federation should stop training now that a round closed, or None."""
    policy = RoundPolicy.model_validate(federation.round_policy)
    model = ModelSpec.model_validate(federation.model_spec)
    # an ease federation has one round per candidate lambda, whatever the cap says
    budget = min(policy.max_rounds, len(model.ease_lambdas)) if model.kind == "ease" else None
    if federation.completed_rounds >= (budget or policy.max_rounds):
        return StopReason.MAX_ROUNDS
    # the budget is enforced before a round opens: the round that would exceed it never does
    accounting = accounting_of(session, federation)
    if accounting is not None and not accounting.round_allowed(federation.completed_rounds):
        return StopReason.PRIVACY_BUDGET
    if deployment.target_reached(session, federation):
        return StopReason.TARGET
    # min_rounds: a slow start the caller knows will end (fedrec's recipe search saw
    # the same federation improve until then) is not taken for a plateau
    if policy.patience is not None and federation.completed_rounds >= (policy.min_rounds or 0):
        deploy = DeployPolicy.model_validate(federation.deploy_policy)
        scores = deployment.validation_scores(session, federation.id, deploy.metric)
        if stale_versions(smoothed(scores, deploy.window), policy.min_delta) >= policy.patience:
            return StopReason.PATIENCE
    return None
