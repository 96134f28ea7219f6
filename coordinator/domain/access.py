"""Access checks shared by every domain service."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordinator.domain.auth import Principal
from coordinator.domain.errors import NotFound
from coordinator.store.models import Federation
from coordinator.store.repository import FederationRepository

__all__ = ["load_federation"]


def load_federation(session: Session, principal: Principal, federation_id: str) -> Federation:
    """Fetch a federation the caller may see, or raise 404/403."""
    federation = FederationRepository(session).get(federation_id)
    if federation is None:
        raise NotFound(f"federation {federation_id} does not exist", slug="federation-not-found")
    principal.check_federation(federation_id)
    return federation
