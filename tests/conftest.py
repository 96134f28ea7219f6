"""Shared fixtures: a migrated database on every backend, the app, clients.

Backends: SQLite (a file per test) always; PostgreSQL when ``FEDREC_TEST_POSTGRES_URL``
is set (a fresh database per test, cloned from a template migrated once). Without it
the PostgreSQL cases skip, unless ``FEDREC_REQUIRE_POSTGRES=1`` (set by ``.ci/run``),
which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool

from coordinator.app import build_context, create_app
from coordinator.config import Settings
from coordinator.domain.context import Context
from coordinator.migrate import upgrade

ADMIN_TOKEN = "fra_test-admin-token-0123456789abcdef0123456789abcdef"
SECRET_KEY = "test-secret-key"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_url() -> str | None:
    url = os.environ.get("FEDREC_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("FEDREC_REQUIRE_POSTGRES") == "1":
        pytest.fail("FEDREC_REQUIRE_POSTGRES=1 but FEDREC_TEST_POSTGRES_URL is not set")
    return None


def _admin_engine(url: str) -> Engine:
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


_template: dict[str, str] = {}

# Every PostgreSQL connection any pool opens, so that a scratch database's teardown can close
# the ones still open on it. A pool a test dropped without disposing (or one a request thread
# checked a connection back into after the app's shutdown disposed it) would otherwise be
# garbage-collected at some later point, in another test, whose run the driver's
# ResourceWarning then fails (filterwarnings = error): a failure that names the wrong test.
_pooled: weakref.WeakSet[Any] = weakref.WeakSet()


@event.listens_for(Pool, "connect")
def _track_postgres_connection(dbapi_connection: Any, _record: Any) -> None:
    if hasattr(dbapi_connection, "info") and hasattr(dbapi_connection.info, "dbname"):
        _pooled.add(dbapi_connection)


def _close_connections_to(name: str) -> None:
    for connection in list(_pooled):
        if not connection.closed and connection.info.dbname == name:
            connection.close()


def _postgres_template(base_url: str) -> str:
    """A database migrated to head once per test session; tests clone it."""
    if "name" not in _template:
        name = f"fedrec_tpl_{uuid.uuid4().hex[:12]}"
        engine = _admin_engine(base_url)
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # noqa: BLE001 - turn any connection failure into a clear message
            if os.environ.get("FEDREC_REQUIRE_POSTGRES") == "1":
                pytest.fail(f"PostgreSQL is required but unreachable at {base_url}: {exc}")
            pytest.skip(f"PostgreSQL unreachable at {base_url}: {exc}")
        finally:
            engine.dispose()
        upgrade(_database_url(base_url, name))
        _template["name"] = name
    return _template["name"]


def _database_url(base_url: str, name: str) -> str:
    return (
        make_url(base_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_template() -> Iterator[None]:
    yield
    base = os.environ.get("FEDREC_TEST_POSTGRES_URL")
    if base and "name" in _template:
        engine = _admin_engine(base)
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_template["name"]}" WITH (FORCE)'))
        engine.dispose()


@contextlib.contextmanager
def _scratch_postgres_database(template: str | None = None) -> Iterator[str]:
    """Create a uniquely named database (optionally cloned from ``template``); drop it after."""
    base = postgres_url()
    if base is None:
        pytest.skip("set FEDREC_TEST_POSTGRES_URL to run PostgreSQL tests")
    if template == "migrated":
        template = _postgres_template(base)
    name = f"fedrec_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    engine = _admin_engine(base)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    try:
        yield _database_url(base, name)
    finally:
        _close_connections_to(name)
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def fresh_postgres_database() -> Iterator[str]:
    """An empty (unmigrated) PostgreSQL database, dropped afterwards."""
    with _scratch_postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database migrated to head, on the parametrised backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fedrec.db'}"
        upgrade(url)
        yield url
        return
    with _scratch_postgres_database(template="migrated") as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        max_upload_bytes=4 * 1024 * 1024,
        _env_file=None,
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = build_context(settings)
    yield context
    context.sessions.kw["bind"].dispose()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings, run_timer=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
