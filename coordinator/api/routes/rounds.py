"""Rounds: current (with long-poll, alone or with its base weights), history, upload,
aggregate."""

import asyncio
import json
import logging
import re
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from coordinator.api import examples, telemetry
from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep, WorkerDep
from coordinator.api.fast_path import (
    FastPathRoute,
    fast_path,
    header_values,
    json_answer,
    known_principal,
    query_params,
)
from coordinator.api.openapi import Responses, keyed_write, problem, problems, success
from coordinator.api.routes.models import ENCODINGS_BY_NAME, WEIGHTS, weights_answer
from coordinator.api.schemas import (
    EvaluationCreate,
    ModelVersion,
    Receipt,
    Round,
    RoundList,
    model_version_out,
    receipt_out,
    round_out,
)
from coordinator.domain import audit, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import CoordinatorError, UnsupportedMediaType, ValidationFailed
from coordinator.domain.evaluation import BaseEvaluation
from coordinator.domain.round_notifier import MAX_LONG_POLL_SECONDS_LIMIT
from coordinator.domain.specs import DB_INT_MAX
from participant_sdk.wire import BASE_EVALUATION_HEADER, ROUND_HEADER, Encoding

log = logging.getLogger("fedrec.api")
router = APIRouter(
    route_class=FastPathRoute, prefix="/federations/{federation_id}/rounds", tags=["rounds"]
)

# bounded to what the rounds.number column holds, so a huge number is a 422, never a 500
RoundNumber = Annotated[int, Path(ge=0, le=DB_INT_MAX, description="The round number.")]
_SEEN = problems(403) | problem(404, "No such federation")
# both long-polling routes refuse a token's poll past its cap alike
_LONG_POLLS_HELD = problem(
    429,
    "A rate limit, or this token already holds FEDREC_MAX_LONG_POLLS_PER_TOKEN long-polls "
    "(retry after `Retry-After`)",
    detail="this token already holds 4 long-polls (FEDREC_MAX_LONG_POLLS_PER_TOKEN); "
    "wait for one to return",
)
_ROUND_SEEN = problems(403) | problem(
    404, "No such federation or round", slug="round-not-found", detail="round 9 does not exist"
)
_NUMBER = problem(
    422,
    f"The round number is not an integer in [0, {DB_INT_MAX}]",
    detail="number: Input should be a valid integer",
)


WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_LONG_POLL_SECONDS_LIMIT,
        description="Long-poll up to this many seconds, at most the coordinator's "
        "`max_wait_seconds` (with `after` and `in_cohort=true`: `max_cohort_wait_seconds`; "
        "60 s is accepted by every fedrec coordinator).",
    ),
]
AfterQuery = Annotated[
    int | None,
    Query(ge=0, le=DB_INT_MAX, description="Return once the current round number exceeds this."),
]
InCohortQuery = Annotated[
    bool,
    Query(
        description="With `after` and a participant token, under `rounds.sampling`: "
        "also wait through the rounds this participant was not drawn into (return once "
        "a round it takes part in opens, training stops, or `wait` passes). Sitting "
        "out a round costs the coordinator no request."
    ),
]


async def _current_round(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    wait: float,
    after: int | None,
    in_cohort: bool,
) -> Round:
    """The round ``GET …/rounds/current`` answers (after its long-poll, if any)."""
    max_wait = ctx.notifier.max_wait_seconds
    max_cohort_wait = ctx.notifier.max_cohort_wait_seconds
    # a poll that sits out the rounds its participant is not drawn into may wait longer:
    # it is answered at once for a round it takes part in, so only its renewals are cut
    if in_cohort and after is not None:
        if wait > max_cohort_wait:
            raise ValidationFailed(
                f"wait: this coordinator holds a long-poll with in_cohort=true at most "
                f"{max_cohort_wait} s (FEDREC_MAX_COHORT_WAIT_SECONDS); ask for at most that",
                max_wait_seconds=max_wait,
                max_cohort_wait_seconds=max_cohort_wait,
            )
    elif wait > max_wait:
        raise ValidationFailed(
            f"wait: this coordinator holds a long-poll at most {max_wait} s "
            "(FEDREC_MAX_LONG_POLL_SECONDS; with after and in_cohort=true, "
            f"{max_cohort_wait} s); ask for at most that",
            max_wait_seconds=max_wait,
            max_cohort_wait_seconds=max_cohort_wait,
        )
    wait_seconds = wait if after is not None else 0
    with telemetry.LONG_POLLS.track_inprogress() if wait_seconds else nullcontext():
        _federation, row = await rounds.wait_for_round(
            ctx,
            principal,
            federation_id,
            after=after,
            wait_seconds=wait_seconds,
            until_in_cohort=in_cohort,
        )
    member = await rounds.cohort_membership(ctx, principal, row)
    return round_out(row, member, max_wait, max_cohort_wait)


async def _current_round_answer(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    wait: float,
    after: int | None,
    in_cohort: bool,
) -> Response:
    """The answer of ``GET …/rounds/current``, serialised once (no response-model pass)."""
    return json_answer(await _current_round(ctx, principal, federation_id, wait, after, in_cohort))


def _has_work(current: Round, after: int | None) -> bool:
    """Whether the caller trains on ``current``: open, it takes part (drawn, or no
    sampling), and past the rounds it says it is done with (``after``)."""
    return (
        current.state == "open"
        and current.in_cohort is not False
        and (after is None or current.number > after)
    )


async def _round_weights_answer(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    wait: float,
    after: int | None,
    in_cohort: bool,
    encoding: Encoding | None,
    if_none_match: str | None,
) -> Response:
    """The answer of ``GET …/rounds/current/weights``: the round of ``GET …/rounds/current``
    in the ``X-Round`` header, and its base version's weights download (the same bytes,
    ETag and signed manifest) when the caller has work in it; 204 when it has none."""
    current = await _current_round(ctx, principal, federation_id, wait, after, in_cohort)
    # the round's JSON is ASCII (numbers, timestamps, literals): a valid header value
    header = current.__pydantic_serializer__.to_json(current, by_alias=True).decode("ascii")
    if not _has_work(current, after):
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers={ROUND_HEADER: header})
    response = await weights_answer(
        ctx, principal, federation_id, str(current.base_version), encoding, if_none_match
    )
    response.headers[ROUND_HEADER] = header
    return response


_POLL_PARAMS = frozenset({"wait", "after", "in_cohort"})
# what the route's Query declarations accept, written out: anything else is FastAPI's
_WAIT = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6})?")
_AFTER = re.compile(r"[0-9]{1,10}")
_BOOLEAN = {"true": True, "false": False}


def _poll_params(params: dict[str, str]) -> tuple[float, int | None, bool] | None:
    """``wait``, ``after`` and ``in_cohort`` as the route declares them, or None for
    anything FastAPI should read (and perhaps refuse) itself."""
    wait_text, after_text = params.get("wait", "0"), params.get("after")
    in_cohort = _BOOLEAN.get(params.get("in_cohort", "false"))
    if in_cohort is None or not _WAIT.fullmatch(wait_text):
        return None
    wait = float(wait_text)
    if wait > MAX_LONG_POLL_SECONDS_LIMIT:
        return None
    after = None
    if after_text is not None:
        if not _AFTER.fullmatch(after_text) or int(after_text) > DB_INT_MAX:
            return None
        after = int(after_text)
    return wait, after, in_cohort


async def _fast_current_round(request: Request) -> Response | None:
    principal = known_principal(request)
    params = query_params(request, _POLL_PARAMS)
    if principal is None or params is None:
        return None
    poll = _poll_params(params)
    if poll is None:
        return None
    ctx: Context = request.app.state.context
    federation_id = request.path_params["federation_id"]
    return await _current_round_answer(ctx, principal, federation_id, *poll)


_ROUND_WEIGHTS_PARAMS = _POLL_PARAMS | {"encoding"}
_ROUND_WEIGHTS_HEADERS = frozenset({b"if-none-match"})


async def _fast_round_weights(request: Request) -> Response | None:
    principal = known_principal(request)
    params = query_params(request, _ROUND_WEIGHTS_PARAMS)
    found = header_values(request, _ROUND_WEIGHTS_HEADERS)
    if principal is None or params is None or found is None:
        return None
    poll = _poll_params(params)
    encoding: Encoding | None = None
    if "encoding" in params:
        encoding = ENCODINGS_BY_NAME.get(params["encoding"])
        if encoding is None:
            return None
    if poll is None:
        return None
    ctx: Context = request.app.state.context
    federation_id = request.path_params["federation_id"]
    return await _round_weights_answer(
        ctx, principal, federation_id, *poll, encoding, found.get(b"if-none-match")
    )


@router.get(
    "/current",
    response_model=Round,
    summary="Read (or wait for) the current round",
    responses=success(200, "The current round (the last one once training stopped)", examples.ROUND)
    | _SEEN
    | problem(
        422,
        "`wait` is outside [0, `max_wait_seconds`] (FEDREC_MAX_LONG_POLL_SECONDS, advertised "
        "on every answer of this route; with `after` and `in_cohort=true`, "
        "`max_cohort_wait_seconds`) or `after` is negative",
        detail="wait: this coordinator holds a long-poll at most 300 s "
        "(FEDREC_MAX_LONG_POLL_SECONDS); ask for at most that",
    )
    | _LONG_POLLS_HELD,
)
@fast_path(_fast_current_round)
async def get_current_round(
    federation_id: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    wait: WaitQuery = 0,
    after: AfterQuery = None,
    in_cohort: InCohortQuery = False,
) -> Response:
    """The current round; with `wait` and `after`, long-poll until the next round opens."""
    return await _current_round_answer(ctx, principal, federation_id, wait, after, in_cohort)


_ROUND_HEADER_DOC = {
    ROUND_HEADER: {
        "description": "The round, as `GET …/rounds/current` answers it (JSON)",
        "schema": {"type": "string"},
    }
}
_ROUND_WEIGHTS: Responses = {
    200: {
        **WEIGHTS[200],
        "description": "The round has work for the caller: its base version's weights "
        "download (`X-Model-Version` is the round's `base_version`; `ETag`, "
        "`X-Model-Encoding`, `X-Model-Manifest`, `X-Model-Signature` as on "
        "`GET …/models/{version}/weights`), the round in `X-Round`",
        "headers": _ROUND_HEADER_DOC,
    },
    204: {
        "description": "No work for the caller in the round `X-Round` carries: not open "
        "(closed, aggregating, failed, or training stopped), not drawn into it "
        "(`in_cohort` false, or its sample not drawn yet), or not numbered above `after`",
        "headers": _ROUND_HEADER_DOC,
    },
    304: {
        "description": "Work, and `If-None-Match` named the base version's ETag: the "
        "round in `X-Round`, no body",
        "headers": _ROUND_HEADER_DOC,
    },
}


@router.get(
    "/current/weights",
    response_class=Response,
    summary="Read (or wait for) the current round, with its base weights",
    responses=_ROUND_WEIGHTS
    | _SEEN
    | problem(
        422,
        "`wait` or `after` as on `GET …/rounds/current`, or the `encoding` is not served "
        "(float32 and the federation's transport encoding are)",
        detail="wait: this coordinator holds a long-poll at most 300 s "
        "(FEDREC_MAX_LONG_POLL_SECONDS); ask for at most that",
    )
    | _LONG_POLLS_HELD,
)
@fast_path(_fast_round_weights)
async def get_current_round_weights(
    federation_id: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    wait: WaitQuery = 0,
    after: AfterQuery = None,
    in_cohort: InCohortQuery = False,
    encoding: Annotated[
        Encoding | None,
        Query(
            description="As on `GET …/models/{version}/weights`: `float32` or the "
            "federation's `transport.encoding`; default: the federation's.",
            examples=["float16"],
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """`GET …/rounds/current` (same `wait`, `after`, `in_cohort`) and, when that round has
    work for the caller, `GET …/models/{base_version}/weights` in one request: a
    participant learns that a round is open and gets the weights it trains from at once.
    The round travels in the `X-Round` header (the JSON `GET …/rounds/current` answers);
    the body, `ETag` and signed manifest are the version's weights download, verified the
    same way. Work means: the round is open, the caller takes part in it (`in_cohort` not
    false), and its number exceeds `after` when given. Otherwise 204 with `X-Round` only."""
    return await _round_weights_answer(
        ctx, principal, federation_id, wait, after, in_cohort, encoding, if_none_match
    )


@router.get(
    "",
    response_model=RoundList,
    summary="List the rounds",
    responses=success(200, "Every round so far", {"items": [examples.CLOSED_ROUND, examples.ROUND]})
    | _SEEN,
)
def list_rounds(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> RoundList:
    """Round history: state, update count and resulting version."""
    rows = rounds.list_rounds(ctx, principal, federation_id)
    members = rounds.cohort_memberships(ctx, principal, rows)
    return RoundList(items=[round_out(r, m) for r, m in zip(rows, members, strict=True)])


@router.get(
    "/{number}",
    response_model=Round,
    summary="Read a round",
    responses=success(200, "The round", examples.CLOSED_ROUND) | _ROUND_SEEN | _NUMBER,
)
def get_round(
    federation_id: str, number: RoundNumber, ctx: ContextDep, principal: PrincipalDep
) -> Round:
    """One round."""
    row = rounds.get_round(ctx, principal, federation_id, number)
    [member] = rounds.cohort_memberships(ctx, principal, [row])
    return round_out(row, member)


async def _upload_answer(
    request: Request,
    ctx: Context,
    principal: Principal,
    accept_upload: Callable[[Callable[[], rounds.Receipt], str, int], rounds.Receipt],
    federation_id: str,
    number: int,
    idempotency_key: str | None,
    x_base_evaluation: str | None,
) -> Response:
    """The answer of ``PUT …/rounds/{number}/update``, serialised once."""
    evaluation = None if x_base_evaluation is None else _base_evaluation(x_base_evaluation)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"send the update as 'application/octet-stream' (safetensors), not {content_type!r}"
        )
    refused: CoordinatorError | None = None
    # from its first byte to its COMMIT the upload is announced to the upload group
    # commit: a leader about to commit waits (briefly) for it to share its fsync
    with rounds.upload_arriving(ctx):
        try:
            body = await request.body()
        except ClientDisconnect:
            # the participant went away mid-body: nothing was stored, nobody reads a
            # reply; an expected event on real networks, not an internal error
            log.info("upload to round %d of %s cut off by the client", number, federation_id)
            return Response(status_code=499)
        try:
            # the upload, then on the same thread the aggregation it may complete (a small
            # round: aggregated there; any other: kicked to the worker's thread)
            receipt = await run_in_threadpool(
                accept_upload,
                partial(
                    rounds.submit_update,
                    ctx,
                    principal,
                    federation_id,
                    number,
                    body,
                    idempotency_key=idempotency_key,
                    evaluation=evaluation,
                ),
                federation_id,
                number,
            )
        except CoordinatorError as exc:
            if exc.status_code >= 500:  # a busy database, not a refusal
                raise
            refused = exc
    if refused is not None:
        await run_in_threadpool(
            partial(
                audit.record_refusal,
                ctx,
                principal,
                action="upload",
                federation_id=federation_id,
                subject=f"round {number}",
                slug=refused.slug,
            )
        )
        raise refused
    created = status.HTTP_201_CREATED if receipt.created else status.HTTP_200_OK
    return json_answer(receipt_out(receipt.update), created)


_UPLOAD_HEADERS_REPORT = BASE_EVALUATION_HEADER.lower().encode()
_UPLOAD_HEADERS = frozenset({b"idempotency-key", _UPLOAD_HEADERS_REPORT})
_NUMBER_TEXT = re.compile(r"[0-9]{1,10}")


async def _fast_upload(request: Request) -> Response | None:
    principal = known_principal(request)
    found = header_values(request, _UPLOAD_HEADERS)
    number_text = request.path_params["number"]
    if (
        principal is None
        or found is None
        or not _NUMBER_TEXT.fullmatch(number_text)
        or int(number_text) > DB_INT_MAX
    ):
        return None
    key = found.get(b"idempotency-key")
    report = found.get(_UPLOAD_HEADERS_REPORT)
    # the Header declarations' max_length, in characters as pydantic counts them
    if (key is not None and len(key) > 200) or (report is not None and len(report) > 4096):
        return None
    ctx: Context = request.app.state.context
    federation_id = request.path_params["federation_id"]
    return await _upload_answer(
        request,
        ctx,
        principal,
        request.app.state.worker.accept_upload,
        federation_id,
        int(number_text),
        key,
        report,
    )


@router.put(
    "/{number}/update",
    response_model=Receipt,
    status_code=status.HTTP_201_CREATED,
    summary="Upload this participant's update",
    responses=success(201, "The update was accepted", examples.RECEIPT)
    | success(200, "The same bytes again: the original receipt", examples.RECEIPT, Receipt)
    | problem(
        403,
        "Only a participant of this federation uploads",
        detail="this operation needs a participant token",
    )
    | problem(
        404, "No such federation or round", slug="round-not-found", detail="round 9 does not exist"
    )
    | problem(
        409,
        "The round is closed or not open yet, the federation completed, this participant "
        "already sent different bytes to the round, or it was not drawn into the round's "
        "sample (`not-sampled`, under `rounds.sampling`: wait for the next round)",
        slug="round-closed",
        title="Round closed",
        detail="round 3 is closed; the current round is 4",
        round=3,
        current_round=4,
    )
    | problems(413, 415)
    | problem(
        422,
        "The bytes are not a valid update for the model (`field` names the tensor; "
        "`num_examples` above the federation's `limits.max_num_examples`), the round "
        f"number is not in [0, {DB_INT_MAX}], or the Idempotency-Key came with other bytes",
        slug="invalid-update",
        title="Invalid update",
        detail="tensor item_factors has shape (10, 8), expected (1682, 64)",
        field="item_factors",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The update as safetensors bytes: deltas of the round's base "
            "version (`participant_sdk.wire.encode_update` writes them).",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
@fast_path(_fast_upload)
async def upload_update(
    federation_id: str,
    number: RoundNumber,
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    x_base_evaluation: Annotated[
        str | None,
        Header(
            max_length=4096,
            description="Optional: this participant's validation figures of the round's "
            'base version, JSON `{"split": "validation", "metrics": {…}, "num_users": n}` '
            "(as `POST …/models/{base}/evaluations` takes them), recorded with the update.",
        ),
    ] = None,
) -> Response:
    """Upload this participant's update (safetensors deltas) for round `number`."""
    return await _upload_answer(
        request,
        ctx,
        principal,
        worker.accept_upload,
        federation_id,
        number,
        idempotency_key,
        x_base_evaluation,
    )


def _base_evaluation(header: str) -> BaseEvaluation:
    """The ``X-Base-Evaluation`` header, validated as an evaluation report would be."""
    try:
        report = EvaluationCreate.model_validate(json.loads(header))
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        reason = (
            f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
            if first
            else "not JSON"
        )
        raise ValidationFailed(
            f"{BASE_EVALUATION_HEADER} must be JSON "
            '{"split": "validation", "metrics": {...}, "num_users": n}: ' + reason,
            field=BASE_EVALUATION_HEADER,
        ) from None
    if report.split != "validation":
        raise ValidationFailed(
            f"{BASE_EVALUATION_HEADER} carries validation figures of the base version only; "
            "report test figures with POST …/models/{version}/evaluations",
            field=BASE_EVALUATION_HEADER,
        )
    return BaseEvaluation(metrics=report.metrics, num_users=report.num_users)


@router.post(
    "/{number}/aggregate",
    response_model=ModelVersion,
    status_code=status.HTTP_201_CREATED,
    summary="Aggregate a round now",
    responses=success(201, "The version the round produced", examples.MODEL_VERSION)
    | problem(403, "Only the admin aggregates on demand")
    | problem(
        404, "No such federation or round", slug="round-not-found", detail="round 9 does not exist"
    )
    | keyed_write()
    | problem(
        409,
        "The round is not open (closed, failed, or being aggregated), has no updates, "
        "its aggregate is not finite (`non-finite-aggregate`: the round failed, the next "
        "opens on the same base), the privacy budget did not let it open "
        "(`privacy-budget-exhausted`: the federation stopped before exceeding "
        "`privacy.dp.max_epsilon`), or the same Idempotency-Key is still running",
        slug="no-updates",
        title="Round has no updates",
        detail="round 3 has no updates to aggregate",
    ),
)
async def aggregate(
    federation_id: str, number: RoundNumber, admin: AdminDep, worker: WorkerDep
) -> ModelVersion:
    """Aggregate round `number` now (admin) and return the new model version."""
    # the same job as the upload kick and the timer, on the worker; this call waits for it
    outcome = await asyncio.wrap_future(worker.aggregate_now(admin, federation_id, number))
    assert outcome.version is not None
    return model_version_out(outcome.version)
