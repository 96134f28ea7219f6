"""A request id per request: accepted from ``X-Request-ID`` when sane, else generated,
echoed in the response and readable by every log line of the request (``current``)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HEADER", "RequestIdMiddleware", "current"]

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
# what a proxy or client may pass through: ids, UUIDs, trace ids; nothing that could
# forge a log line (no spaces, quotes or line breaks) and nothing unbounded
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("fedrec_request_id", default=None)


def current() -> str | None:
    """The id of the request being served, or None outside a request."""
    return _request_id.get()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == _HEADER_KEY:
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SANE.fullmatch(incoming) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        raw_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # a new list (a cached response's own must not grow), the id appended raw:
                # no route sets this header, so there is nothing to replace
                message["headers"] = [*message.get("headers", ()), (_HEADER_KEY, raw_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
