"""A request id per request: accepted from ``X-Request-ID`` when sane, else generated,
echoed in the response and readable by every log line of the request (``current``).
The front door (api/front_door.py) binds it for each HTTP request and appends the header."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

from starlette.types import Scope

__all__ = ["HEADER", "HEADER_KEY", "bind", "current", "of", "unbind"]

HEADER = "X-Request-ID"
HEADER_KEY = HEADER.lower().encode()
# what a proxy or client may pass through: ids, UUIDs, trace ids; nothing that could
# forge a log line (no spaces, quotes or line breaks) and nothing unbounded
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("fedrec_request_id", default=None)


def current() -> str | None:
    """The id of the request being served, or None outside a request."""
    return _request_id.get()


def of(scope: Scope) -> str:
    """The request's id: its sane ``X-Request-ID``, else a new one."""
    incoming = ""
    for name, value in scope["headers"]:
        if name == HEADER_KEY:
            incoming = value.decode("latin-1")
            break
    return incoming if _SANE.fullmatch(incoming) else uuid.uuid4().hex


def bind(request_id: str) -> Token[str | None]:
    """Make ``request_id`` the current one (log lines read it) until :func:`unbind`."""
    return _request_id.set(request_id)


def unbind(token: Token[str | None]) -> None:
    _request_id.reset(token)
