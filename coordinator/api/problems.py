"""Every error leaves as RFC 9457 ``application/problem+json``.

Domain errors carry their status and slug; other errors are mapped here centrally:
request validation -> 422, database errors as the domain classifies them (a refused
constraint -> 409, a locked or unreachable database -> 503, retryable), anything
else -> 500 with the traceback logged server-side only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.api import telemetry
from coordinator.domain.errors import CoordinatorError, DatabaseError, database_problem

__all__ = ["PROBLEM_MEDIA_TYPE", "add_exception_handlers", "error_response", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("fedrec.api")

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation error"),
}


def problem_response(
    request: Request | None,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:fedrec:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def error_response(request: Request | None, exc: CoordinatorError, **extra: Any) -> JSONResponse:
    """The problem+json response of a domain error."""
    return problem_response(
        request,
        status=exc.status_code,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        **exc.extra,
        **extra,
    )


def _collapse_list_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per distinct (location pattern, message): a catalog of 1,682 integers
    is one mistake, reported once with its first location and a ``count``."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in errors:
        pattern = tuple("*" if isinstance(part, int) else part for part in err["loc"])
        key = (pattern, err["msg"], err["type"])
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {**err, "count": 1}
    return list(seen.values())


def add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(CoordinatorError)
    async def _domain(request: Request, exc: CoordinatorError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _collapse_list_errors(
            [
                {
                    "loc": list(err.get("loc", ())),
                    "msg": err.get("msg", ""),
                    "type": err.get("type"),
                }
                for err in exc.errors()
            ]
        )
        first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        more = int(first.get("count", 1)) - 1
        also = f" (and {more} more entries of {where.rsplit('.', 1)[0]} like it)" if more else ""
        return problem_response(
            request,
            status=422,
            slug="validation-error",
            title="Validation error",
            detail=f"{where}: {first['msg']}{also}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        return problem_response(
            request,
            status=exc.status_code,
            slug=slug,
            title=title,
            detail=str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(DatabaseError)
    async def _database(request: Request, exc: DatabaseError) -> JSONResponse:
        problem = database_problem(exc)
        kind = (
            "other"
            if problem is None
            else ("retryable" if problem.status_code == 503 else "conflict")
        )
        telemetry.DATABASE_ERRORS.labels(kind).inc()
        if problem is None:
            return await _unexpected(request, exc)
        log.warning("database error on %s: %s", request.url.path, exc.orig)
        return await _domain(request, problem)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request,
            status=500,
            slug="internal-error",
            title="Internal error",
            detail="the coordinator failed unexpectedly; the error is in its log",
        )
