"""The test harness itself: a scratch PostgreSQL database closes every connection to it."""

from __future__ import annotations

import gc

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import _scratch_postgres_database

pytestmark = pytest.mark.postgres


def test_a_pool_left_undisposed_is_closed_with_its_database() -> None:
    """A pool nobody disposed must not be garbage-collected in some later test, where the
    driver's ResourceWarning would fail an innocent test (filterwarnings = error)."""
    with _scratch_postgres_database(template="migrated") as url:
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        # the connection is back in the pool, open; the engine is never disposed
        raw = engine.pool._pool.queue[0].dbapi_connection  # type: ignore[attr-defined]
        assert not raw.closed
    assert raw.closed
    del engine, conn
    gc.collect()  # nothing left to warn about
