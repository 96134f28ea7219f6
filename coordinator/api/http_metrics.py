"""Per-request metrics: latency, status and bytes by route template, upload outcomes.

Labelled by the route's template (``/v1/federations/{federation_id}/rounds``), never the
raw path, so ids do not multiply the series; unknown paths share ``unmatched``.
Templates come from the app's own routes, so requests refused before routing (a 413)
are labelled too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from coordinator.api import telemetry

__all__ = ["HttpMetrics", "MAX_PROBLEM_BYTES", "UPLOAD_ROUTE", "is_upload"]

UPLOAD_ROUTE = "/v1/federations/{federation_id}/rounds/{number}/update"
UNMATCHED = "unmatched"
MAX_REMEMBERED_PATHS = 50_000
_PROBLEM_PREFIX = "urn:fedrec:problem:"
# of a refused upload's answer, enough to read its problem type
MAX_PROBLEM_BYTES = 4096


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
    """The series of one app: the front door (api/front_door.py) asks for a request's
    route template when it arrives and records what happened once it is answered."""

    def __init__(self, templates: Callable[[], list[str]]) -> None:
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

    def record(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        received: int,
        sent: int,
        upload_problem: bytes | None,
    ) -> None:
        """One answered request (``upload_problem``: None unless it was an upload, else
        the start of its problem body, if it was refused)."""
        requests, duration, request_bytes, response_bytes = self._series_of(method, route, status)
        requests.inc()
        duration.observe(seconds)
        if received:
            request_bytes.inc(received)
        response_bytes.inc(sent)
        if upload_problem is not None:
            _count_upload(status, upload_problem)


def is_upload(method: str, route: str) -> bool:
    return route == UPLOAD_ROUTE and method == "PUT"


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
