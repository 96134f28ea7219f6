"""Migration 0016 (upload-txn): small blobs in their ``blobs`` row, the audit head moved by
the event's INSERT; and the one-statement writes built on them, on SQLite and PostgreSQL.

- the migration moves one-chunk blobs into their row and back, keeps larger and empty
  blobs as they were, adds and drops the trigger;
- ``store_in`` writes a blob that fits one chunk with one statement, larger ones as
  chunks; blobs of both forms (and an older database's one-chunk blobs) read back;
- an audit append with this process's guess of the head is one INSERT; a stale guess
  (another process appended, or the appending transaction rolled back) falls back to the
  locked head read, and the chain verifies; two processes appending at once keep it whole.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, inspect, select, text
from sqlalchemy.orm import Session

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.domain import audit
from coordinator.domain.context import Context
from coordinator.migrate import downgrade, upgrade
from coordinator.store import blob_index
from coordinator.store.blobs import sha256_hex
from coordinator.store.database_blobs import read_each, store_in
from coordinator.store.models import AuditEvent, AuditHead, Blob, BlobChunk
from coordinator.store.repository import AuditRepository


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("fresh_postgres_database"))


_BLOB = "INSERT INTO blobs (digest, size, stored_at) VALUES (:d, :s, CURRENT_TIMESTAMP)"
_CHUNK = "INSERT INTO blob_chunks (digest, seq, data) VALUES (:d, :q, :b)"
_EVENT = (
    "INSERT INTO audit_events (seq, created_at, actor, action, outcome, detail, prev_hash, "
    "hash) VALUES (:seq, CURRENT_TIMESTAMP, 'admin', 'x', 'ok', '{}', 'p', :h)"
)


def _head(conn: Any) -> tuple[int, str]:
    seq, digest = conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    return int(seq), str(digest)


def test_0016_moves_one_chunk_blobs_into_their_row_and_back(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0015_admin_token_expiry")
    engine = create_engine(empty_database_url)
    one, two, empty, s3 = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    with engine.begin() as conn:
        for digest, size in ((one, 3), (two, 6), (empty, 0), (s3, 10)):
            conn.execute(text(_BLOB), {"d": digest, "s": size})
        conn.execute(text(_CHUNK), {"d": one, "q": 0, "b": b"one"})
        conn.execute(text(_CHUNK), {"d": two, "q": 0, "b": b"two"})
        conn.execute(text(_CHUNK), {"d": two, "q": 1, "b": b"TWO"})
    upgrade(empty_database_url)
    with engine.begin() as conn:
        data: dict[str, Any] = dict(conn.execute(text("SELECT digest, data FROM blobs")).all())
        chunks = conn.execute(text("SELECT digest, seq FROM blob_chunks ORDER BY 1, 2")).all()
        conn.execute(text(_EVENT), {"seq": 1, "h": "h1"})
        assert _head(conn) == (1, "h1")  # the trigger moved the head
    assert {d: None if v is None else bytes(v) for d, v in data.items()} == {
        one: b"one",
        two: None,
        empty: None,
        s3: None,
    }
    assert [tuple(c) for c in chunks] == [(two, 0), (two, 1)]
    with engine.connect() as conn, Session(conn) as session:
        assert list(read_each(session, [one, two, empty])) == [b"one", b"twoTWO", b""]
    downgrade(empty_database_url, "0015_admin_token_expiry")
    assert "data" not in {c["name"] for c in inspect(engine).get_columns("blobs")}
    with engine.begin() as conn:
        back = conn.execute(text("SELECT digest, seq, data FROM blob_chunks ORDER BY 1, 2")).all()
        conn.execute(text(_EVENT), {"seq": 2, "h": "h2"})
        assert _head(conn) == (1, "h1")  # no trigger any more: 0015's code moves the head
    engine.dispose()
    assert [(d, q, bytes(b)) for d, q, b in back] == [
        (one, 0, b"one"),
        (two, 0, b"two"),
        (two, 1, b"TWO"),
    ]


def test_create_all_has_the_trigger(empty_database_url: str) -> None:
    """models.py agrees with the migrations: a database made by metadata.create_all moves
    its audit head on insert too."""
    from coordinator.store.models import Base

    engine = create_engine(empty_database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, 'g')"))
        conn.execute(text(_EVENT), {"seq": 1, "h": "h1"})
        assert _head(conn) == (1, "h1")
    engine.dispose()


# --- the writes ----------------------------------------------------------------------------


@pytest.fixture
def two_processes(settings: Settings) -> Iterator[tuple[Context, Context]]:
    """Two contexts on one database: two coordinator processes' session factories, each
    with its own audit tail."""
    first, second = build_context(settings), build_context(settings)
    yield first, second
    for context in (first, second):
        context.sessions.kw["bind"].dispose()


def _count_statements(ctx: Context) -> tuple[list[str], Any]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()[:3]).upper())

    engine = ctx.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", record)


def _data(statements: list[str]) -> list[str]:
    return [s for s in statements if s.split()[0] in ("SELECT", "INSERT", "UPDATE", "DELETE")]


def test_a_small_blob_is_one_statement_a_large_one_chunks(ctx: Context) -> None:
    small, large = os.urandom(1_000), os.urandom(2_500)
    statements, stop = _count_statements(ctx)
    try:
        with ctx.sessions.begin() as session:
            store_in(session, small, sha256_hex(small), chunk_bytes=1_000)
    finally:
        stop()
    assert _data(statements) == ["INSERT INTO BLOBS"]
    with ctx.sessions.begin() as session:
        store_in(session, large, sha256_hex(large), chunk_bytes=1_000)
        # the same bytes again: their row refreshed, nothing else written
        store_in(session, small, sha256_hex(small), chunk_bytes=1_000)
    with ctx.read_sessions() as session:
        rows = dict(session.execute(select(Blob.digest, Blob.data)).all())
        chunks = session.scalar(
            select(func.count()).where(BlobChunk.digest == sha256_hex(large)).select_from(BlobChunk)
        )
        assert rows == {sha256_hex(small): small, sha256_hex(large): None}
        assert chunks == 3
        assert list(read_each(session, [sha256_hex(large), sha256_hex(small)])) == [large, small]


def test_an_older_databases_one_chunk_blob_still_reads(ctx: Context) -> None:
    """Written as before 0016 (a row without bytes, one chunk): read as before."""
    data = b"written by an older coordinator"
    digest = sha256_hex(data)
    with ctx.sessions.begin() as session:
        assert blob_index.register(session, digest, len(data))
        session.add(BlobChunk(digest=digest, seq=0, data=data))
    assert ctx.blobs.get(digest) == data
    assert list(ctx.blobs.get_each([digest])) == [data]


def _append(ctx: Context, n: int) -> None:
    with ctx.sessions.begin() as session:
        audit.record(session, actor="admin", action="test", subject=f"event {n}")


def test_an_append_with_a_warm_guess_is_one_insert(ctx: Context) -> None:
    _append(ctx, 0)  # the process's first append reads the head
    statements, stop = _count_statements(ctx)
    try:
        _append(ctx, 1)
    finally:
        stop()
    assert _data(statements) == ["INSERT INTO AUDIT_EVENTS"]
    with ctx.read_sessions() as session:
        head = AuditRepository(session).head()
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert last is not None
    assert (head.seq, head.hash) == (last.seq, last.hash)  # moved by the insert
    assert audit.verify_audit(ctx).ok


def test_another_processs_appends_make_the_guess_stale_not_the_chain(
    two_processes: tuple[Context, Context],
) -> None:
    first, second = two_processes
    for n in range(3):
        _append(first, n)
        _append(second, n)  # each moves the head past the other's guess
    statements, stop = _count_statements(first)
    try:
        _append(first, 3)
    finally:
        stop()
    # the guessed insert found another head (nothing written), then the locked head read
    # and the insert
    assert _data(statements) == [
        "INSERT INTO AUDIT_EVENTS",
        "SELECT AUDIT_HEAD.SEQ, AUDIT_HEAD.HASH",
        "INSERT INTO AUDIT_EVENTS",
    ]
    report = audit.verify_audit(first)
    assert report.ok, report
    assert report.checked == 7


def test_a_rolled_back_append_leaves_no_gap(ctx: Context) -> None:
    _append(ctx, 0)

    def fails_after_its_append() -> None:
        with ctx.sessions.begin() as session:
            audit.record(session, actor="admin", action="test", subject="rolled back")
            raise RuntimeError("the transaction fails after its append")

    with pytest.raises(RuntimeError):
        fails_after_its_append()
    _append(ctx, 1)  # guessed after the rolled-back event: falls back to the head
    with ctx.read_sessions() as session:
        seqs = list(session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
        head = session.get(AuditHead, 1)
    assert seqs == [1, 2]
    assert head is not None
    assert head.seq == 2
    assert audit.verify_audit(ctx).ok


def test_two_processes_appending_at_once_keep_one_chain(
    two_processes: tuple[Context, Context],
) -> None:
    errors: list[BaseException] = []

    def appends(ctx: Context) -> None:
        try:
            for n in range(25):
                _append(ctx, n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=appends, args=(c,)) for c in two_processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    report = audit.verify_audit(two_processes[0])
    assert report.ok, report
    assert report.checked == 50
