"""End-to-end fixtures: a real ``fedrec serve`` process per test, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    database_url = None
    if request.param == "postgres":
        database_url = str(request.getfixturevalue("fresh_postgres_database"))
    process = ServerProcess(tmp_path / "data", database_url)
    process.start()
    yield process
    process.stop()
