"""SQLite's write-ahead log is copied into the database file by the worker's background
checkpoints, not inside the commits of requests (those only past a large backstop)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.domain.context import Context
from coordinator.migrate import upgrade
from coordinator.store.blobs import sha256_hex
from coordinator.store.database_blobs import store_in
from coordinator.store.db import (
    SQLITE_PAGE_SIZE,
    WAL_AUTOCHECKPOINT_PAGES,
    checkpoint_wal,
    create_db_engine,
    wal_written_at,
)
from coordinator.worker import RoundWorker
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, _scratch_postgres_database

MB = 1024 * 1024


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[Context]:
    url = f"sqlite:///{tmp_path / 'fedrec.db'}"
    upgrade(url)
    settings = Settings(
        environment="test",
        data_dir=tmp_path / "data",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        _env_file=None,
    )
    context = build_context(settings)
    yield context
    context.sessions.kw["bind"].dispose()


def _write(ctx: Context, megabytes: int) -> None:
    for _ in range(megabytes):
        data = os.urandom(MB)
        with ctx.sessions.begin() as session:
            store_in(session, data, sha256_hex(data))


def _database_file(ctx: Context) -> Path:
    return Path(ctx.sessions.kw["bind"].url.database)


def _free_bytes(ctx: Context) -> int:
    """Bytes of the file's free pages (a migration that dropped indexes leaves some), which
    the next writes reuse instead of growing the file."""
    with ctx.sessions.kw["bind"].connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA freelist_count").scalar()
        page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
    return int(pages) * int(page_size)


def test_connections_leave_checkpoints_to_the_worker_up_to_the_backstop(
    sqlite_ctx: Context,
) -> None:
    with sqlite_ctx.sessions.kw["bind"].connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == WAL_AUTOCHECKPOINT_PAGES
    # a few K = 10 rounds of 437 KB updates, also in a database of 4 KB pages (made before
    # SQLITE_PAGE_SIZE); and not far more than that in one of today's pages
    assert WAL_AUTOCHECKPOINT_PAGES * 4096 > 8 * MB
    assert WAL_AUTOCHECKPOINT_PAGES * SQLITE_PAGE_SIZE <= 64 * MB


def test_a_new_database_has_large_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    upgrade(f"sqlite:///{new}")
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as made_before:  # SQLite's default page size, then WAL
        made_before.execute("PRAGMA journal_mode=WAL")
        made_before.execute("CREATE TABLE t (x INTEGER)")
    for path, expected in ((new, SQLITE_PAGE_SIZE), (older, 4096)):
        engine = create_db_engine(f"sqlite:///{path}")
        try:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA page_size").scalar() == expected
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            engine.dispose()


def test_a_checkpoint_copies_the_log_into_the_database_file(sqlite_ctx: Context) -> None:
    engine = sqlite_ctx.sessions.kw["bind"]
    checkpoint_wal(engine)
    before = _database_file(sqlite_ctx).stat().st_size
    free = _free_bytes(sqlite_ctx)
    _write(sqlite_ctx, 6)  # past SQLite's default threshold (~4 MB), below the backstop
    assert _database_file(sqlite_ctx).stat().st_size == before  # no commit checkpointed
    done = checkpoint_wal(engine)
    assert done is not None
    logged, copied = done
    assert logged > 6 * MB // SQLITE_PAGE_SIZE
    assert copied == logged
    assert _database_file(sqlite_ctx).stat().st_size >= before + 6 * MB - free


def test_the_worker_skips_a_log_nobody_wrote(sqlite_ctx: Context) -> None:
    engine = sqlite_ctx.sessions.kw["bind"]
    _write(sqlite_ctx, 1)
    first = wal_written_at(engine)
    assert first is not None
    checkpoint_wal(engine)  # copies, but does not write the log
    assert wal_written_at(engine) == first
    time.sleep(0.05)  # past the filesystem's timestamp granularity
    _write(sqlite_ctx, 1)
    assert wal_written_at(engine) != first


def test_the_worker_checkpoints_in_the_background(sqlite_ctx: Context) -> None:
    engine = sqlite_ctx.sessions.kw["bind"]
    checkpoint_wal(engine)
    before = _database_file(sqlite_ctx).stat().st_size - _free_bytes(sqlite_ctx)
    worker = RoundWorker(sqlite_ctx, interval_seconds=60, checkpoint_interval_seconds=0.05)
    worker.start()
    try:
        _write(sqlite_ctx, 3)
        deadline = time.monotonic() + 20
        while _database_file(sqlite_ctx).stat().st_size < before + 3 * MB:
            assert time.monotonic() < deadline, "no background checkpoint in 20 s"
            time.sleep(0.05)
    finally:
        worker.stop()


@pytest.mark.postgres
def test_postgresql_checkpoints_by_itself() -> None:
    with _scratch_postgres_database() as url:
        engine: Engine = create_db_engine(url)
        try:
            assert checkpoint_wal(engine) is None
            assert wal_written_at(engine) is None
        finally:
            engine.dispose()


def test_savepoint_journals_stay_in_memory(sqlite_ctx: Context) -> None:
    # every group-committed upload and small round job runs in SAVEPOINTs: their statement
    # journals past 64 KiB went to a temporary file per transaction (open, unlink, writes)
    with sqlite_ctx.sessions.kw["bind"].connect() as connection:
        temp_store = connection.exec_driver_sql("PRAGMA temp_store").scalar()
    assert temp_store == 2  # MEMORY
