"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.idempotency import IdempotencyMiddleware
from coordinator.api.problems import add_exception_handlers, problem_response
from coordinator.api.router import api_router
from coordinator.api.routes import health
from coordinator.bootstrap import check_production, load_secrets, load_signer
from coordinator.config import Settings
from coordinator.domain.audit import AUDIT_KEY_INFO
from coordinator.domain.auth import hash_token
from coordinator.domain.context import Context
from coordinator.store.blobs import BlobStore
from coordinator.store.db import (
    create_db_engine,
    create_read_session_factory,
    create_session_factory,
)
from coordinator.worker import RoundWorker

__all__ = ["create_app"]

log = logging.getLogger("fedrec")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Reject request bodies over ``max_bytes`` with 413, declared or chunked."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            None,
            status=413,
            slug="payload-too-large",
            title="Payload too large",
            detail=f"request bodies are limited to {self.max_bytes} bytes "
            "(FEDREC_MAX_UPLOAD_BYTES)",
            instance=scope.get("path"),
        )
        await response(scope, receive, send)


def build_context(settings: Settings) -> Context:
    secrets = load_secrets(settings)
    check_production(settings, secrets)  # before anything listens or writes
    engine = create_db_engine(
        settings.resolved_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    sessions = create_session_factory(engine)
    # transitions that hold only a session append audit events with this key
    sessions.configure(info={AUDIT_KEY_INFO: secrets.audit_key})
    return Context(
        sessions=sessions,
        read_sessions=create_read_session_factory(engine),
        blobs=BlobStore(settings.blob_dir),
        secret_key=secrets.secret_key,
        admin_token_hash=hash_token(secrets.secret_key, secrets.admin_token),
        signer=load_signer(settings),
        audit_key=secrets.audit_key,
        lease_seconds=settings.aggregation_lease_seconds,
        token_ttl_seconds=settings.participant_token_ttl_seconds,
        token_grace_seconds=settings.token_refresh_grace_seconds,
    )


def create_app(settings: Settings | None = None, *, run_timer: bool = True) -> FastAPI:
    """Build the coordinator app. The database must already be migrated (``fedrec migrate``)."""
    settings = settings or Settings()
    context = build_context(settings)
    worker = RoundWorker(context, interval_seconds=settings.timer_interval_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_timer:
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            context.sessions.kw["bind"].dispose()

    app = FastAPI(
        title="fedrec coordinator",
        version="1",
        summary="Federated recommendation: rounds, updates, model versions, evaluations.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.context = context
    app.state.worker = worker
    add_exception_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router)
    # added last = outermost: the size limit applies before anything buffers a body
    app.add_middleware(IdempotencyMiddleware, context=context)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app
