"""How the OpenAPI document describes responses: errors as problem+json, examples.

Each route declares the problems it can really answer with ``problems(...)`` /
``problem(...)`` (a new status is one more code in that call, or one more row in
``PROBLEMS``), the idempotency errors of a keyed write with ``keyed_write()``, and its
success body's example with ``success(...)``. ``install`` completes FastAPI's document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from coordinator.api.problems import PROBLEM_MEDIA_TYPE
from coordinator.api.schemas import Problem

__all__ = [
    "PROBLEMS",
    "Responses",
    "body_examples",
    "install",
    "keyed_write",
    "problem",
    "problems",
    "success",
]

Responses = dict[int | str, dict[str, Any]]
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# FastAPI renders the document without null members, examples included ("deployed_version":
# null would vanish and the example would no longer validate): every example given here is
# kept by its rendered form and put back whole by ``install``.
_EXAMPLES: dict[str, Any] = {}


def _key(value: Any) -> str:
    return json.dumps(jsonable_encoder(value, exclude_none=True), sort_keys=True)


def _keep(example: Any) -> Any:
    _EXAMPLES[_key(example)] = example
    return example


@dataclass(frozen=True)
class ProblemDoc:
    description: str
    slug: str
    title: str
    detail: str

    def example(self, status: int) -> dict[str, Any]:
        return {
            "type": f"urn:fedrec:problem:{self.slug}",
            "title": self.title,
            "status": status,
            "detail": self.detail,
            "instance": "/v1/federations/f3b0c1d2e4/rounds/3/update",
        }


# One row per status the API answers; a route picks the ones it can really answer.
PROBLEMS: dict[int, ProblemDoc] = {
    400: ProblemDoc(
        "The Idempotency-Key header is empty or longer than 200 characters",
        "bad-request",
        "Bad request",
        "Idempotency-Key must be 1 to 200 characters",
    ),
    401: ProblemDoc(
        "No token, an unknown token, or an expired or revoked one (`token-expired`, "
        "`token-revoked`, `participant-revoked`: `detail` says how to get a new one)",
        "unauthorized",
        "Unauthorized",
        "send 'Authorization: Bearer <token>' with the admin or a participant token",
    ),
    403: ProblemDoc(
        "The token may not do this (an admin-only route, or another federation)",
        "forbidden",
        "Forbidden",
        "this operation needs the admin token",
    ),
    404: ProblemDoc(
        "No such federation (or round, version, participant)",
        "federation-not-found",
        "Not found",
        "federation f3b0c1d2e4 does not exist",
    ),
    409: ProblemDoc(
        "The request conflicts with the current state, or the same Idempotency-Key is "
        "still running (retry after `Retry-After`)",
        "request-in-progress",
        "Request in progress",
        "a request with this Idempotency-Key is still running; retry shortly",
    ),
    413: ProblemDoc(
        "The body is larger than FEDREC_MAX_UPLOAD_BYTES",
        "payload-too-large",
        "Payload too large",
        "request bodies are limited to 268435456 bytes (FEDREC_MAX_UPLOAD_BYTES)",
    ),
    415: ProblemDoc(
        "The body is not `application/octet-stream`",
        "unsupported-media-type",
        "Unsupported media type",
        "send the update as 'application/octet-stream' (safetensors), not 'application/json'",
    ),
    422: ProblemDoc(
        "The request does not validate; `detail` (and `errors`) say what to fix",
        "validation-error",
        "Validation error",
        "model.dim: Field required",
    ),
    429: ProblemDoc(
        "A rate limit (per participant token, or per client address without a valid token, "
        "failed authentications hardest): retry after `Retry-After` seconds",
        "too-many-requests",
        "Too many requests",
        "this participant token sent more than 50 requests/s (burst 500); retry in 1 s",
    ),
    503: ProblemDoc(
        "The database is busy or unreachable; retry after `Retry-After` seconds",
        "service-unavailable",
        "Service unavailable",
        "the database is busy; retry shortly",
    ),
}


def problem(
    status: int,
    description: str | None = None,
    *,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    **extension: Any,
) -> Responses:
    """One problem response; the arguments override the table row's description and
    example (``extension``: the problem type's extra members, e.g. ``field``)."""
    doc = PROBLEMS[status]
    example = ProblemDoc(
        doc.description, slug or doc.slug, title or doc.title, detail or doc.detail
    ).example(status)
    return {
        status: {
            "description": description or doc.description,
            "content": {
                PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF, "example": _keep(example | extension)}
            },
        }
    }


def problems(*statuses: int) -> Responses:
    """The problem responses of ``statuses`` with their table descriptions."""
    out: Responses = {}
    for status in statuses:
        out |= problem(status)
    return out


def keyed_write(*, validates: bool = True) -> Responses:
    """What a non-GET JSON request with an Idempotency-Key can meet besides its own errors
    (coordinator/api/idempotency.py): a malformed key, the key still running, or the key
    reused with another request; ``validates``: the request also has a body or parameters
    that can fail validation."""
    reused = "the Idempotency-Key was first sent with another request"
    return (
        problem(400)
        | problem(409)
        | problem(
            422,
            f"The request does not validate (`detail` says what to fix), or {reused}"
            if validates
            else f"Idempotency-Key reused: {reused}",
            slug="idempotency-key-reused",
            title="Idempotency-Key reused",
            detail="this Idempotency-Key was used for a different request; use a fresh key",
        )
    )


def secret_not_replayable(done: str, remedy: str) -> Responses:
    """The 409 of a route whose answer carries a secret (``Cache-Control: no-store``): a
    replay of its Idempotency-Key never returns it (coordinator/api/idempotency.py).
    ``done``: what the first request did; ``remedy``: how to get a fresh secret."""
    return problem(
        409,
        "The same Idempotency-Key is still running (retry after `Retry-After`), or it already "
        f"{done}: the secret is never stored, so a replay says how to get a fresh one",
        slug="secret-not-replayable",
        title="Response not replayable",
        detail="the response to this Idempotency-Key carried a secret and is never stored; "
        + remedy,
    )


def success(
    status: int, description: str, example: Any, model: type[BaseModel] | None = None
) -> Responses:
    """The success response's description and an example of its JSON body; ``model``
    for a status other than the route's own (whose model is its ``response_model``)."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"example": _keep(example)}},
    }
    if model is not None:
        response["model"] = model
    return {status: response}


def body_examples(**named: tuple[str, Any]) -> dict[str, dict[str, Any]]:
    """``openapi_examples`` of a JSON request body: name -> (summary, value)."""
    return {
        name: {"summary": summary, "value": _keep(value)}
        for name, (summary, value) in named.items()
    }


_GENERATED_422 = ("HTTPValidationError", "ValidationError")


def _drop_generated_validation_errors(document: dict[str, Any]) -> None:
    """FastAPI adds a 422 (application/json, not problem+json) to every operation with a
    parameter that does not declare one, even a free-form string that cannot fail;
    routes declare their real 422s, so the generated ones go."""
    generated = {"$ref": f"#/components/schemas/{_GENERATED_422[0]}"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            body = responses.get("422", {}).get("content", {}).get("application/json", {})
            if body.get("schema") == generated:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in _GENERATED_422:
        schemas.pop(name, None)


def _restore_examples(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "example":
                node[key] = _EXAMPLES.get(_key(value), value)
            elif key == "examples" and isinstance(value, dict):
                for named in value.values():
                    if isinstance(named, dict) and "value" in named:
                        named["value"] = _EXAMPLES.get(_key(named["value"]), named["value"])
            else:
                _restore_examples(value)
    elif isinstance(node, list):
        for value in node:
            _restore_examples(value)


def install(app: FastAPI) -> None:
    """FastAPI's document, generated once and completed: the ``Problem`` schema the
    errors refer to, no generic 422s, examples with their null members."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # FastAPI's, with every setting of the app
            _drop_generated_validation_errors(document)
            _restore_examples(document)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
