"""JSON request bodies parsed on a worker thread, not on the event loop.

Starlette's ``Request.json()`` runs ``json.loads`` inline: a large body stalls every other
request of the process (``/healthz`` included) while it parses. Routers built with
``route_class=JsonOffLoopRoute`` hand FastAPI a request whose ``json()`` parses in the
thread pool instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["JsonOffLoopRoute"]


class _OffLoopJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await run_in_threadpool(json.loads, await self.body())
        return self._json


class JsonOffLoopRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_off_loop(request: Request) -> Response:
            return await handler(_OffLoopJsonRequest(request.scope, request.receive))

        return parse_off_loop
