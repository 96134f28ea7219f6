"""Small blobs as rows of the transaction that records them, and the unsynced sessions
of the aggregation claim (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker

from coordinator.migrate import upgrade
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


def test_get_each_reads_files_and_rows_in_one_session(store: FilesAndRows) -> None:
    model = b"a large model, written as a file"
    in_file = store.put(model)
    small = [b"update one", b"update two"]
    with _sessions(store).begin() as session:
        for data in small:
            store_in(session, data, sha256_hex(data))
    opened: list[object] = []
    reader = store.rows.reader

    def counting_reader() -> Any:
        opened.append(None)
        return reader()

    store.rows.reader = counting_reader  # type: ignore[method-assign]
    digests = [sha256_hex(small[0]), in_file, sha256_hex(small[1])]
    assert list(store.get_each(digests)) == [small[0], model, small[1]]
    assert len(opened) == 1
    assert list(store.get_each([in_file])) == [model]
    assert len(opened) == 1  # files only: no session


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
