"""Database errors, classified once so that upper layers never import SQLAlchemy."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError

__all__ = ["DatabaseError", "is_conflict", "is_retryable"]

# every error the database driver raises through SQLAlchemy
DatabaseError = DBAPIError


def is_conflict(exc: DatabaseError) -> bool:
    """A constraint refused the write (a concurrent request won a unique key)."""
    return isinstance(exc, IntegrityError)


def is_retryable(exc: DatabaseError) -> bool:
    """Busy, locked, serialization or a lost connection: the same request may succeed."""
    text = str(exc.orig).lower()
    return (
        "database is locked" in text
        or "database is busy" in text
        or "could not serialize" in text
        or "deadlock detected" in text
        or exc.connection_invalidated
    )
