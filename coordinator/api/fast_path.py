"""Hand-written handlers for participants' hot requests, in front of FastAPI's generic one.

Per request FastAPI solves the route's dependency tree (the bearer scheme, the context, the
principal), validates every parameter with pydantic, and validates and serialises the answer
again: on a poll or a cached weights download that was more CPU than the work itself (an
in-process probe: ~35 % of a poll's event-loop time in ``solve_dependencies``). A route of
:class:`FastPathRoute` whose endpoint is marked ``@fast_path(handler)`` first offers the
request to ``handler``, which answers the ordinary case (parameters it can read exactly as
the route declares them, a principal admission control already resolved) and returns None
for anything else; FastAPI's handler then answers as before (its 422s, 401s, everything).
The route's declaration, and so the OpenAPI document, is unchanged; the endpoint and the
fast handler call the same function for the answer, so both give the same bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.domain.auth import Principal

__all__ = [
    "FastPathRoute",
    "fast_handler_of",
    "fast_path",
    "known_principal",
    "header_values",
    "json_answer",
    "query_params",
]

FastHandler = Callable[[Request], Awaitable[Response | None]]
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
_ATTRIBUTE = "__fedrec_fast_path__"


def fast_path(handler: FastHandler) -> Callable[[_Endpoint], _Endpoint]:
    """Mark an endpoint: its route first offers each request to ``handler``."""

    def mark(endpoint: _Endpoint) -> _Endpoint:
        setattr(endpoint, _ATTRIBUTE, handler)
        return endpoint

    return mark


def fast_handler_of(route: Any) -> FastHandler | None:
    """The fast handler of a route (or of FastAPI's effective context of one), if marked."""
    handler = getattr(getattr(route, "endpoint", None), _ATTRIBUTE, None)
    return handler if callable(handler) else None


class FastPathRoute(JsonOffLoopRoute):
    # tests switch it off to compare both paths' answers
    enabled = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()
        fast: FastHandler | None = getattr(self.endpoint, _ATTRIBUTE, None)
        if fast is None:
            return generic

        async def fast_or_generic(request: Request) -> Response:
            if FastPathRoute.enabled:
                response = await fast(request)
                if response is not None:
                    return response
            return await generic(request)

        return fast_or_generic


def known_principal(request: Request) -> Principal | None:
    """The principal admission control resolved for this request (None: let FastAPI's
    dependency authenticate, and answer a missing or bad token)."""
    state = request.scope.get("state")
    principal = state.get("principal") if state else None
    return principal if isinstance(principal, Principal) else None


def query_params(request: Request, names: frozenset[str]) -> dict[str, str] | None:
    """The query's values of ``names``, or None if one of them came twice (FastAPI's
    reading of a repeated scalar parameter is its own business: let it answer). Other
    names are ignored, as FastAPI ignores them."""
    raw = request.scope.get("query_string", b"")
    if not raw:
        return {}
    found: dict[str, str] = {}
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key in names:
            if key in found:
                return None
            found[key] = value
    return found


def header_values(request: Request, names: frozenset[bytes]) -> dict[bytes, str] | None:
    """The request's values (latin-1) of the lower-case header ``names``, or None if one
    of them came twice."""
    found: dict[bytes, str] = {}
    for key, raw in request.scope["headers"]:
        if key in names:
            if key in found:
                return None
            found[key] = raw.decode("latin-1")
    return found


def json_answer(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as FastAPI answers a route's response model (pydantic's JSON of it, by
    alias), serialised once: returning a Response skips FastAPI's second validation."""
    body = model.__pydantic_serializer__.to_json(model, by_alias=True)
    return Response(body, status_code=status_code, media_type="application/json")
