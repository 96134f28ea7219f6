"""The one middleware every HTTP request passes: request id, metrics, overload shedding,
admission control, the body's size limit and the idempotency layer, in that order.

They were six ASGI middlewares, each a coroutine frame per request and a wrapper per
``send`` (per ``receive`` for three of them); here they are one frame and one wrapper of
each, and a request skips what cannot concern it (a GET never enters the idempotency
layer, a body-less request the size limit). What each does lives in its own module:

- ``api/request_id.py``: the id every log line of the request carries, echoed as
  ``X-Request-ID`` on every answer (the 429s, 413s and 503s below included);
- ``api/http_metrics.py``: latency, status and bytes by route template, upload outcomes;
- ``api/overload.py``: a fast 503 past the process's bounds, before anything else;
- ``api/admission.py``: who is calling (the principal the routes reuse), per-token and
  per-address rate limits, the anonymous body limit;
- ``api/body_limit.py``: ``FEDREC_MAX_UPLOAD_BYTES``;
- ``api/idempotency.py``: replay or record a keyed non-GET JSON request;

and hands the request to ``api/hot_routes.py`` (participants' hot routes straight to their
fast handlers) in front of FastAPI's routing.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api import request_id
from coordinator.api.admission import AdmissionControl, Verdict
from coordinator.api.body_limit import BodyLimit
from coordinator.api.hot_routes import HotRoutes
from coordinator.api.http_metrics import MAX_PROBLEM_BYTES, HttpMetrics, is_upload
from coordinator.api.idempotency import IdempotencyMiddleware
from coordinator.api.overload import Shedding
from coordinator.domain.context import Context

__all__ = ["FrontDoor"]

# the methods whose requests may carry an Idempotency-Key (api/idempotency.py)
_KEYED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FrontDoor:
    def __init__(
        self,
        app: ASGIApp,
        *,
        context: Context,
        metrics: HttpMetrics,
        shedding: Shedding,
        admission: AdmissionControl,
        body_limit: BodyLimit,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.shedding = shedding
        self.admission = admission
        self.body_limit = body_limit
        # then the hot routes straight to their fast handlers, the rest to FastAPI's routing
        self.routed = HotRoutes(app)
        self.idempotent = IdempotencyMiddleware(self.routed, context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = self.metrics.route_of(scope["path"])
        started = time.perf_counter()
        status = 500  # unless a response starts
        received = sent = 0
        problem = bytearray() if is_upload(method, route) else None
        rid = request_id.of(scope)
        raw_id = rid.encode("latin-1")
        bound = request_id.bind(rid)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def answering_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                # a new list (a cached response's own must not grow), the id appended raw:
                # no route sets this header, so there is nothing to replace
                message["headers"] = [*message.get("headers", ()), (request_id.HEADER_KEY, raw_id)]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                if problem is not None and status >= 400 and len(problem) < MAX_PROBLEM_BYTES:
                    problem.extend(body)
            await send(message)

        try:
            kind, admitted = self.shedding.enter(scope)
            if not admitted:
                assert kind is not None
                await self.shedding.refuse(scope, counting_receive, answering_send, kind)
                return
            try:
                verdict = await self.admission.admit(scope, counting_receive, answering_send)
                if verdict is Verdict.ANONYMOUS:
                    await self.admission.call_anonymous(
                        self._within_limit, scope, counting_receive, answering_send
                    )
                elif verdict is not Verdict.REFUSED:
                    await self._within_limit(scope, counting_receive, answering_send)
            finally:
                self.shedding.leave(kind)
        finally:
            self.metrics.record(
                method,
                route,
                status,
                time.perf_counter() - started,
                received,
                sent,
                None if problem is None else bytes(problem),
            )
            request_id.unbind(bound)

    async def _within_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = self.idempotent if scope["method"] in _KEYED_METHODS else self.routed
        await self.body_limit.pass_on(inner, scope, receive, send)
