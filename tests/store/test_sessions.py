"""Read-only and write sessions: on SQLite, reads begin DEFERRED and never queue for the
write lock; every transaction that writes begins IMMEDIATE."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, update
from sqlalchemy.engine import make_url

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.context import Context
from coordinator.store.db import ReadOnlySessionError
from coordinator.store.models import Federation
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    put_update,
    update_bytes,
)

_WRITES = ("INSERT", "UPDATE", "DELETE")
# Overrides the conftest's backend parametrisation: these tests are about SQLite locking.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def sqlite_settings(settings: Settings, backend: str) -> Settings:
    assert backend == "sqlite", "SQLite-only fixture: parametrize the test with SQLITE_ONLY"
    # a writer blocked by the test's lock gives up quickly (503) instead of after 15 s
    return settings.model_copy(update={"sqlite_busy_timeout_ms": 200})


@pytest.fixture
def sqlite_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_settings, run_timer=False)) as test_client:
        yield test_client


def _engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.context.sessions.kw["bind"]  # type: ignore[attr-defined]
    return engine


def _record_transactions(engine: Engine) -> list[list[str]]:
    """Every statement from now on, grouped into transactions (each starts with its BEGIN)."""
    transactions: list[list[str]] = []
    current: dict[int, list[str]] = defaultdict(list)

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        key = id(cursor.connection)
        if statement.startswith("BEGIN"):
            current[key] = []
            transactions.append(current[key])
        current[key].append(statement)

    return transactions


def _round_trip(client: TestClient, admin: dict[str, str]) -> None:
    """One participant's whole round: every read and write route it uses, and the close."""
    fid = create_federation(client, admin)["id"]
    _, participant = enrol(client, admin, fid)
    enrol(client, admin, fid, "idle")  # keeps the round open after the upload
    assert client.get(f"/v1/federations/{fid}/rounds/current", headers=participant).is_success
    assert client.get(f"/v1/federations/{fid}/models/0/weights", headers=participant).is_success
    evaluation = {"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 3}
    response = client.post(
        f"/v1/federations/{fid}/models/0/evaluations",
        json=evaluation,
        headers={**participant, "Idempotency-Key": "k1"},
    )
    assert response.status_code == 201, response.text
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    assert client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin).is_success
    assert client.get(f"/v1/federations/{fid}/metrics", headers=participant).is_success


@SQLITE_ONLY
def test_writes_begin_immediate_reads_begin_deferred(
    sqlite_client: TestClient, admin_headers: dict[str, str]
) -> None:
    transactions = _record_transactions(_engine(sqlite_client))
    _round_trip(sqlite_client, admin_headers)

    writing = [t for t in transactions if any(s.lstrip().upper().startswith(_WRITES) for s in t)]
    reading = [t for t in transactions if t not in writing]
    assert writing
    # a transaction that writes must hold the write lock from its first read on
    assert all(t[0] == "BEGIN IMMEDIATE" for t in writing), [t[0] for t in writing]
    # authentication and the GETs run in deferred transactions
    assert sum(t[0] == "BEGIN" for t in reading) >= 6


@SQLITE_ONLY
def test_reads_answer_while_another_connection_holds_the_write_lock(
    sqlite_client: TestClient, sqlite_settings: Settings, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(sqlite_client, admin_headers)["id"]
    _, participant = enrol(sqlite_client, admin_headers, fid)
    database = make_url(sqlite_settings.resolved_database_url).database
    assert database
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for path in (
            f"/v1/federations/{fid}",
            f"/v1/federations/{fid}/rounds/current",
            f"/v1/federations/{fid}/rounds/current?wait=0&after=0",
            f"/v1/federations/{fid}/models",
            f"/v1/federations/{fid}/models/0/weights",
            f"/v1/federations/{fid}/metrics",
        ):
            response = sqlite_client.get(path, headers=participant)
            assert response.status_code == 200, (path, response.text)
        # an upload writes: it queues for the lock and, as it stays held, gets a retryable 503
        assert_problem(
            put_update(sqlite_client, fid, 1, update_bytes(), participant),
            503,
            "service-unavailable",
        )
    finally:
        holder.rollback()
        holder.close()
    assert put_update(sqlite_client, fid, 1, update_bytes(), participant).status_code == 201


def test_read_sessions_refuse_to_write(ctx: Context) -> None:
    with ctx.sessions.begin() as session:
        session.add(
            Federation(
                name="f",
                state="active",
                model_spec={},
                strategy={},
                round_policy={},
                deploy_policy={},
                privacy={},
                latest_version=0,
                completed_rounds=0,
            )
        )
    with ctx.read_sessions() as session:
        federation = session.scalars(select(Federation)).one()
        federation.name = "renamed"
        with pytest.raises(ReadOnlySessionError):
            session.flush()
        session.rollback()
        with pytest.raises(ReadOnlySessionError):
            session.execute(update(Federation).values(name="renamed"))
    with ctx.read_sessions() as session:
        assert session.scalars(select(Federation.name)).one() == "f"
