"""Prebuilt statements: a Core statement compiled once per dialect, run at driver level.

``connection.execute(statement, params)`` spends more CPU around a small statement than
SQLite takes to run it: the statement's cache key is computed anew on every call (a walk
of its whole expression) to find its compiled form, then an execution context converts
the parameters, and a result object types the rows. For the statements every upload and
every small round runs, :class:`Prebuilt` does that work once: the statement is compiled
by SQLAlchemy for the connection's dialect (the SQL text is SQLAlchemy's, for SQLite and
PostgreSQL alike; none is written by hand here), each bind value is converted by its
column type's own bind processor (UTC datetimes, JSON, booleans), the text and the
ordered values go to the driver's cursor on the transaction's own connection (see
``store/driver_cursor.py``: the same cursor events and the same wrapped errors as
``Connection.exec_driver_sql``, e.g. ``sqlalchemy.exc.IntegrityError``), and the returned
rows are converted by the selected columns' result processors, as ``execute`` would
return them.

Only statements whose compiled form needs nothing computed per execution qualify: no
column default evaluated in Python (every column of an INSERT is given), no bound callable,
no expanding ``IN`` and no literal rendered at execution. :class:`Prebuilt` refuses the
others when it compiles them. The repositories still own every statement; this module only
runs them. Dialects that agree in name, driver and server version share one compiled form
(the coordinator sets no per-engine type options such as a JSON serializer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from coordinator.store import driver_cursor
from coordinator.store.driver_cursor import Rows

__all__ = ["Prebuilt"]

_Processor = Callable[[Any], Any] | None
_MISSING: Any = object()
_T = TypeVar("_T")


class _Compiled:
    """One statement compiled for one dialect: its text, how to build its parameters,
    how to convert its rows."""

    __slots__ = ("positional", "process_row", "slots", "sql")

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, column_keys: list[str] | None
    ) -> None:
        compiled: Any = statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError("a prebuilt statement cannot evaluate a column default per call")
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a prebuilt statement cannot render values per call")
        self.sql: str = compiled.string
        self.positional: bool = bool(dialect.positional)
        # compiled name -> its BindParameter (whose key a caller's parameters use)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        escaped: Mapping[str, str] = compiled.escaped_bind_names or {}

        def slot(name: str) -> tuple[str, str, Any, _Processor]:
            bind = binds[name]
            if bind.callable is not None:
                raise ValueError("a prebuilt statement cannot evaluate a bound callable per call")
            # a value given in the statement (a literal compared to): used unless passed
            constant = _MISSING if bind.required else bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            return escaped.get(name, name), bind.key, constant, processor

        # the driver's order (positional paramstyles repeat a name used twice), or every
        # name once (named paramstyles)
        names = compiled.positiontup if self.positional else list(binds)
        self.slots = [slot(name) for name in names]
        columns = list(getattr(statement, "exported_columns", ()))
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        self.process_row: Callable[[Iterable[Any]], tuple[Any, ...]] | None = None
        if any(p is not None for p in processors):

            def process_row(row: Iterable[Any]) -> tuple[Any, ...]:
                return tuple(
                    value if p is None else p(value)
                    for p, value in zip(processors, row, strict=True)
                )

            self.process_row = process_row

    def parameters(self, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = []
        for _, key, constant, processor in self.slots:
            value = params.get(key, constant)
            if value is _MISSING:
                raise KeyError(f"no value for the bind parameter {key!r}")
            values.append(value if processor is None else processor(value))
        if self.positional:
            return tuple(values)
        return {name: value for (name, *_), value in zip(self.slots, values, strict=True)}


class Prebuilt:
    """A Core statement (``select``, ``insert``, ``update``, a typed ``text``) compiled
    once per dialect and run at driver level (see the module docstring).

    ``statement``: the statement, or a function of the dialect's name that builds it (a
    dialect's own construct: ``INSERT … ON CONFLICT``). ``column_keys``: for an INSERT,
    the columns every call passes (all of the table's by default), as ``execute`` would
    compile it from the keys of its parameters.
    """

    def __init__(
        self,
        statement: Executable | Callable[[str], Executable],
        *,
        column_keys: Iterable[str] | None = None,
    ) -> None:
        self._statement = statement
        self._column_keys = None if column_keys is None else list(column_keys)
        self._by_dialect: dict[tuple[Any, ...], _Compiled] = {}
        # the dialect met last and its compiled form: a process has one engine
        self._last: tuple[Dialect, _Compiled] | None = None

    def statement(self, dialect_name: str) -> Executable:
        """The Core statement run on the dialect named ``dialect_name``."""
        statement = self._statement
        if not isinstance(statement, ClauseElement):
            statement = statement(dialect_name)  # type: ignore[operator]
        if not isinstance(statement, ClauseElement):
            raise TypeError("a prebuilt statement is a Core statement")
        return statement  # type: ignore[return-value]

    def compiled(self, dialect: Dialect) -> _Compiled:
        last = self._last
        if last is not None and last[0] is dialect:
            return last[1]
        key = (dialect.name, dialect.driver, dialect.server_version_info)
        compiled = self._by_dialect.get(key)
        if compiled is None:
            statement = cast(ClauseElement, self.statement(dialect.name))
            column_keys = self._column_keys
            table = getattr(statement, "table", None)
            if column_keys is None and getattr(statement, "is_insert", False) and table is not None:
                column_keys = [column.key for column in table.c]
            compiled = self._by_dialect[key] = _Compiled(statement, dialect, column_keys)
        self._last = (dialect, compiled)
        return compiled

    def sql(self, dialect: Dialect) -> str:
        """The statement's text for ``dialect``, as the driver receives it."""
        return self.compiled(dialect).sql

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run the statement (an INSERT's, whose rows and count are not read)."""
        self._run(connection, params, _nothing)

    def rowcount(self, connection: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement; the rows it changed (an UPDATE's, a DELETE's)."""
        return self._run(connection, params, _rowcount)[1]

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run the statement; its first row converted as ``execute`` would (None if none)."""
        compiled, row = self._run(connection, params, _first_row)
        if row is None:
            return None
        process = compiled.process_row
        return tuple(row) if process is None else process(row)

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run the statement; every row converted as ``execute`` would."""
        compiled, rows = self._run(connection, params, _all_rows)
        process = compiled.process_row
        return [tuple(row) if process is None else process(row) for row in rows]

    def _run(
        self, connection: Connection, params: Mapping[str, Any], read: Callable[[Rows], _T]
    ) -> tuple[_Compiled, _T]:
        """Run the statement on ``connection`` with ``params``; what ``read`` reads."""
        compiled = self.compiled(connection.dialect)
        return compiled, driver_cursor.run(
            connection, compiled.sql, compiled.parameters(params), read
        )


def _nothing(_rows: Rows) -> None:
    return None


def _rowcount(rows: Rows) -> int:
    return int(rows.rowcount)


def _first_row(rows: Rows) -> Any:
    return rows.fetchone()


def _all_rows(rows: Rows) -> Sequence[Any]:
    return rows.fetchall()
