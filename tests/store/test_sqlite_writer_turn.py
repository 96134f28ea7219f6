"""SQLite writers of one process queue on a Python lock (store/db.py ``_WriterTurn``)
rather than on SQLite's sleeping busy handler; the turn must never be lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from coordinator.store.db import create_db_engine, create_session_factory
from coordinator.store.errors import is_retryable


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    # a short busy timeout: a lost turn fails these tests in a second, not in 15
    engine = create_db_engine(f"sqlite:///{tmp_path / 'turn.db'}", sqlite_busy_timeout_ms=1000)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    return engine


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT n FROM counter")).scalar_one())


def test_concurrent_writers_of_one_process_all_commit(engine: Engine) -> None:
    sessions = create_session_factory(engine)
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            for _ in range(20):
                with sessions.begin() as session:
                    n = session.execute(text("SELECT n FROM counter")).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    # read-modify-write under the lock: no increment lost
    assert _count(engine) == 8 * 20


def test_a_rolled_back_writer_gives_the_turn_back(engine: Engine) -> None:
    sessions = create_session_factory(engine)

    def failing_request() -> None:
        with sessions.begin() as session:
            session.execute(text("UPDATE counter SET n = 5"))
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        failing_request()
    with sessions.begin() as session:  # would time out if the turn were still held
        session.execute(text("UPDATE counter SET n = n + 1"))
    assert _count(engine) == 1


def test_an_invalidated_connection_gives_the_turn_back(engine: Engine) -> None:
    conn = engine.connect()
    conn.begin()
    conn.execute(text("UPDATE counter SET n = 7"))
    conn.invalidate()  # e.g. a broken connection: no COMMIT or ROLLBACK is sent
    conn.close()
    with engine.begin() as other:
        other.execute(text("UPDATE counter SET n = n + 1"))
    assert _count(engine) == 1


def test_a_writer_that_cannot_get_the_turn_gets_a_retryable_locked_error(engine: Engine) -> None:
    sessions = create_session_factory(engine)
    with sessions.begin() as holder:
        holder.execute(text("UPDATE counter SET n = 1"))
        seen: list[BaseException] = []

        def second_writer() -> None:
            try:
                with sessions.begin() as session:
                    session.execute(text("UPDATE counter SET n = 2"))
            except OperationalError as exc:
                seen.append(exc)

        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=30)
    assert len(seen) == 1
    assert isinstance(seen[0], OperationalError)
    assert is_retryable(seen[0])
    assert _count(engine) == 1
