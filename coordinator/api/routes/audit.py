"""The audit log, for the admin: security-relevant events, oldest first, paginated."""

from typing import Annotated

from fastapi import APIRouter, Query

from coordinator.api import examples
from coordinator.api.deps import AdminDep, ContextDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import problem, success
from coordinator.api.schemas import AuditEvent, AuditEventList
from coordinator.domain import audit

router = APIRouter(route_class=JsonOffLoopRoute, prefix="/audit", tags=["audit"])


@router.get(
    "",
    response_model=AuditEventList,
    summary="Read the audit log",
    responses=success(200, "Audit events, oldest first", examples.AUDIT_EVENTS)
    | problem(403, "Only the admin reads the audit log")
    | problem(422, "`after` or `limit` is out of range (`detail` says which)"),
)
def list_audit_events(
    ctx: ContextDep,
    admin: AdminDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Events after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
) -> AuditEventList:
    """Audit events with `seq > after`, oldest first (pass the last `seq` to page on)."""
    rows = audit.list_events(ctx, admin, after=after, limit=limit)
    return AuditEventList(items=[AuditEvent.model_validate(r, from_attributes=True) for r in rows])
