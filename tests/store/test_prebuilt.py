"""Prebuilt statements (``store/prebuilt.py``) on SQLite and PostgreSQL: the upload's and
the small round's hot statements compiled once per dialect and run at driver level.

- every prebuilt statement of the store sends the driver the same SQL text and the same
  converted parameters as ``connection.execute`` of the same Core statement, and returns
  the same rows and row counts (UTC-aware datetimes, booleans, JSON as Core returns them);
- a round run through the prebuilt statements stores the same rows and values as the
  same round run through ``connection.execute`` (the path before them);
- a statement that would need a Python-side default per call is refused when compiled; a
  missing parameter is an error, not a NULL;
- on the driver's cursor (``store/driver_cursor.py``) a statement fires the same cursor
  events as through ``Connection.exec_driver_sql`` (a ``retval`` listener's rewrite
  included) and fails the same way: the same ``sqlalchemy.exc`` class, message and
  original error (the optimistic insert's ``IntegrityError``), the connection invalidated
  on a disconnect (a closed driver connection; on PostgreSQL a terminated backend) and on a
  cancelled call; a statement outside a transaction, or with dialect-level listeners or
  SQL logging, goes through ``exec_driver_sql`` itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, exc, insert, select, text
from sqlalchemy.dialects import sqlite

from coordinator.domain import audit, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.evaluation import BaseEvaluation
from coordinator.store import blob_index, driver_cursor, repository, round_change
from coordinator.store.models import (
    AuditEvent,
    AuditHead,
    Blob,
    Evaluation,
    Federation,
    ModelVersion,
    Round,
    Update,
    new_id,
)
from coordinator.store.prebuilt import Prebuilt
from coordinator.worker import RoundWorker
from tests.factories import domain_federation, update_bytes

_ALL = {
    f"{module.__name__.rsplit('.', 1)[-1]}.{name}": value
    for module in (repository, blob_index, round_change)
    for name, value in vars(module).items()
    if isinstance(value, Prebuilt)
}


def _engine(ctx: Context) -> Engine:
    engine: Engine = ctx.sessions.kw["bind"]
    return engine


def _normal(value: Any) -> Any:
    """A parameter as compared: psycopg's wrappers (JSON, bytes) by their content."""
    if type(value).__module__.startswith("psycopg") and hasattr(value, "obj"):
        return (type(value).__name__, value.obj)
    return value


def _normal_parameters(parameters: Any) -> Any:
    if isinstance(parameters, Mapping):
        return {key: _normal(value) for key, value in parameters.items()}
    return tuple(_normal(value) for value in parameters)


@contextmanager
def _sent(connection: Connection) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, _normal_parameters(parameters)))

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", record)


def _run_both(
    engine: Engine, prebuilt: Prebuilt, params: dict[str, Any]
) -> list[tuple[list[tuple[str, Any]], Any, int]]:
    """(what the driver received, the rows, the row count) through ``execute`` and
    through the prebuilt path, each in a transaction rolled back after it."""
    out = []
    for core in (True, False):
        with engine.connect() as connection:
            transaction = connection.begin()
            with _sent(connection) as seen:
                if core:
                    result = connection.execute(prebuilt.statement(engine.dialect.name), params)
                    rows = [tuple(row) for row in result] if result.returns_rows else None
                    count = result.rowcount
                elif getattr(prebuilt.statement(engine.dialect.name), "exported_columns", ()):
                    rows, count = prebuilt.all(connection, params), -2
                else:
                    rows, count = None, prebuilt.rowcount(connection, params)
            transaction.rollback()
        out.append((seen, rows, count))
    return out


def _samples(ctx: Context, fid: str, parts: list[Principal]) -> dict[str, dict[str, Any]]:
    """Parameters for every prebuilt statement, on the rows of federation ``fid`` (round
    1 open with one update in it and a deadline; ``parts`` its participants)."""
    now = datetime.now(UTC)
    with ctx.read_sessions() as session:
        round_row = session.scalars(
            select(Round).where(Round.federation_id == fid, Round.number == 1)
        ).one()
        head = session.scalars(select(AuditHead)).one()
        blob = session.scalars(select(Blob).limit(1)).one()
    round_id = round_row.id
    pid = [p.participant_id or "" for p in parts]
    event = {
        "seq": head.seq + 1,
        "created_at": now,
        "actor": "coordinator",
        "action": "upload",
        "federation_id": fid,
        "subject": "round 1",
        "outcome": "ok",
        "detail": {"sha256": "ab" * 32, "size": 12, "nested": [1, 2.5, None, True]},
        "prev_hash": head.hash,
        "hash": "cd" * 32,
    }
    claim = {"b_round_id": round_id, "b_now": now, "b_owner": "me"}
    return {
        "repository._COUNT_UPDATE_JUDGED": {"b_round_id": round_id, "b_state": "open"},
        "repository._COUNT_UPDATE_UNLESS_REPEAT": {
            "b_round_id": round_id,
            "b_state": "open",
            "b_participant_id": pid[0],
            "b_key": "some-key",
        },
        "repository._UPDATE_INSERT": {
            "id": new_id(),
            "round_id": round_id,
            "participant_id": pid[1],
            "round_number": 1,
            "sha256": "ef" * 32,
            "size": 100,
            "num_examples": 7,
            "kind": "delta",
            "idempotency_key": None,
            "received_at": now,
        },
        "repository._AUDIT_HEAD_FOR_UPDATE": {},
        "repository._AUDIT_INSERT": event,
        "repository._AUDIT_APPEND_AFTER": event,
        "repository._MODEL_VERSION_INSERT": {
            "id": new_id(),
            "federation_id": fid,
            "version": 99,
            "round_number": 1,
            "parent": 0,
            "sha256": "12" * 32,
            "chain_hash": "34" * 32,
            "size": 1000,
            "contributors": [pid[0], pid[1]],
            "server_state_sha256": None,
            "step_scale": 0.5,
            "restored_from": None,
            "created_at": now,
            "encodings": {"x": "float32"},
            "privacy_spent": None,
            "manifest": None,
            "signature": None,
        },
        "repository._EVALUATION_PUT": {
            "id": new_id(),
            "federation_id": fid,
            "version": 0,
            "split": "validation",
            "participant_id": pid[0],
            "metrics": {"ndcg@10": 0.25, "recall@10": 0.5},
            "num_users": 3,
            "created_at": now,
        },
        "repository._VALIDATION_FIGURES": {"federation_id": fid},
        "repository._DIGESTS_AND_ACTIVE": {"round_id": round_id, "federation_id": fid},
        "repository._DIGESTS_AND_MEMBERS": {"round_id": round_id},
        "repository._CLAIM": {**claim, "b_until": now + timedelta(seconds=30)},
        "repository._CLAIM_AND_CLOSE": {**claim, "b_version": 1, "b_closed_at": now},
        "repository._CLOSE": {
            "b_round_id": round_id,
            "b_owner": "me",
            "b_version": 1,
            "b_closed_at": now,
        },
        "blob_index._REFRESH": {"b_digest": blob.digest, "b_stored_at": now},
        "blob_index._REGISTER": {"digest": "56" * 32, "size": 3, "stored_at": now, "data": b"abc"},
        "round_change._UPDATE_COUNTERS": {
            "b_federation_id": fid,
            "completed_rounds": 1,
            "latest_version": 1,
            "current_round": 2,
        },
        "round_change._INSERT_ROUND": {
            "id": new_id(),
            "federation_id": fid,
            "number": 2,
            "state": "open",
            "base_version": 1,
            "update_count": 0,
            "opened_at": now,
            "deadline_at": now + timedelta(minutes=10),
            "sampled": False,
        },
    }


def test_every_prebuilt_statement_sends_and_returns_what_execute_does(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    samples = _samples(ctx, fid, parts)
    assert set(samples) == set(_ALL), "a prebuilt statement without a sample here"
    engine = _engine(ctx)
    for name, prebuilt in _ALL.items():
        (core_sent, core_rows, core_count), (sent, rows, count) = _run_both(
            engine, prebuilt, samples[name]
        )
        # one statement each (SQLite's BEGIN IMMEDIATE aside), the same text and values
        core_sent = [s for s in core_sent if not s[0].startswith("BEGIN")]
        sent = [s for s in sent if not s[0].startswith("BEGIN")]
        assert len(sent) == 1, name
        assert sent == core_sent, name
        assert rows == core_rows, name
        statement = prebuilt.statement(engine.dialect.name)
        if count != -2 and not getattr(statement, "is_insert", False):
            # an UPDATE's count decides a compare-and-set (an INSERT's is not read: psycopg
            # reports -1 through execute)
            assert count == core_count, name
        if rows is None:  # each sample changes one row (no round is aggregating to close)
            assert count == (0 if name == "repository._CLOSE" else 1), name


def test_returned_datetimes_are_utc_aware_and_booleans_booleans(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    params = _samples(ctx, fid, parts)["repository._COUNT_UPDATE_UNLESS_REPEAT"]
    engine = _engine(ctx)
    with engine.connect() as connection, connection.begin():
        row = repository._COUNT_UPDATE_UNLESS_REPEAT.first(connection, params)
    assert row is not None
    state, count, deadline, lease, sampled, *_, repeats = row
    assert (state, count, lease, sampled, repeats) == ("open", 2, None, False, True)
    assert isinstance(deadline, datetime)
    assert deadline.utcoffset() == timedelta(0)
    assert type(sampled) is bool
    assert type(repeats) is bool


def test_a_statement_with_a_python_default_or_a_missing_value_is_refused(ctx: Context) -> None:
    engine = _engine(ctx)
    # rounds.id and opened_at have defaults computed in Python per call: not prebuilt
    partial_insert = Prebuilt(insert(Round.__table__), column_keys=["federation_id", "number"])  # type: ignore[arg-type]
    with engine.connect() as connection, connection.begin():
        with pytest.raises(ValueError, match="column default"):
            partial_insert.execute(connection, {"federation_id": "f", "number": 1})
        with pytest.raises(KeyError, match="b_state"):
            repository._COUNT_UPDATE_JUDGED.first(connection, {"b_round_id": "r"})


def test_the_sql_is_sqlalchemys_for_each_dialect() -> None:
    text = repository._UPDATE_INSERT.sql(sqlite.dialect())
    assert text == str(insert(Update.__table__).compile(dialect=sqlite.dialect()))  # type: ignore[arg-type]
    assert re.fullmatch(r"INSERT INTO updates \(.*\) VALUES \((\?, )+\?\)", text)


# --- a round through the prebuilt statements and through execute --------------------


def _through_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every prebuilt statement run through ``connection.execute`` (the path before)."""

    def execute(self: Prebuilt, connection: Connection, params: Mapping[str, Any]) -> Any:
        return connection.execute(self.statement(connection.dialect.name), dict(params))

    def first(self: Prebuilt, connection: Connection, params: Mapping[str, Any]) -> Any:
        row = execute(self, connection, params).first()
        return None if row is None else tuple(row)

    def all_(self: Prebuilt, connection: Connection, params: Mapping[str, Any]) -> Any:
        return [tuple(row) for row in execute(self, connection, params)]

    def rowcount(self: Prebuilt, connection: Connection, params: Mapping[str, Any]) -> int:
        return int(execute(self, connection, params).rowcount)

    monkeypatch.setattr(Prebuilt, "execute", execute)
    monkeypatch.setattr(Prebuilt, "first", first)
    monkeypatch.setattr(Prebuilt, "all", all_)
    monkeypatch.setattr(Prebuilt, "rowcount", rowcount)


def _round(ctx: Context, worker: RoundWorker) -> str:
    """A federation of two, its round 1 uploaded (with reports) and aggregated as the
    server does it (in the completing upload's transaction on SQLite, by the kick after
    it on PostgreSQL), and one update of round 2."""
    fid, parts = domain_federation(ctx, participants=2, deadline_seconds=600)
    for seed, who in enumerate(parts):
        report = BaseEvaluation(metrics={"ndcg@10": 0.1 * (seed + 1)}, num_users=5 + seed)
        submit = partial(
            rounds.submit_update,
            ctx,
            who,
            fid,
            1,
            update_bytes(seed=seed),
            idempotency_key=f"key-{seed}",
            evaluation=report,
        )
        worker.accept_upload(submit, fid, 1)
    rounds.submit_update(ctx, parts[0], fid, 2, update_bytes(round=2, base_version=1, seed=5))
    return fid


def _round_subject(subject: str | None) -> str | None:
    """An event's subject, but a participant's id (an enrolment's)."""
    return subject if subject is None or subject.startswith("round") else "id"


def _stored(ctx: Context, fid: str) -> dict[str, Any]:
    """The federation's rows, its own ids and the times replaced by what they stand for
    (participant by enrolment order, round by number; a time by whether it is UTC-aware)."""
    with ctx.read_sessions() as session:
        federation = session.get(Federation, fid)
        assert federation is not None
        round_rows = session.scalars(
            select(Round).where(Round.federation_id == fid).order_by(Round.number)
        ).all()
        updates = session.scalars(
            select(Update)
            .where(Update.round_id.in_([r.id for r in round_rows]))
            .order_by(Update.round_number, Update.sha256)
        ).all()
        versions = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.federation_id == fid)
            .order_by(ModelVersion.version)
        ).all()
        evaluations = session.scalars(
            select(Evaluation).where(Evaluation.federation_id == fid).order_by(Evaluation.num_users)
        ).all()
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.federation_id == fid).order_by(AuditEvent.seq)
        ).all()
        digests = {u.sha256 for u in updates} | {v.sha256 for v in versions}
        blobs = session.scalars(select(Blob).where(Blob.digest.in_(digests))).all()

        def utc(value: datetime | None) -> str | None:
            if value is None:
                return None
            assert value.utcoffset() == timedelta(0), value
            return "utc"

        return {
            "federation": (
                federation.state,
                federation.current_round,
                federation.latest_version,
                federation.completed_rounds,
            ),
            "rounds": [
                (
                    r.number,
                    r.state,
                    r.base_version,
                    r.result_version,
                    r.update_count,
                    r.sampled,
                    utc(r.opened_at),
                    utc(r.deadline_at),
                    utc(r.closed_at),
                    r.lease_expires_at,
                    r.lease_owner is not None,
                )
                for r in round_rows
            ],
            "updates": [
                (u.round_number, u.sha256, u.size, u.num_examples, u.kind, u.idempotency_key)
                + (utc(u.received_at),)
                for u in updates
            ],
            "versions": [
                (
                    v.version,
                    v.round_number,
                    v.parent,
                    v.sha256,
                    v.size,
                    len(v.contributors or []),
                    v.step_scale,
                    utc(v.created_at),
                )
                for v in versions
            ],
            "evaluations": [
                (e.version, e.split, e.metrics, e.num_users, utc(e.created_at)) for e in evaluations
            ],
            "audit": [
                (e.actor.split(":")[0], e.action, _round_subject(e.subject), e.outcome)
                + (sorted(e.detail),)
                + (utc(e.created_at),)
                for e in events
            ],
            "blobs": sorted((b.digest, b.size, utc(b.stored_at)) for b in blobs),
        }


def _run_round(ctx: Context) -> str:
    worker = RoundWorker(ctx)
    try:
        return _round(ctx, worker)
    finally:
        worker.stop()


def test_a_round_through_prebuilt_statements_stores_what_execute_stored(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    prebuilt = _run_round(ctx)
    with monkeypatch.context() as patch:
        _through_execute(patch)
        before = _run_round(ctx)
    new, old = _stored(ctx, prebuilt), _stored(ctx, before)
    assert new["rounds"][0][1] == "closed"
    assert new["federation"][1] == 2
    assert len(new["audit"]) >= 3
    assert len(new["evaluations"]) == 2
    for part in old:
        assert new[part] == old[part], part


def test_the_chain_verifies_after_prebuilt_appends(ctx: Context) -> None:
    _run_round(ctx)
    report = audit.verify_audit(ctx)
    assert report.ok
    assert report.checked >= 4


# --- on the driver's cursor: events, errors, disconnects as exec_driver_sql ----------


def _duplicate_update(ctx: Context) -> dict[str, Any]:
    """An ``updates`` row for a participant who already uploaded in the round: the
    optimistic insert's ``IntegrityError``."""
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    params = dict(_samples(ctx, fid, parts)["repository._UPDATE_INSERT"])
    params["participant_id"] = parts[0].participant_id
    return params


def _outcome(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    *,
    cursor: bool,
    before: Callable[[Connection], None] = lambda _c: None,
    run: Callable[[Connection], Any],
) -> dict[str, Any]:
    """What ``run`` (after ``before``) does in a transaction, on the driver's cursor or
    (``cursor=False``) through ``exec_driver_sql``: its value or error, the cursor events
    seen (and whether each had an execution context), the connection invalidated or not."""
    events: list[tuple[str, str, Any, Any]] = []
    contexts: list[bool] = []
    mine: list[Connection] = []

    def recorder(name: str) -> Callable[..., None]:
        def record(
            conn: Any, _cursor: Any, sql: str, parameters: Any, context: Any, many: Any
        ) -> None:
            if conn in mine and not sql.startswith("BEGIN"):
                events.append((name, sql, _normal_parameters(parameters), many))
                contexts.append(context is not None)

        return record

    listeners = [
        (name, recorder(name)) for name in ("before_cursor_execute", "after_cursor_execute")
    ]
    with monkeypatch.context() as patch:
        if not cursor:
            patch.setattr(driver_cursor, "_plain", lambda _connection: False)
        with engine.connect() as connection:
            mine.append(connection)
            connection.begin()
            for name, listener in listeners:
                event.listen(engine, name, listener)
            try:
                before(connection)
                outcome: dict[str, Any] = {"value": run(connection)}
            except BaseException as error:  # noqa: BLE001 - an exit exception is compared too
                outcome = {"error": type(error)}
                if isinstance(error, exc.DBAPIError):
                    outcome |= {
                        "message": str(error),
                        "orig": type(error.orig),
                        "statement": error.statement,
                        "connection_invalidated": error.connection_invalidated,
                    }
            finally:
                for name, listener in listeners:
                    event.remove(engine, name, listener)
            outcome["invalidated"] = connection.invalidated
            if connection.in_transaction():
                connection.rollback()
    outcome["events"] = events
    # the driver's cursor has no execution context; exec_driver_sql passes its own
    assert contexts == [not cursor] * len(contexts)
    return outcome


def _both(engine: Engine, monkeypatch: pytest.MonkeyPatch, **scenario: Any) -> dict[str, Any]:
    on_cursor = _outcome(engine, monkeypatch, cursor=True, **scenario)
    through_sqlalchemy = _outcome(engine, monkeypatch, cursor=False, **scenario)
    assert on_cursor == through_sqlalchemy
    return on_cursor


def test_an_ordinary_transaction_runs_on_the_cursor(ctx: Context) -> None:
    """The path taken by the store's units (a guard on SQLAlchemy's public API that stops
    holding would silently send every statement back through ``exec_driver_sql``)."""
    engine = _engine(ctx)
    with engine.connect() as connection:
        assert not driver_cursor._plain(connection)  # not begun: SQLAlchemy autobegins
        with connection.begin():
            assert driver_cursor._plain(connection)
            nested = connection.begin_nested()
            assert driver_cursor._plain(connection)
            nested.rollback()
    with ctx.sessions.begin() as session:
        assert driver_cursor._plain(session.connection())


def test_dialect_listeners_and_sql_logging_go_through_exec_driver_sql(ctx: Context) -> None:
    params = _duplicate_update(ctx)
    engine = _engine(ctx)
    handled: list[type[BaseException]] = []

    def handle_error(context: Any) -> None:
        handled.append(type(context.original_exception))

    event.listen(engine, "handle_error", handle_error)
    try:
        with engine.connect() as connection, connection.begin():
            assert not driver_cursor._plain(connection)
            with pytest.raises(exc.IntegrityError):
                repository._UPDATE_INSERT.execute(connection, params)
    finally:
        event.remove(engine, "handle_error", handle_error)
    assert len(handled) == 1
    assert issubclass(handled[0], engine.dialect.loaded_dbapi.IntegrityError)
    engine.echo = True
    try:
        with engine.connect() as connection, connection.begin():
            assert not driver_cursor._plain(connection)
    finally:
        engine.echo = False


def test_rows_and_events_on_the_cursor_are_exec_driver_sqls(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    samples = _samples(ctx, fid, parts)
    engine = _engine(ctx)
    for name in ("repository._COUNT_UPDATE_UNLESS_REPEAT", "repository._AUDIT_HEAD_FOR_UPDATE"):
        outcome = _both(engine, monkeypatch, run=partial(_ALL[name].first, params=samples[name]))
        assert outcome["value"] is not None, name
        assert [e[0] for e in outcome["events"]] == [
            "before_cursor_execute",
            "after_cursor_execute",
        ]
    outcome = _both(
        engine,
        monkeypatch,
        run=partial(repository._CLAIM.rowcount, params=samples["repository._CLAIM"]),
    )
    assert outcome["value"] == 1

    def tagged(_c: Any, _cursor: Any, sql: str, parameters: Any, *_: Any) -> tuple[str, Any]:
        return f"{sql} -- tagged", parameters

    def tag(connection: Connection) -> None:
        event.listen(connection, "before_cursor_execute", tagged, retval=True)

    outcome = _both(
        engine,
        monkeypatch,
        before=tag,
        run=partial(repository._AUDIT_HEAD_FOR_UPDATE.first, params={}),
    )
    # the rewrite reaches the driver and the listeners after it
    assert outcome["value"] is not None
    assert outcome["events"][-1][1].endswith(" -- tagged")


def test_the_optimistic_inserts_conflict_is_sqlalchemys_integrity_error(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _duplicate_update(ctx)
    outcome = _both(
        _engine(ctx), monkeypatch, run=partial(repository._UPDATE_INSERT.execute, params=params)
    )
    assert outcome["error"] is exc.IntegrityError
    assert outcome["connection_invalidated"] is False
    assert outcome["invalidated"] is False
    assert "SQL parameters hidden" in outcome["message"]  # the engine's hide_parameters
    # the statement's before event fired, its after event not
    assert [e[0] for e in outcome["events"]] == ["before_cursor_execute"]


def _close_driver_connection(connection: Connection) -> None:
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.close()


def test_a_closed_driver_connection_is_a_disconnect_and_invalidated(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(ctx)
    outcome = _both(
        engine,
        monkeypatch,
        before=_close_driver_connection,
        run=partial(repository._AUDIT_HEAD_FOR_UPDATE.first, params={}),
    )
    assert issubclass(outcome["error"], exc.DBAPIError)
    assert outcome["connection_invalidated"] is True
    assert outcome["invalidated"] is True
    # the pool replaced it
    with engine.connect() as connection, connection.begin():
        assert repository._AUDIT_HEAD_FOR_UPDATE.first(connection, {}) is not None


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_terminated_postgres_backend_is_a_disconnect_and_invalidated(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(ctx)

    def terminate(connection: Connection) -> None:
        dbapi_connection: Any = connection.connection.dbapi_connection
        with engine.connect() as other:
            other.execute(
                text("SELECT pg_terminate_backend(:pid)"),
                {"pid": dbapi_connection.info.backend_pid},
            )

    outcome = _both(
        engine,
        monkeypatch,
        before=terminate,
        run=partial(repository._AUDIT_HEAD_FOR_UPDATE.first, params={}),
    )
    assert outcome["error"] is exc.OperationalError
    assert outcome["connection_invalidated"] is True
    assert outcome["invalidated"] is True


def test_a_cancelled_statement_invalidates_the_connection(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy's exit exceptions (a cancelled task, KeyboardInterrupt) leave the driver
    connection in an unknown state: invalidated, the exception itself raised."""

    def cancel(*_: Any) -> None:
        raise asyncio.CancelledError

    def cancelling(connection: Connection) -> None:
        event.listen(connection, "before_cursor_execute", cancel)

    outcome = _both(
        _engine(ctx),
        monkeypatch,
        before=cancelling,
        run=partial(repository._AUDIT_HEAD_FOR_UPDATE.first, params={}),
    )
    assert outcome["error"] is asyncio.CancelledError
    assert outcome["invalidated"] is True
