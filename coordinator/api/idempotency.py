"""The HTTP side of Idempotency-Key: buffer, authenticate, replay or record.

The rules live in :mod:`coordinator.domain.idempotency`. This middleware only runs
them for non-GET JSON requests that carry a key, and only once the caller is
authenticated: a request without a valid token passes straight through to the app
(which answers 401/403) and leaves no record. Upload bodies
(``application/octet-stream``) pass through too: the upload use case replays by key
itself, and so does the evaluation report (``POST …/models/{v}/evaluations``: its record
and its row share one transaction); the middleware only checks the key's length for it.

A response marked ``Cache-Control: no-store`` (an enrolment: it carries a token) is
never stored: the record keeps, for its replay, a 409 ``secret-not-replayable`` naming
the resource the first attempt created.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.problems import PROBLEM_MEDIA_TYPE, error_response, problem_response
from coordinator.domain import idempotency
from coordinator.domain.auth import Principal, authenticate
from coordinator.domain.context import Context
from coordinator.domain.errors import CoordinatorError

__all__ = ["IdempotencyMiddleware"]

_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


TOKEN_REFRESH_SUFFIX = "/participants/me/token"  # nosec B105 # a route path, not a secret
# the evaluation report records its key in its own transaction (routes/evaluations.py)
EVALUATION_REPORT_SUFFIX = "/evaluations"


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, context: Context) -> None:
        self.app = app
        self.ctx = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)  # a GET: nothing to look up or record
            return
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"idempotency-key")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            scope["type"] != "http"
            or scope["method"] not in _METHODS
            or key is None
            or content_type == b"application/octet-stream"
            # a token refresh answers with a secret: never stored, never replayed
            or scope["path"].endswith(TOKEN_REFRESH_SUFFIX)
        ):
            await self.app(scope, receive, send)
            return
        if not key or len(key) > idempotency.MAX_KEY_LENGTH:
            await _problem(
                scope,
                status=400,
                slug="bad-request",
                title="Bad request",
                detail=f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} characters",
            )(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].endswith(EVALUATION_REPORT_SUFFIX):
            await self.app(scope, receive, send)  # replays by key itself
            return
        # admission control (coordinator/api/admission.py) already authenticated the token
        principal = (scope.get("state") or {}).get("principal")
        if not isinstance(principal, Principal):
            principal = await run_in_threadpool(self._authenticate, headers.get(b"authorization"))
        if principal is None:
            await self.app(scope, receive, send)  # the app answers 401/403; nothing recorded
            return
        # the route's dependency reuses it instead of authenticating again
        scope.setdefault("state", {})["principal"] = principal

        body = await _read_body(receive)
        fingerprint = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body
        ).hexdigest()
        try:
            claimed = await run_in_threadpool(
                idempotency.begin,
                self.ctx,
                principal,
                key.decode("latin-1"),
                method=scope["method"],
                path=scope["path"],
                fingerprint=fingerprint,
            )
        except CoordinatorError as exc:
            await error_response(None, exc, instance=scope.get("path"))(scope, receive, send)
            return
        if isinstance(claimed, idempotency.StoredResponse):
            await Response(
                content=claimed.body,
                status_code=claimed.status_code,
                media_type=claimed.content_type,
                headers={"Idempotent-Replayed": "true"},
            )(scope, _replay_receive(body, receive), send)
            return

        status: int | None = None
        chunks: list[bytes] = []
        response_type: str | None = None
        secret = False

        async def capture(message: Message) -> None:
            nonlocal status, response_type, secret
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        response_type = value.decode("latin-1")
                    elif name.lower() == b"cache-control" and b"no-store" in value.lower():
                        secret = True
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, _replay_receive(body, receive), capture)
        finally:
            response_body = b"".join(chunks)
            if secret and status is not None and status < 300:
                status, response_type, response_body = _not_replayable(
                    scope["path"], status, response_body
                )
            await run_in_threadpool(
                idempotency.finish,
                self.ctx,
                claimed,
                status_code=status,
                content_type=response_type,
                body=response_body,
            )

    def _authenticate(self, authorization: bytes | None) -> Principal | None:
        scheme, _, token = (authorization or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            # the app authenticates again and records a failure once
            return authenticate(self.ctx, token.strip(), audit_failure=False)
        except CoordinatorError:
            return None


def _not_replayable(path: str, status: int, body: bytes) -> tuple[int, str, bytes]:
    """What a replay of a secret-bearing response answers: it is never stored."""
    try:
        created = json.loads(body).get("id")
    except (ValueError, AttributeError):
        created = None
    response = problem_response(
        None,
        status=409,
        slug="secret-not-replayable",
        title="Response not replayable",
        detail=f"the first request with this Idempotency-Key succeeded ({status}), but its "
        "response carried a token, which is shown only once and never stored"
        + (
            f"; re-enrol participant {created} (POST …/participants/{created}/reenrol) for "
            "a fresh token"
            if isinstance(created, str)
            else "; repeat the request with a new key"
        ),
        instance=path,
        created_id=created if isinstance(created, str) else None,
    )
    return 409, PROBLEM_MEDIA_TYPE, bytes(response.body)


def _problem(scope: Scope, **fields: Any) -> Response:
    return problem_response(None, instance=scope.get("path"), **fields)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            return b"".join(chunks)


def _replay_receive(body: bytes, original: Receive) -> Receive:
    """Hand the buffered body to the app once; afterwards wait for a real disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
