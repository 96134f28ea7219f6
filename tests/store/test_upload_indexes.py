"""Migration 0017 (crossdev-core): the three indexes that repeated another index's leading
column are gone, the federation's active participants are counted from an index alone, and
every query of ``updates``, ``evaluations`` and ``participants`` still searches an index.

Each index of ``updates`` and ``evaluations`` is a b-tree page that every upload (with its
report) writes, and every upload's guarded count counts the active participants. The tests
pin which indexes remain on both backends (and that the downgrade restores the former
ones), and on SQLite that the repositories' statements use an index, none scanning a
table, and that the active count reads the covering index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.orm import Session

from coordinator.migrate import downgrade, upgrade
from coordinator.store.db import create_db_engine
from coordinator.store.repository import (
    EvaluationRepository,
    ParticipantRepository,
    RoundRepository,
    UpdateRepository,
)

_TABLES = ("updates", "evaluations", "participants", "audit_events")
_DROPPED = {
    ("updates", "ix_updates_round_id"),
    ("updates", "ix_updates_participant_id"),
    ("evaluations", "ix_evaluations_federation_id"),
    ("participants", "ix_participants_federation_id"),
    ("audit_events", "ix_audit_events_federation_id"),
}
_CREATED = {("participants", "ix_participants_federation_state")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("fresh_postgres_database"))


def _indexes(url: str) -> set[tuple[str, str]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {
            (table, str(index["name"])) for table in _TABLES for index in found.get_indexes(table)
        }
    finally:
        engine.dispose()


def test_0017_replaces_the_indexes_and_the_downgrade_restores_them(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url, "0016_upload_statements")
    before = _indexes(empty_database_url)
    assert before >= _DROPPED
    assert not before & _CREATED
    upgrade(empty_database_url)
    after = _indexes(empty_database_url)
    assert after == (before - _DROPPED) | _CREATED
    # what serves their lookups now: an index leading with the same column (the unique
    # constraints are indexes of their own, not listed by get_indexes on PostgreSQL)
    assert ("updates", "ix_updates_participant_idempotency_key") in after
    downgrade(empty_database_url, "0016_upload_statements")
    assert _indexes(empty_database_url) == before


@pytest.fixture
def sqlite_session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    upgrade(url)
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _plans_of(session: Session, calls: list[Any]) -> dict[str, str]:
    """Each SELECT the calls ran, with SQLite's plan of it (EXPLAIN QUERY PLAN)."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
            statements.append((sql, params))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", capture)
    try:
        for call in calls:
            call()
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    assert statements
    raw = connection.connection.driver_connection
    assert raw is not None
    return {
        sql: " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params))
        for sql, params in statements
    }


def test_queries_of_updates_evaluations_participants_search_an_index(
    sqlite_session: Session,
) -> None:
    updates = UpdateRepository(sqlite_session)
    evaluations = EvaluationRepository(sqlite_session)
    participants = ParticipantRepository(sqlite_session)
    rounds = RoundRepository(sqlite_session)
    plans = _plans_of(
        sqlite_session,
        [
            lambda: updates.get("r", "p"),
            lambda: updates.for_round("r"),
            lambda: updates.digests_from_active("r"),
            lambda: updates.digests_and_cohort("r", federation_id="f", sampled=False),
            lambda: updates.digests_and_cohort("r", federation_id="f", sampled=True),
            lambda: updates.count_from_active("r"),
            lambda: updates.repeated_by("p", "r", "key"),
            lambda: updates.by_idempotency_key("p", "key"),
            lambda: evaluations.list("f"),
            lambda: evaluations.reporters("f", 1, "validation"),
            lambda: evaluations.get("f", 1, "validation", "p"),
            lambda: participants.last_seen("f"),
            lambda: participants.count_active("f"),
            lambda: participants.active_ids("f"),
            lambda: participants.list("f"),
            lambda: rounds.completeness("f", 1),
            lambda: rounds.count_update_judged("r", if_state="open"),
            lambda: rounds.count_update_unless_repeat("r", "p", "key", if_state="open"),
        ],
    )
    for sql, plan in plans.items():
        # every table (aliases included) searched by an index, none scanned whole
        assert not [step for step in plan.split(" | ") if step.startswith("SCAN ")], (sql, plan)
    # every upload's count of the active participants reads the index alone, not the rows
    counts = [p for s, p in plans.items() if s.lstrip().startswith("UPDATE rounds")]
    assert len(counts) == 2
    for plan in counts:
        assert "COVERING INDEX ix_participants_federation_state" in plan, plan
    # a round's updates in the aggregation order: read in the unique index's order, no sort
    ordered = next(p for s, p in plans.items() if "FROM updates" in s and "ORDER BY" in s)
    assert "TEMP B-TREE" not in ordered, ordered
