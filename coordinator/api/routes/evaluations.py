"""Federated evaluation: participants report metrics; the aggregate per version."""

from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from coordinator.api import examples
from coordinator.api.deps import ContextDep, PrincipalDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import body_examples, keyed_write, problem, problems, success
from coordinator.api.schemas import (
    Evaluation,
    EvaluationCreate,
    MetricsHistory,
    MetricsRow,
)
from coordinator.domain import evaluation
from coordinator.domain.specs import DB_INT_MAX

router = APIRouter(
    route_class=JsonOffLoopRoute, prefix="/federations/{federation_id}", tags=["evaluations"]
)


@router.post(
    "/models/{version}/evaluations",
    status_code=status.HTTP_201_CREATED,
    response_model=Evaluation,
    summary="Report metrics of a model version",
    responses=success(201, "The evaluation as recorded", examples.EVALUATION)
    | problem(
        403,
        "Only a participant of this federation reports",
        detail="this operation needs a participant token",
    )
    | problem(
        404,
        "No such federation or model version",
        slug="model-version-not-found",
        detail="model version 9 does not exist",
    )
    | problems(413)
    | keyed_write(),
)
def submit_evaluation(
    federation_id: str,
    version: Annotated[int, Path(ge=0, le=DB_INT_MAX, description="The model version.")],
    body: Annotated[
        EvaluationCreate,
        Body(
            openapi_examples=body_examples(
                validation=("Validation figures of 120 users", examples.EVALUATION_CREATE)
            )
        ),
    ],
    ctx: ContextDep,
    principal: PrincipalDep,
) -> Evaluation:
    """Report this participant's metrics for a version on its validation or test split."""
    row = evaluation.submit_evaluation(
        ctx,
        principal,
        federation_id,
        version,
        split=body.split,
        metrics=body.metrics,
        num_users=body.num_users,
    )
    return Evaluation.model_validate(row)


@router.get(
    "/metrics",
    response_model=MetricsHistory,
    summary="Read the quality history",
    responses=success(200, "Aggregated metrics per version and split", examples.METRICS_HISTORY)
    | problems(403)
    | problem(404, "No such federation"),
)
def get_metrics(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> MetricsHistory:
    """Aggregated metrics per version and split, weighted by users evaluated."""
    rows = evaluation.aggregated_metrics(ctx, principal, federation_id)
    return MetricsHistory(items=[MetricsRow.model_validate(r) for r in rows])
