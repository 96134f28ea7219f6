"""Participants' hot requests go straight to their fast handler, past FastAPI's routing.

FastAPI (0.165) matches a request against its routes once per level of included routers and
again when it hands the request on: ~29 route matches and their scope bookkeeping per weights
download, more than half of such a request's CPU in-process (bench/RESULTS.md,
small-round). The routes marked ``@fast_path`` (api/fast_path.py: the poll, the weights
download, the upload) are few; this dispatcher finds them with one regular expression each
and calls their fast handler under the app's exception handlers, as FastAPI's route would.
Whatever the fast handler declines (returns None: a 422 to explain, a missing principal) and
every other request goes through FastAPI unchanged.

Exactly FastAPI's choice: a request is a hot route's only if FastAPI would pick that route,
i.e. no route before it in FastAPI's own order (the OpenAPI document's, unchanged) matches
the same method and path. Those earlier routes are kept beside each hot route and checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator.api.fast_path import FastHandler, FastPathRoute, fast_handler_of

__all__ = ["HotRoutes"]

_HANDLER_KEY = "fedrec.fast_handler"


@dataclass(frozen=True)
class _Matcher:
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method (a mount)
    template: str | None  # the path template; None: unknown (compared as "may overlap")

    def full(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and bool(self.regex.match(path))


@dataclass(frozen=True)
class _Hot:
    matcher: _Matcher
    convertors: dict[str, Any]
    handler: FastHandler
    shadows: tuple[_Matcher, ...]  # earlier routes that match some of the same requests


class HotRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._hot: tuple[_Hot, ...] | None = None
        self._answering: ExceptionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not FastPathRoute.enabled or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        if self._hot is None:
            self._build(scope["app"])
        assert self._hot is not None
        assert self._answering is not None
        method, path = scope["method"], scope["path"]
        for hot in self._hot:
            if method not in (hot.matcher.methods or ()):
                continue
            found = hot.matcher.regex.match(path)
            if found is None or any(shadow.full(method, path) for shadow in hot.shadows):
                continue
            scope["path_params"] = {
                name: hot.convertors[name].convert(value)
                for name, value in found.groupdict().items()
            }
            scope[_HANDLER_KEY] = hot.handler
            await self._answering(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Inside the app's exception handlers: the fast handler's answer, or FastAPI's."""
        handler: FastHandler = scope.pop(_HANDLER_KEY)
        response = await handler(Request(scope, receive, send))
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _build(self, app: Any) -> None:
        """The hot routes in FastAPI's order, each with the routes before it it could be
        confused with (built once: the routes are complete once the app serves)."""
        hot: list[_Hot] = []
        earlier: list[_Matcher] = []
        for route in _routes_in_order(app.routes):
            regex = getattr(route, "path_regex", None)
            if not isinstance(regex, re.Pattern):
                continue
            methods = getattr(route, "methods", None)
            template = getattr(route, "path_format", None)
            matcher = _Matcher(
                regex,
                None if methods is None else frozenset(methods),
                template if isinstance(template, str) and _is_plain(route) else None,
            )
            handler = fast_handler_of(route)
            if handler is not None and matcher.methods:
                hot.append(
                    _Hot(
                        matcher,
                        dict(getattr(route, "param_convertors", {})),
                        handler,
                        tuple(e for e in earlier if _may_overlap(e, matcher)),
                    )
                )
            earlier.append(matcher)
        # the handlers the app's own ExceptionMiddleware has (500 and Exception belong to
        # the outermost ServerErrorMiddleware, which stays in front of everything)
        handlers = {
            key: value
            for key, value in app.exception_handlers.items()
            if key not in (500, Exception)
        }
        self._answering = ExceptionMiddleware(self._answer, handlers=handlers)
        self._hot = tuple(hot)


def _routes_in_order(routes: list[Any]) -> Iterator[Any]:
    """The app's routes as FastAPI tries them: included routers (FastAPI 0.165 keeps them
    as one entry each) expanded into their effective routes, which carry the prefix."""
    for route in routes:
        expand = getattr(route, "effective_route_contexts", None)
        if callable(expand):
            yield from expand()
        else:
            yield route


def _is_plain(route: Any) -> bool:
    """A route whose parameters each match one whole segment (no ``:path`` convertor, no
    mount matching a prefix), so its template tells which paths it matches."""
    convertors = getattr(route, "param_convertors", None)
    return (
        isinstance(convertors, dict)
        and not any(type(c).__name__ == "PathConvertor" for c in convertors.values())
        and not hasattr(route, "routes")  # a Mount
    )


def _may_overlap(earlier: _Matcher, hot: _Matcher) -> bool:
    """Whether a request could match both (conservative: True unless the methods or the
    templates' literal segments tell them apart)."""
    if earlier.methods is not None and not (earlier.methods & (hot.methods or frozenset())):
        return False
    if earlier.template is None or hot.template is None:
        return True
    mine, theirs = hot.template.split("/"), earlier.template.split("/")
    if len(mine) != len(theirs):
        return False
    return all("{" in a or "{" in b or a == b for a, b in zip(mine, theirs, strict=True))
