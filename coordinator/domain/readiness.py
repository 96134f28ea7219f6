"""Readiness: can this process serve requests now (database and blob store reachable)?"""

from __future__ import annotations

import logging

from coordinator.domain.context import Context
from coordinator.domain.errors import ServiceUnavailable
from coordinator.store.db import ping

__all__ = ["check_ready"]

log = logging.getLogger("fedrec.readiness")


def check_ready(ctx: Context) -> dict[str, str]:
    """``{"database": "ok", "blobs": "ok"}``, or raise 503 naming what is not ready."""
    checks: dict[str, str] = {}
    try:
        with ctx.read_sessions() as session:
            ping(session)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = f"unreachable ({type(exc).__name__})"
    try:
        ctx.blobs.check()
        checks["blobs"] = "ok"
    except OSError as exc:
        log.warning("readiness: blob store unusable: %s", exc)
        checks["blobs"] = f"unusable ({exc})"
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if failing:
        raise ServiceUnavailable(
            f"not ready: {', '.join(failing)} (see `checks`; the log says why)",
            headers={"Retry-After": "5"},
            checks=checks,
        )
    return checks
