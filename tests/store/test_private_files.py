"""Secrets at rest (issue 12, finding 1): the SQLite database and the data folder are
owner-only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.migrate import upgrade
from tests.conftest import ADMIN_TOKEN


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default, which made the database 0644
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_sqlite_database_and_data_folder_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(environment="test", data_dir=data, admin_token=ADMIN_TOKEN, _env_file=None)
    ctx = build_context(settings)  # creates the folder and the generated secret key
    upgrade(settings.resolved_database_url)
    with ctx.sessions.begin() as session:  # a write: SQLite creates its -wal file
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    database = data / "fedrec.db"
    assert _mode(data) == 0o700
    assert _mode(database) == 0o600
    assert _mode(data / "secret_key") == 0o600
    for sidecar in (data / "fedrec.db-wal", data / "fedrec.db-shm"):
        assert _mode(sidecar) == 0o600, sidecar  # WAL: both exist while a connection is open
    ctx.sessions.kw["bind"].dispose()


@pytest.mark.usefixtures("permissive_umask")
def test_migrating_a_new_database_creates_it_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    upgrade(f"sqlite:///{database}")
    assert _mode(database) == 0o600
