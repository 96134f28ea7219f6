"""The ``blobs`` table: which blobs the ``postgres`` and ``s3`` stores hold, and since when.

One row per blob, keyed by its sha256. The row's ``stored_at`` is the time the collector's
grace period counts from; storing the bytes again moves it forward. The collector removes
a blob only while it holds the row's lock and only if ``stored_at`` is still older than
its cut-off (:func:`lock_if_stale`), and a store first updates the row (:func:`refresh`),
which waits for that lock. So a blob stored again while it is being collected is either
kept (the store came first) or written anew after the removal (the collector came
first): a row that will point at it never points at nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from coordinator.store.blobs import BlobEntry
from coordinator.store.models import Blob, utc_now
from coordinator.store.prebuilt import Prebuilt

__all__ = ["forget", "lock_if_stale", "refresh", "register", "scan_index"]

SCAN_BATCH = 1000


def refresh(session: Session, digest: str) -> bool:
    """Mark a known blob stored now; whether it was known."""
    changed = _REFRESH.rowcount(
        session.connection(), {"b_digest": digest, "b_stored_at": utc_now()}
    )
    return bool(changed)


def register(session: Session, digest: str, size: int, data: bytes | None = None) -> bool:
    """Add the row of a new blob (with its bytes ``data``, when they live in the row);
    False if a concurrent store committed it first (nothing written)."""
    row = _REGISTER.first(
        session.connection(),
        {"digest": digest, "size": size, "stored_at": utc_now(), "data": data},
    )
    return row is not None


# built once: the store of every small upload runs them (a statement's construction was a
# good part of its cost)
_BLOBS = cast(Table, Blob.__table__)
_REFRESH = Prebuilt(
    update(_BLOBS)
    .where(_BLOBS.c.digest == bindparam("b_digest"))
    .values(stored_at=bindparam("b_stored_at"))
)


def _register(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not the rowcount: psycopg reports -1 for an INSERT that did nothing
    return insert(_BLOBS).on_conflict_do_nothing().returning(_BLOBS.c.digest)


_REGISTER = Prebuilt(_register)


def lock_if_stale(session: Session, digest: str, older_than: float) -> bool:
    """Lock the blob's row if it was last stored before ``older_than`` (epoch seconds)."""
    cutoff = datetime.fromtimestamp(older_than, UTC)
    row = session.execute(
        select(Blob.digest).where(Blob.digest == digest, Blob.stored_at < cutoff).with_for_update()
    ).first()
    return row is not None


def forget(session: Session, digest: str) -> None:
    session.execute(delete(Blob).where(Blob.digest == digest))


def scan_index(read_sessions: sessionmaker[Session], location: str) -> Iterator[BlobEntry]:
    """Every indexed blob, in digest order, a batch per short read transaction."""
    after = ""
    while True:
        with read_sessions() as session:
            rows = session.execute(
                select(Blob.digest, Blob.size, Blob.stored_at)
                .where(Blob.digest > after)
                .order_by(Blob.digest)
                .limit(SCAN_BATCH)
            ).all()
        for digest, size, stored_at in rows:
            yield BlobEntry(location.format(digest=digest), digest, size, stored_at.timestamp())
        if len(rows) < SCAN_BATCH:
            return
        after = rows[-1][0]
