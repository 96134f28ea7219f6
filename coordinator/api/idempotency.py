"""Replay the original response to a retried non-GET request with the same Idempotency-Key.

The SDK sends one key per logical request and reuses it on every retry, so a retry
whose first attempt did reach the coordinator (a lost response, a timeout) does not
create a second federation or participant. Keys are scoped to the caller (a keyed hash
of its credentials). A key reused with a different request body is rejected (422); a
retry that arrives while the first attempt is still running gets 409 and Retry-After.
5xx responses are not recorded, so the retry runs again.

Upload bodies (``application/octet-stream``) are excluded: the update route is already
idempotent on the body's sha256, and buffering large bodies twice is wasteful.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.problems import problem_response
from coordinator.domain.context import Context
from coordinator.store.models import IdempotencyRecord, utc_now
from coordinator.store.repository import IdempotencyRepository

__all__ = ["IdempotencyMiddleware"]

_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_MAX_KEY_LENGTH = 200


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, context: Context) -> None:
        self.app = app
        self.ctx = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"idempotency-key")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            scope["type"] != "http"
            or scope["method"] not in _METHODS
            or key is None
            or content_type == b"application/octet-stream"
        ):
            await self.app(scope, receive, send)
            return
        if not key or len(key) > _MAX_KEY_LENGTH:
            await problem_response(
                None,
                status=400,
                slug="bad-request",
                title="Bad request",
                detail=f"Idempotency-Key must be 1 to {_MAX_KEY_LENGTH} characters",
                instance=scope.get("path"),
            )(scope, receive, send)
            return

        body = await _read_body(receive)
        principal = hmac.new(
            self.ctx.secret_key, headers.get(b"authorization", b""), hashlib.sha256
        ).hexdigest()
        fingerprint = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body
        ).hexdigest()
        record_id, replay = await run_in_threadpool(
            self._claim, principal, key.decode("latin-1"), scope, fingerprint
        )
        if replay is not None:
            await replay(scope, _replay_receive(body, receive), send)
            return

        status: int | None = None
        chunks: list[bytes] = []
        response_type: str | None = None

        async def capture(message: Message) -> None:
            nonlocal status, response_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        response_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, _replay_receive(body, receive), capture)
        finally:
            await run_in_threadpool(
                self._finish, record_id, status, response_type, b"".join(chunks)
            )

    def _claim(self, principal: str, key: str, scope: Scope, fingerprint: str) -> tuple[str, Any]:
        """Insert a pending record, or return the response to replay instead."""
        try:
            with self.ctx.sessions.begin() as session:
                record = IdempotencyRecord(
                    principal=principal,
                    key=key,
                    method=scope["method"],
                    path=scope["path"][:500],
                    request_sha256=fingerprint,
                    created_at=utc_now(),
                )
                IdempotencyRepository(session).add(record)
                return record.id, None
        except IntegrityError:
            pass
        with self.ctx.read_sessions() as session:
            existing = IdempotencyRepository(session).get(principal, key)
        if existing is None:  # deleted meanwhile (the first attempt failed): run again
            return self._claim(principal, key, scope, fingerprint)
        if existing.request_sha256 != fingerprint:
            return "", problem_response(
                None,
                status=422,
                slug="idempotency-key-reused",
                title="Idempotency-Key reused",
                detail="this Idempotency-Key was used for a different request; use a new key",
                instance=scope.get("path"),
            )
        if existing.status_code is None:
            return "", problem_response(
                None,
                status=409,
                slug="request-in-progress",
                title="Request in progress",
                detail="the first request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
                instance=scope.get("path"),
            )
        return "", Response(
            content=existing.response_body or "",
            status_code=existing.status_code,
            media_type=existing.content_type,
            headers={"Idempotent-Replayed": "true"},
        )

    def _finish(
        self, record_id: str, status: int | None, content_type: str | None, body: bytes
    ) -> None:
        with self.ctx.sessions.begin() as session:
            repo = IdempotencyRepository(session)
            if status is None or status >= 500:
                repo.delete(record_id)
                return
            record = session.get(IdempotencyRecord, record_id)
            if record is not None:
                record.status_code = status
                record.content_type = content_type
                record.response_body = body.decode("utf-8", errors="replace")


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
