"""A statement's text and values run on the DBAPI cursor of a ``Connection``'s transaction,
with what ``Connection.exec_driver_sql`` would do around the driver and no more.

``exec_driver_sql`` builds an execution context and a ``CursorResult`` for every call,
about as much CPU as a small SQLite statement itself. :func:`run` calls the driver's
cursor directly and keeps what the coordinator and its tests rely on, through
SQLAlchemy's public API only:

- the ``before_cursor_execute`` and ``after_cursor_execute`` events, fired when (and only
  when) a listener is registered (on the engine, the connection or ``Engine``), with the
  same statement and parameters (a ``retval=True`` listener may replace them) and, as the
  only difference, ``context=None``: no execution context exists here;
- a driver error raised as SQLAlchemy raises it (``DBAPIError.instance``: e.g.
  ``sqlalchemy.exc.IntegrityError``, with the engine's ``hide_parameters``), the
  connection invalidated on a disconnect (``dialect.is_disconnect``) or on an exit
  exception (``KeyboardInterrupt``, a cancelled task) as SQLAlchemy invalidates it.
  SQLAlchemy also marks the whole pool stale on a disconnect; the coordinator's
  PostgreSQL engine pings each connection at checkout (``pool_pre_ping``), whose first
  failure marks the pool stale the same way, so no dead connection is handed out either
  way, and a SQLite disconnect (a closed ``sqlite3`` connection) concerns that connection
  only.

Anything else goes through ``exec_driver_sql`` itself (:func:`_plain` says when): no
transaction begun yet (the engine's ``begin`` event issues SQLite's ``BEGIN IMMEDIATE``),
an inactive or invalidated one (SQLAlchemy raises its own error), the dialect's
``do_execute`` or ``handle_error`` listeners, SQL logging (``echo``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection

__all__ = ["Rows", "run"]

_T = TypeVar("_T")


class Rows(Protocol):
    """What a reader gets: the DBAPI cursor, or (through ``exec_driver_sql``) the
    ``CursorResult``; both answer these."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def close(self) -> None: ...


def run(
    connection: Connection,
    sql: str,
    parameters: Sequence[Any] | Mapping[str, Any],
    read: Callable[[Rows], _T],
) -> _T:
    """Run ``sql`` with ``parameters`` (the driver's paramstyle) in ``connection``'s
    transaction; ``read`` the rows or the row count; close the cursor."""
    if not _plain(connection):
        result = connection.exec_driver_sql(sql, parameters)
        try:
            return read(result)
        finally:
            result.close()
    dispatch = connection.dispatch
    cursor = None
    try:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if dispatch.before_cursor_execute:
            for listener in dispatch.before_cursor_execute:
                sql, parameters = listener(connection, cursor, sql, parameters, None, False)
        cursor.execute(sql, parameters)
        if dispatch.after_cursor_execute:
            dispatch.after_cursor_execute(connection, cursor, sql, parameters, None, False)
        value = read(cursor)
    except BaseException as error:
        # an error before the cursor exists is reported without parameters, as SQLAlchemy
        # reports one raised while it creates its execution context
        shown = None if cursor is None else parameters
        _raise_as_sqlalchemy(connection, error, sql, shown, cursor)
    cursor.close()
    return value


def _plain(connection: Connection) -> bool:
    """Whether ``exec_driver_sql`` would do nothing around the driver but what :func:`run`
    does: a transaction already begun and active, no dialect-level execution or error
    listeners, no SQL logging."""
    root = connection.get_transaction()
    if root is None or not root.is_active or connection.invalidated:
        return False
    nested = connection.get_nested_transaction()
    if nested is not None and not nested.is_active:
        return False
    dialect_events = connection.dialect.dispatch
    if dialect_events.do_execute or dialect_events.handle_error:
        return False
    return not connection.engine.echo


def _raise_as_sqlalchemy(
    connection: Connection,
    error: BaseException,
    sql: str,
    parameters: Sequence[Any] | Mapping[str, Any] | None,
    cursor: Any,
) -> NoReturn:
    """Raise ``error`` as ``Connection._handle_dbapi_exception`` would for a statement
    run in a transaction with no ``handle_error`` listener (see the module docstring)."""
    dialect = connection.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    # SQLAlchemy's "exit exception" (util.is_exit_exception): the statement was cut short
    exit_exception = not isinstance(error, Exception) or isinstance(
        error, asyncio.TimeoutError | asyncio.CancelledError
    )
    disconnect = exit_exception or (
        isinstance(error, dbapi_error)
        and dialect.is_disconnect(error, connection.connection, cursor)
    )
    if disconnect:
        connection.invalidate(error)
    elif cursor is not None:
        with contextlib.suppress(Exception):
            cursor.close()
    if not isinstance(error, dbapi_error):
        raise error
    raise exc.DBAPIError.instance(
        sql,
        parameters,
        error,
        dbapi_error,
        hide_parameters=connection.engine.hide_parameters,
        connection_invalidated=disconnect,
        dialect=dialect,
    ).with_traceback(error.__traceback__) from error
