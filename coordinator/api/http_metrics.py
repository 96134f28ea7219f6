"""Per-request metrics: latency, status and bytes by route template, upload outcomes.

Labelled by the route's template (``/v1/federations/{federation_id}/rounds``), never the
raw path, so ids do not multiply the series; unknown paths share ``unmatched``.
Templates come from the app's own routes, so requests refused before routing (a 413)
are labelled too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api import telemetry

__all__ = ["HttpMetrics", "UPLOAD_ROUTE"]

UPLOAD_ROUTE = "/v1/federations/{federation_id}/rounds/{number}/update"
UNMATCHED = "unmatched"
MAX_REMEMBERED_PATHS = 50_000
_PROBLEM_PREFIX = "urn:fedrec:problem:"


def compile_templates(templates: list[str]) -> list[tuple[re.Pattern[str], str]]:
    """Patterns of route templates, literal segments before parameters
    (``/participants/me`` wins over ``/participants/{participant_id}``)."""

    def pattern(template: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", template)
        body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(body)

    ordered = sorted(set(templates), key=lambda t: (t.count("{"), -len(t)))
    return [(pattern(t), t) for t in ordered]


class HttpMetrics:
    def __init__(self, app: ASGIApp, templates: Callable[[], list[str]]) -> None:
        self.app = app
        self._templates = templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None
        # path -> template: a participant polls the same path every time, so the pattern
        # scan runs once per path (bounded: ids in paths must not grow it without end)
        self._routes: dict[str, str] = {}
        # the labelled series, looked up once per label set instead of per request
        self._series: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    def route_of(self, path: str) -> str:
        route = self._routes.get(path)
        if route is not None:
            return route
        if self._patterns is None:  # the routes are complete once the app serves
            self._patterns = compile_templates(self._templates())
        route = next(
            (template for pattern, template in self._patterns if pattern.fullmatch(path)),
            UNMATCHED,
        )
        if len(self._routes) >= MAX_REMEMBERED_PATHS:
            self._routes.clear()
        self._routes[path] = route
        return route

    def _series_of(self, method: str, route: str, status: int) -> tuple[Any, Any, Any, Any]:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                telemetry.HTTP_REQUESTS.labels(method, route, str(status)),
                telemetry.HTTP_REQUEST_SECONDS.labels(method, route),
                telemetry.HTTP_REQUEST_BYTES.labels(route),
                telemetry.HTTP_RESPONSE_BYTES.labels(route),
            )
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(scope["path"])
        is_upload = route == UPLOAD_ROUTE and scope["method"] == "PUT"
        started = time.perf_counter()
        status = 500  # unless a response starts
        received = sent = 0
        problem = bytearray()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                if is_upload and status >= 400 and len(problem) < 4096:
                    problem.extend(body)
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            requests, seconds, request_bytes, response_bytes = self._series_of(
                scope["method"], route, status
            )
            requests.inc()
            seconds.observe(time.perf_counter() - started)
            if received:
                request_bytes.inc(received)
            response_bytes.inc(sent)
            if is_upload:
                _count_upload(status, bytes(problem))


def _count_upload(status: int, problem: bytes) -> None:
    if status == 201:
        telemetry.UPLOADS_ACCEPTED.inc()
    elif status == 200:
        telemetry.UPLOADS_REPLAYED.inc()
    else:
        telemetry.UPLOADS_REFUSED.labels(_reason(status, problem)).inc()


def _reason(status: int, problem: bytes) -> str:
    """The problem type's slug of a refused upload (499: the client left mid-body)."""
    if status == 499:
        return "client-disconnected"
    try:
        kind = json.loads(problem).get("type", "")
    except (ValueError, AttributeError):
        kind = ""
    return kind.removeprefix(_PROBLEM_PREFIX) if kind.startswith(_PROBLEM_PREFIX) else str(status)
