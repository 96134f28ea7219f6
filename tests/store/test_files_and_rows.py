"""Small blobs as rows of the transaction that records them, and the unsynced sessions
of the aggregation claim (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text, update
from sqlalchemy.orm import Session, sessionmaker

from coordinator.migrate import upgrade
from coordinator.store import database_blobs
from coordinator.store.blobs import BlobNotFound, sha256_hex
from coordinator.store.database_blobs import DatabaseBlobStore, store_in
from coordinator.store.db import (
    create_db_engine,
    create_read_session_factory,
    create_session_factory,
    create_unsynced_session_factory,
)
from coordinator.store.files_and_rows import FilesAndRows
from coordinator.store.local_blobs import LocalBlobStore
from coordinator.store.models import Blob
from tests.conftest import _scratch_postgres_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        upgrade(url)
        engine = create_db_engine(url)
        yield engine
        engine.dispose()
        return
    with _scratch_postgres_database(template="migrated") as url:
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> FilesAndRows:
    sessions = create_session_factory(engine)
    reads = create_read_session_factory(engine)
    return FilesAndRows(LocalBlobStore(tmp_path / "blobs"), DatabaseBlobStore(sessions, reads))


def _sessions(store: FilesAndRows) -> sessionmaker[Session]:
    return store.rows._sessions  # noqa: SLF001 - the test writes rows as a transaction would


def test_rows_are_stored_with_the_transaction_and_only_then(store: FilesAndRows) -> None:
    data = b"a small update"
    digest = sha256_hex(data)

    def failed_upload() -> None:
        with _sessions(store).begin() as session:
            store_in(session, data, digest)
            raise RuntimeError("the upload's transaction failed")

    with pytest.raises(RuntimeError):
        failed_upload()
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.get(digest)

    with _sessions(store).begin() as session:
        store_in(session, data, digest)
        store_in(session, data, digest)  # the same bytes twice in one batch: one blob
    assert store.get(digest) == data
    assert store.exists(digest)
    assert not store.files.exists(digest)  # no file: the COMMIT made it durable
    assert [(e.digest, e.size) for e in store.scan()] == [(digest, len(data))]


def test_reads_scan_and_collect_files_and_rows(store: FilesAndRows) -> None:
    in_file = store.put(b"a large model, written as a file")
    in_rows = sha256_hex(b"a small update")
    with _sessions(store).begin() as session:
        store_in(session, b"a small update", in_rows)
    assert store.get(in_file) == b"a large model, written as a file"
    assert store.get(in_rows) == b"a small update"
    entries = {e.digest: e for e in store.scan()}
    assert set(entries) == {in_file, in_rows}

    # stored just now: the collector keeps both
    cutoff = time.time() - 3600
    assert not store.remove_stale(entries[in_rows], cutoff)
    assert not store.remove_stale(entries[in_file], cutoff)
    # the row stored two hours ago: it goes, the file stays
    then = datetime.fromtimestamp(time.time() - 7200, UTC)
    with _sessions(store).begin() as session:
        session.execute(update(Blob).where(Blob.digest == in_rows).values(stored_at=then))
    assert store.remove_stale(entries[in_rows], cutoff)
    assert not store.exists(in_rows)
    assert store.exists(in_file)
    store.remove(in_file)
    assert list(store.scan()) == []


def test_get_each_reads_rows_in_batches_then_files(
    store: FilesAndRows, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows first, a window of digests at a time: one statement for their sizes, one for
    the bytes of the small ones (at most READ_BATCH_BYTES), a larger one alone; what has
    no row comes from the files; the order asked, repeats included."""
    model = b"a large model, written as a file"
    in_file = store.put(model)
    small = [f"update {i}".encode() for i in range(5)]
    large = os.urandom(3_000)  # a row blob above the batch's bytes: read on its own
    with _sessions(store).begin() as session:
        for data in [*small, large]:
            store_in(session, data, sha256_hex(data))
    monkeypatch.setattr(database_blobs, "READ_BATCH_BYTES", 2_000)
    monkeypatch.setattr(database_blobs, "READ_BATCH_DIGESTS", 4)
    wanted = [small[0], model, small[1], large, small[2], small[0], small[3], small[4]]
    selects: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert list(store.get_each([sha256_hex(data) for data in wanted])) == wanted
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # window 1: sizes, the two small rows, the large row; window 2: sizes, its four rows
    assert len(selects) == 5, selects
    assert list(store.get_each([in_file])) == [model]
    reading = store.get_each([sha256_hex(small[1]), "0" * 64])
    assert next(reading) == small[1]
    with pytest.raises(BlobNotFound):
        next(reading)  # in neither rows nor files


def _synchronous(session: Session) -> str:
    if session.get_bind().dialect.name == "sqlite":
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[
            session.execute(text("PRAGMA synchronous")).scalar_one()
        ]
    return str(session.execute(text("SHOW synchronous_commit")).scalar_one())


def test_unsynced_sessions_commit_without_waiting_and_leave_others_synced(
    engine: Engine,
) -> None:
    sessions = create_session_factory(engine)
    unsynced = create_unsynced_session_factory(sessions)
    synced_level = "full" if engine.dialect.name == "sqlite" else "on"
    unsynced_level = "normal" if engine.dialect.name == "sqlite" else "off"
    for _ in range(3):  # the pooled connection goes back to synced after each
        with unsynced.begin() as session:
            assert _synchronous(session) == unsynced_level
            store_in(session, b"claim", sha256_hex(b"claim"))
        with sessions.begin() as session:
            assert _synchronous(session) == synced_level
    with sessions() as session:
        assert session.get(Blob, sha256_hex(b"claim")) is not None
    # a rolled-back unsynced transaction gives its connection back synced too

    def rolled_back() -> None:
        with unsynced.begin():
            raise RuntimeError("nothing to claim")

    with pytest.raises(RuntimeError):
        rolled_back()
    with sessions.begin() as session:
        assert _synchronous(session) == synced_level
