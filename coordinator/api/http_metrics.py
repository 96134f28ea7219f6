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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api import telemetry

__all__ = ["HttpMetrics", "UPLOAD_ROUTE"]

UPLOAD_ROUTE = "/v1/federations/{federation_id}/rounds/{number}/update"
UNMATCHED = "unmatched"
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

    def route_of(self, path: str) -> str:
        if self._patterns is None:  # the routes are complete once the app serves
            self._patterns = compile_templates(self._templates())
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return UNMATCHED

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
            method = scope["method"]
            telemetry.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            telemetry.HTTP_REQUEST_SECONDS.labels(method, route).observe(
                time.perf_counter() - started
            )
            telemetry.HTTP_REQUEST_BYTES.labels(route).inc(received)
            telemetry.HTTP_RESPONSE_BYTES.labels(route).inc(sent)
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
