"""Prometheus scrape endpoint (text exposition; not part of the JSON API's OpenAPI)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from coordinator.api import telemetry
from coordinator.api.deps import ContextDep, bearer
from coordinator.domain.auth import authenticate

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(
    request: Request,
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """Prometheus metrics; the scrape token (FEDREC_METRICS_TOKEN) or the admin token."""
    token = credentials.credentials if credentials else None
    scrape_token: str | None = request.app.state.metrics_token
    if not (token and scrape_token and hmac.compare_digest(token, scrape_token)):
        principal = await run_in_threadpool(authenticate, ctx, token)  # 401: no/unknown token
        principal.require_admin()  # 403: a participant's token
    body, content_type = await run_in_threadpool(telemetry.exposition)
    return Response(body, media_type=content_type)
