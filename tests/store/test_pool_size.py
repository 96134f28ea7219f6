"""The PostgreSQL pool size is a setting: `--workers N` multiplies it against max_connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from coordinator import app as app_module
from coordinator.config import Settings
from coordinator.store.db import POOL_OVERFLOW, POOL_SIZE, create_db_engine

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # no connection is opened


def test_default_pool_keeps_one_connection_per_worker_thread() -> None:
    engine = create_db_engine(URL)
    try:
        assert engine.pool.size() == POOL_SIZE == 40  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == POOL_OVERFLOW  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_pool_size_setting_reaches_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Engine] = []

    def recording(url: str, **kwargs: Any) -> Engine:
        made.append(create_db_engine(URL, **kwargs))  # PostgreSQL's pool, never connected
        return create_db_engine(url, **kwargs)

    monkeypatch.setattr(app_module, "create_db_engine", recording)
    settings = Settings(
        data_dir=tmp_path, database_pool_size=12, admin_token="a" * 40, _env_file=None
    )
    app_module.build_context(settings)
    try:
        assert made[0].pool.size() == 12  # type: ignore[attr-defined]
    finally:
        made[0].dispose()


@pytest.mark.parametrize("bad", [0, -1, 1001])
def test_pool_size_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings(database_pool_size=bad, _env_file=None)
