"""Federated evaluation: participants report metrics; the aggregate per version."""

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, status
from fastapi.responses import Response

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
from coordinator.domain import evaluation, idempotency
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
    request: Request,
) -> Evaluation | Response:
    """Report this participant's metrics for a version on its validation or test split."""
    key = request.headers.get("idempotency-key")
    if key is not None:
        # the key's record is written in the report's own transaction (one COMMIT, not
        # three); the middleware checked its length and left the rest to this route
        answer, replayed = evaluation.submit_keyed_evaluation(
            ctx,
            principal,
            federation_id,
            version,
            split=body.split,
            metrics=body.metrics,
            num_users=body.num_users,
            request=idempotency.KeyedRequest(
                key=key,
                method="POST",
                path=request.url.path,
                fingerprint=_fingerprint(request.url.path, body),
            ),
            render=_rendered,
        )
        return Response(
            content=answer.body,
            status_code=answer.status_code,
            media_type=answer.content_type,
            headers={"Idempotent-Replayed": "true"} if replayed else None,
        )
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


def _fingerprint(path: str, body: EvaluationCreate) -> str:
    """The request as parsed: the same report hashes alike whatever its JSON spacing."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"POST {path}\n{canonical}".encode()).hexdigest()


def _rendered(row: object) -> idempotency.StoredResponse:
    """The 201 answer, as FastAPI would serialise the response model (compact JSON)."""
    content = json.dumps(
        Evaluation.model_validate(row).model_dump(mode="json"),
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )
    return idempotency.StoredResponse(201, "application/json", content)


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
