"""SAVEPOINT, RELEASE and ROLLBACK TO run as the driver's SQL text (``db._driver_savepoints``),
not as clauses SQLAlchemy compiles on every call: the same text, the same semantics, on both
backends."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.sql import compiler
from sqlalchemy.sql.expression import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)

from coordinator.domain.context import Context


class _Boom(Exception):
    pass


def _engine(ctx: Context) -> Engine:
    engine: Engine = ctx.sessions.kw["bind"]
    return engine


def test_a_nested_transaction_rolls_back_alone_and_a_released_one_stays(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(ctx)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def compiled(*_args: Any, **_kw: Any) -> str:
        raise AssertionError("a savepoint statement was compiled")

    # SQLAlchemy's own do_savepoint & co. compile these clauses on every call
    for visit in ("visit_savepoint", "visit_rollback_to_savepoint", "visit_release_savepoint"):
        monkeypatch.setattr(compiler.SQLCompiler, visit, compiled)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with ctx.sessions.begin() as session:
            session.execute(text("CREATE TEMPORARY TABLE savepoint_probe (x INTEGER)"))
            session.execute(text("INSERT INTO savepoint_probe (x) VALUES (1)"))
            try:
                with session.begin_nested():
                    session.execute(text("INSERT INTO savepoint_probe (x) VALUES (2)"))
                    raise _Boom
            except _Boom:
                pass
            with session.begin_nested():
                session.execute(text("INSERT INTO savepoint_probe (x) VALUES (3)"))
            kept = list(session.scalars(text("SELECT x FROM savepoint_probe ORDER BY x")))
            session.execute(text("DROP TABLE savepoint_probe"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert kept == [1, 3]
    monkeypatch.undo()
    # the very text SQLAlchemy would have compiled for the savepoints it named
    said = [s for s in statements if "SAVEPOINT" in s]
    names = [s.split()[-1] for s in said]
    assert len(said) == 4
    assert said == [
        str(SavepointClause(names[0]).compile(dialect=engine.dialect)),
        str(RollbackToSavepointClause(names[0]).compile(dialect=engine.dialect)),
        str(SavepointClause(names[2]).compile(dialect=engine.dialect)),
        str(ReleaseSavepointClause(names[2]).compile(dialect=engine.dialect)),
    ]
    assert all(name.startswith("sa_savepoint_") for name in names)
