"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from coordinator.allocator import keep_round_buffers
from coordinator.api import openapi, telemetry
from coordinator.api.admission import AdmissionControl
from coordinator.api.body_limit import BodyLimit
from coordinator.api.dashboard import install_dashboard
from coordinator.api.docs import install_offline_docs
from coordinator.api.front_door import FrontDoor
from coordinator.api.http_metrics import HttpMetrics
from coordinator.api.long_poll_starts import LongPollStarts
from coordinator.api.overload import Shedding
from coordinator.api.problems import add_exception_handlers
from coordinator.api.rate_limits import TokenBuckets
from coordinator.api.router import include_v1
from coordinator.api.routes import health, metrics
from coordinator.bootstrap import check_production, load_secrets, load_signer
from coordinator.config import BlobBackend, Settings
from coordinator.domain.audit import AUDIT_KEY_INFO, AUDIT_TAIL_INFO, AuditTail
from coordinator.domain.auth import hash_token, register_bootstrap_token, renewal_hint
from coordinator.domain.context import Context
from coordinator.heap import prepare_serving_heap
from coordinator.store.blobs import BlobStore
from coordinator.store.database_blobs import DatabaseBlobStore
from coordinator.store.db import (
    create_db_engine,
    create_read_session_factory,
    create_session_factory,
)
from coordinator.store.errors import DatabaseError
from coordinator.store.files_and_rows import FilesAndRows
from coordinator.store.local_blobs import LocalBlobStore
from coordinator.store.models import utc_now
from coordinator.store.s3_blobs import S3BlobStore, s3_client
from coordinator.worker import RoundWorker

__all__ = ["create_app"]

log = logging.getLogger("fedrec")


def _route_templates(app: FastAPI) -> list[str]:
    """Every route's path template: the documented ones and the undocumented ones."""
    undocumented = [route.path for route in metrics.router.routes if hasattr(route, "path")]
    top_level = [
        path for route in app.routes if isinstance(path := getattr(route, "path", None), str)
    ]
    return [*app.openapi()["paths"], *undocumented, *top_level]


def build_context(settings: Settings) -> Context:
    secrets = load_secrets(settings)
    check_production(settings, secrets)  # before anything listens or writes
    engine = create_db_engine(
        settings.resolved_database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.database_pool_size,
    )
    sessions = create_session_factory(engine)
    # transitions that hold only a session append audit events with this key
    # the audit tail: this process's guess of the chain's head (one statement per append)
    sessions.configure(info={AUDIT_KEY_INFO: secrets.audit_key, AUDIT_TAIL_INFO: AuditTail()})
    read_sessions = create_read_session_factory(engine)
    context = Context(
        sessions=sessions,
        read_sessions=read_sessions,
        blobs=open_blob_store(settings, sessions, read_sessions),
        secret_key=secrets.secret_key,
        bootstrap_token_hash=hash_token(secrets.secret_key, secrets.admin_token),
        signer=load_signer(settings),
        audit_key=secrets.audit_key,
        lease_seconds=settings.aggregation_lease_seconds,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        observer=telemetry.PrometheusObserver(),
        token_ttl_seconds=settings.participant_token_ttl_seconds,
        admin_token_ttl_seconds=settings.admin_token_ttl_seconds,
        token_grace_seconds=settings.token_refresh_grace_seconds,
        ease_subprocess_min_items=settings.ease_subprocess_min_items,
        ease_solve_timeout_seconds=settings.ease_solve_timeout_seconds,
        ease_memory_budget_bytes=settings.ease_memory_budget_bytes,
        scratch_dir=settings.data_dir / "scratch",
    )
    # the s3 store's rows are its index: small blobs cannot live there
    if settings.blob_store is not BlobBackend.s3:
        context.inline_blob_max_bytes = settings.inline_blob_max_bytes
    # per-user participants come back once a round (tens of seconds), a long-poll once per
    # its wait: an entry outliving that saves each one's lookup (revocation does not wait
    # for its age: the auth generation)
    context.principals.ttl_seconds = settings.token_cache_seconds
    context.notifier.interval_seconds = settings.long_poll_interval_seconds
    context.notifier.max_per_holder = settings.max_long_polls_per_token
    context.notifier.max_wait_seconds = settings.max_long_poll_seconds
    context.notifier.max_cohort_wait_seconds = max(
        settings.max_cohort_wait_seconds, settings.max_long_poll_seconds
    )
    return context


def open_blob_store(
    settings: Settings, sessions: sessionmaker[Session], read_sessions: sessionmaker[Session]
) -> BlobStore:
    """The blob store ``FEDREC_BLOB_STORE`` names (settings validated it is complete)."""
    if settings.blob_store is BlobBackend.postgres:
        return DatabaseBlobStore(sessions, read_sessions)
    if settings.blob_store is BlobBackend.s3:
        assert settings.s3_bucket is not None
        client = s3_client(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
        return S3BlobStore(client, settings.s3_bucket, settings.s3_prefix, sessions, read_sessions)
    # small blobs may be rows of the transactions that record them (inline_blob_max_bytes)
    return FilesAndRows(
        LocalBlobStore(settings.blob_dir), DatabaseBlobStore(sessions, read_sessions)
    )


def _register_bootstrap_token(context: Context) -> None:
    """At start: the bootstrap admin token's lifetime counts from the first start with it.
    A database that refuses (not migrated yet, unreachable) is logged, not fatal: the
    token's first use registers it then (domain/auth.py)."""
    try:
        row = register_bootstrap_token(context)
    except DatabaseError as exc:
        log.warning("bootstrap admin token not registered yet: %s", type(exc).__name__)
        return
    if row.revoked_at is not None or row.expires_at <= utc_now():
        log.warning(
            "the bootstrap admin token is %s: %s",
            "revoked" if row.revoked_at is not None else "expired",
            renewal_hint("bootstrap"),
        )


def create_app(settings: Settings | None = None, *, run_timer: bool = True) -> FastAPI:
    """Build the coordinator app. The database must already be migrated (``fedrec migrate``)."""
    settings = settings or Settings()
    context = build_context(settings)
    worker = RoundWorker(
        context,
        interval_seconds=settings.timer_interval_seconds,
        heavy_workers=settings.heavy_workers,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _register_bootstrap_token(context)
        if run_timer:
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            context.sessions.kw["bind"].dispose()
            telemetry.process_exiting()

    app = FastAPI(
        title="fedrec coordinator",
        version="1",
        summary="Federated recommendation: rounds, updates, model versions, evaluations.",
        lifespan=lifespan,
        # served by install_offline_docs from local assets instead of a CDN
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.context = context
    app.state.worker = worker
    token = settings.metrics_token
    app.state.metrics_token = token.get_secret_value() if token else None
    add_exception_handlers(app)
    openapi.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    include_v1(app)
    install_offline_docs(app)
    install_dashboard(app)
    # one middleware, in which, in order: the request id, HTTP metrics, overload shedding
    # (before anyone is authenticated), admission control (the caller is known or
    # throttled before any body is read), the body's size limit, the idempotency layer
    app.add_middleware(
        FrontDoor,
        context=context,
        metrics=HttpMetrics(lambda: _route_templates(app)),
        shedding=Shedding(
            max_in_flight=settings.max_requests_in_flight,
            max_long_polls=settings.max_long_polls,
            retry_after_seconds=settings.overload_retry_after_seconds,
            retry_after_max_seconds=settings.overload_retry_after_max_seconds,
        ),
        admission=AdmissionControl(
            context=context,
            anonymous_max_body_bytes=settings.anonymous_max_body_bytes,
            per_token=TokenBuckets(
                settings.participant_rate_per_second, settings.participant_rate_burst
            ),
            per_address=TokenBuckets(
                settings.anonymous_rate_per_second, settings.anonymous_rate_burst
            ),
            auth_failures=TokenBuckets(
                settings.auth_failure_rate_per_second, settings.auth_failure_burst
            ),
            trusted_proxies=settings.trusted_proxies,
            scrape_token=app.state.metrics_token,
            # the authentication of long-polls, bounded (FEDREC_MAX_LONG_POLL_STARTS)
            long_poll_starts=LongPollStarts(
                settings.max_long_poll_starts,
                retry_after_seconds=settings.overload_retry_after_seconds,
                retry_after_max_seconds=settings.overload_retry_after_max_seconds,
            ),
        ),
        body_limit=BodyLimit(settings.max_upload_bytes),
    )
    return app


def create_served_app() -> FastAPI:
    """``fedrec serve --workers N``'s factory: :func:`create_app`, then the serving heap's
    collector policy (coordinator/heap.py: startup heap and held polls frozen) and the
    allocator set to keep a round's buffers (:mod:`coordinator.allocator`)."""
    app = create_app()
    prepare_serving_heap()
    keep_round_buffers()
    return app
