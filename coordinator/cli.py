"""The coordinator's commands: serve, migrate, verify-lineage, audit verify, gc.

The ``fedrec`` command (:mod:`fedrec.cli`, the application above this package) adds
them to its parser with :func:`add_server_commands`. This module imports only the
standard library; each command imports the server stack when it runs, so an install
without the ``server`` extra says which extra it needs instead of failing on import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_server_commands", "non_negative_float", "positive_float"]


def _settings(args: argparse.Namespace) -> object:
    try:
        from pydantic import ValidationError

        from coordinator.config import Settings
    except ImportError as exc:  # the SDK-only install has no server dependencies
        raise SystemExit(
            f"the coordinator needs the server extra: pip install 'fedrec[server]' ({exc})"
        ) from exc
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    for name in ("ssl_certfile", "ssl_keyfile"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    try:
        return Settings(**overrides)
    except ValidationError as exc:  # say which setting to fix, without a traceback
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise SystemExit(f"invalid coordinator settings: {problems}") from exc


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)  # first: explains a missing server extra

    import uvicorn

    from coordinator.bootstrap import InsecureSettingsError, check_production, load_secrets
    from coordinator.config import Settings
    from coordinator.logs import log_config
    from coordinator.migrate import upgrade

    assert isinstance(settings, Settings)
    secrets = load_secrets(settings)  # creates the data directory on first start
    try:
        check_production(settings, secrets)
    except InsecureSettingsError as exc:
        print(f"fedrec: {exc}", file=sys.stderr)
        return 2
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        print("fedrec: TLS needs both --ssl-certfile and --ssl-keyfile", file=sys.stderr)
        return 2
    upgrade(settings.resolved_database_url)
    workers: int = args.workers
    app = None
    if workers > 1:
        _share_with_workers(args, settings.data_dir)
        blobs = f"{settings.blob_store.value} store (each worker process opens it)"
    else:
        from coordinator.app import create_app

        app = create_app(settings)
        blobs = app.state.context.blobs.describe()
    scheme = "https" if settings.ssl_certfile else "http"
    print(f"fedrec coordinator on {scheme}://{settings.host}:{settings.port}  (API docs: /docs)")
    print(f"  data directory: {settings.data_dir.resolve()}")
    print(f"  database:       {_redact(settings.resolved_database_url)}")
    print(f"  blobs:          {blobs}")
    if secrets.admin_token_file is not None:
        state = "generated now" if secrets.admin_token_created else "kept from an earlier start"
        print(f"  admin token:    in {secrets.admin_token_file.resolve()} ({state}, mode 0600)")
    else:
        print("  admin token:    from FEDREC_ADMIN_TOKEN")
    if app is not None:
        from coordinator.domain.auth import register_bootstrap_token

        row = register_bootstrap_token(app.state.context)  # the app's start finds it there
        print(f"                  {_bootstrap_token_state(row)}")
    if workers > 1:
        print(f"  workers:        {workers} (metrics summed in {os.environ[_MULTIPROC]})")
    sys.stdout.flush()
    logging_config = log_config(settings.log_format, args.log_level)
    served = {
        "host": settings.host,
        "port": settings.port,
        "log_level": args.log_level,
        "log_config": logging_config,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        # the client address is FEDREC_TRUSTED_PROXIES' business (api/rate_limits.py)
        "proxy_headers": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
    if app is None:
        # each worker process builds its own app from the same FEDREC_* environment
        uvicorn.run(
            "coordinator.app:create_served_app",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **served,
        )
    else:
        from coordinator.allocator import keep_round_buffers
        from coordinator.heap import prepare_serving_heap

        # what is alive now, and what survives each full collection later (the held
        # long-polls), is frozen: full collections walk only what is new
        prepare_serving_heap()
        keep_round_buffers()  # a round's large buffers are reused, not faulted in anew
        uvicorn.run(app, **served)
    return 0


def _bootstrap_token_state(row: Any) -> str:
    """One line: until when the bootstrap admin token works, or how to replace it."""
    from coordinator.domain.admin_tokens import token_state
    from coordinator.domain.auth import renewal_hint

    state = token_state(row)
    if state == "active":
        return f"expires {row.expires_at:%Y-%m-%d %H:%M} UTC (fedrec admin-tokens list)"
    return f"{state.upper()}: {renewal_hint('bootstrap')}"


_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
# idle connections are kept longer than a client waits after a 503/429 Retry-After (the
# SDK: at most 60 s plus a quarter; it keeps them 80 s), so a refused participant comes
# back on its connection instead of a new one: under overload every new connection is an
# accept the starved process may not get to (uvicorn's default keeps them 5 s)
KEEP_ALIVE_SECONDS = 90
# uvicorn's supervisor kills a worker that misses its health ping; its default 5 s killed
# busy but healthy workers on a loaded 2-core machine (bench/load.py), dropping their
# connections. A worker silent for 30 s is really stuck.
WORKER_HEALTHCHECK_SECONDS = 30


def _share_with_workers(args: argparse.Namespace, data_dir: Path) -> None:
    """Hand the command's options to the worker processes through their environment,
    and give prometheus_client's multiprocess mode a fresh folder (set before any
    process imports prometheus_client) unless the operator chose one."""
    for option in ("host", "port", "data_dir", "log_format"):
        value = getattr(args, option, None)
        if value:
            os.environ[f"FEDREC_{option.upper()}"] = str(value)
    if not os.environ.get(_MULTIPROC):
        folder = data_dir / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)  # samples of an earlier run
        folder.mkdir(parents=True)
        os.environ[_MULTIPROC] = str(folder.resolve())


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from coordinator.config import Settings
    from coordinator.migrate import upgrade

    assert isinstance(settings, Settings)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"database at head: {_redact(settings.resolved_database_url)}")
    return 0


def cmd_verify_lineage(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from coordinator.app import build_context
    from coordinator.config import Settings
    from coordinator.domain.lineage import verify_lineage

    assert isinstance(settings, Settings)
    ctx = build_context(settings)
    try:
        report = verify_lineage(ctx, args.federation_id)
    finally:
        ctx.sessions.kw["bind"].dispose()  # close the pool's connections before exiting
    if report.checked == 0 and report.ok:
        print(f"federation {args.federation_id}: no model versions found", file=sys.stderr)
        return 2
    if report.ok:
        print(f"lineage ok: {report.checked} versions verified")
        return 0
    print(f"lineage broken at version {report.bad_version}: {report.reason}", file=sys.stderr)
    return 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from coordinator.app import build_context
    from coordinator.config import Settings
    from coordinator.domain.audit import verify_audit

    assert isinstance(settings, Settings)
    report = verify_audit(build_context(settings))
    if report.ok:
        print(f"audit log ok: {report.checked} events verified")
        return 0
    print(f"audit log broken at event {report.bad_seq}: {report.reason}", file=sys.stderr)
    return 1


def cmd_gc(args: argparse.Namespace) -> int:
    settings = _settings(args)

    from coordinator.app import build_context
    from coordinator.config import Settings
    from coordinator.domain.garbage import collect_garbage

    assert isinstance(settings, Settings)
    ctx = build_context(settings)
    try:
        report = collect_garbage(
            ctx,
            grace_seconds=args.grace_hours * 3600.0,
            keep_finished_updates=not args.finished_round_updates,
            dry_run=args.dry_run,
        )
    finally:
        ctx.sessions.kw["bind"].dispose()  # close the pool's connections before exiting
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"blobs: {verb} {report.removed} ({report.removed_bytes / 1e6:.1f} MB); "
        f"kept {report.kept} referenced, {report.recent} unreferenced inside the grace period"
    )
    return 0


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be between 1 and 64, got {text}")
    return value


def add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add serve, migrate, verify-lineage, audit and gc to the ``fedrec`` command's
    subparsers."""
    serve = sub.add_parser("serve", help="run the coordinator (migrates the database first)")
    serve.add_argument("--host", help="interface to listen on (FEDREC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (FEDREC_PORT, default 8000)")
    serve.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR, default ./fedrec-data)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn's log level",
    )
    serve.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="processes serving the port (default 1); /metrics sums them all",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="json: one JSON object per line with the request id (FEDREC_LOG_FORMAT, default text)",
    )
    serve.add_argument(
        "--ssl-certfile", help="PEM certificate chain: serve HTTPS (FEDREC_SSL_CERTFILE)"
    )
    serve.add_argument(
        "--ssl-keyfile", help="PEM private key of the certificate (FEDREC_SSL_KEYFILE)"
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema to the latest version")
    migrate.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    migrate.set_defaults(func=cmd_migrate)

    verify = sub.add_parser(
        "verify-lineage",
        help="recompute a federation's hash chain; exit 1 naming the first bad version",
    )
    verify.add_argument("federation_id", help="the federation's id")
    verify.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    verify.set_defaults(func=cmd_verify_lineage)

    audit = sub.add_parser("audit", help="the audit log of security-relevant events")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_sub.add_parser(
        "verify", help="recompute the audit log's HMAC chain; exit 1 naming the first bad event"
    )
    audit_verify.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    audit_verify.set_defaults(func=cmd_audit_verify)

    gc = sub.add_parser(
        "gc", help="remove blobs no row refers to, on any blob store (safe while coordinators run)"
    )
    gc.add_argument("--data-dir", help="data directory (FEDREC_DATA_DIR)")
    gc.add_argument(
        "--grace-hours",
        type=non_negative_float,
        default=24.0,
        help="keep unreferenced blobs younger than this: longer than any upload or "
        "aggregation takes (default 24; 0 only while no coordinator runs)",
    )
    gc.add_argument(
        "--finished-round-updates",
        action="store_true",
        help="also remove the update bytes of closed and failed rounds (their rows and "
        "hashes stay; model versions are never removed)",
    )
    gc.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    gc.set_defaults(func=cmd_gc)
