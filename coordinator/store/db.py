"""Engine and session factories; SQLite is configured (WAL, busy timeout, foreign keys).

Two kinds of session: ``create_session_factory`` for work that writes (or reads and then
writes), ``create_read_session_factory`` for read-only work. On SQLite they differ in how
the transaction begins (see ``_begin``); on PostgreSQL they behave the same.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from sqlalchemy import Connection, Engine, column, create_engine, event, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "SQLITE_PAGE_SIZE",
    "WAL_AUTOCHECKPOINT_PAGES",
    "ReadOnlySessionError",
    "checkpoint_wal",
    "create_db_engine",
    "create_read_session_factory",
    "create_session_factory",
    "create_unsynced_session_factory",
    "ping",
    "read_connection",
    "uses_wal",
    "wal_written_at",
]

# Every engine has hide_parameters: a database error's message (logged, and shown in
# tracebacks) names the statement but never its bound values, which may be token hashes,
# digests or a participant's numbers.

# A commit that leaves SQLite's write-ahead log longer than this many pages copies the log
# into the database file before it returns (SQLite's own default is 1,000 pages, ~4 MB):
# the request that happens to cross it pays the copy and an fsync of the database (a
# K = 10 round of 437 KB updates crossed it once a round: ~7 ms of CPU, 10-60 ms of wall
# time). The coordinator's worker checkpoints in the background (``checkpoint_wal``)
# every fraction of a second, so in a server this is only the backstop; a process without
# the worker (a CLI command) checkpoints here, and when its last connection closes.
WAL_AUTOCHECKPOINT_PAGES = 2_500

# The page size of a new SQLite database (SQLite's default is 4 KB). Every page a commit
# changes is written to the log as one frame, checksummed and written by a syscall of its
# own: committing a 437 KB update took ~2 ms of CPU in 4 KB frames, ~0.7 ms in 16 KB
# ones (bench/RESULTS.md, round-job-core). An existing database keeps its page size.
SQLITE_PAGE_SIZE = 16_384

# execution option carried by the connections of read-only sessions
_READ_ONLY = "fedrec_read_only"
# ... and by those of write sessions whose COMMIT does not wait for its fsync
_UNSYNCED = "fedrec_unsynced"


class _WriterTurn:
    """One SQLite write transaction at a time in this process, queued on a Python lock.

    SQLite's own busy handler makes a writer that finds the database locked *sleep*
    (1, 2, 5, 10... ms) before it tries again, so concurrent uploads into one process
    spent most of a round asleep. Queued here, the next writer starts the moment the
    previous one commits. Other processes still queue on the busy timeout.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout_seconds
        self._holder: object | None = None  # the DBAPI connection in a write transaction
        # the connection whose transaction commits without its fsync (synchronous=NORMAL)
        self.unsynced: object | None = None

    def take(self, dbapi_connection: object) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            # the same error (and retryability) as SQLite's own busy timeout
            raise OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
            )
        self._holder = dbapi_connection

    def give_back(self, dbapi_connection: object) -> None:
        """Release the turn if ``dbapi_connection`` holds it (a no-op otherwise); a
        connection that committed unsynced gets ``synchronous=FULL`` back first."""
        if self.unsynced is not None and self.unsynced is dbapi_connection:
            self.unsynced = None
            _restore_full_sync(dbapi_connection)
        if self._holder is not None and self._holder is dbapi_connection:
            self._holder = None
            self._lock.release()


def _restore_full_sync(dbapi_connection: Any) -> None:
    try:
        dbapi_connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error:  # pragma: no cover - a closed connection is never used again
        pass


def _raw(connection: Any) -> object:
    """The sqlite3 connection behind a pool proxy (or the connection itself)."""
    return getattr(connection, "dbapi_connection", None) or connection


class ReadOnlySessionError(RuntimeError):
    """A read-only session tried to write: use a write session (``sessions.begin()``)."""


def create_db_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 15_000, pool_size: int | None = None
) -> Engine:
    """Create an engine; SQLite connections get the pragmas a concurrent server needs.
    ``pool_size`` (default :data:`POOL_SIZE`): PostgreSQL connections kept per process."""
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        if not in_memory:
            _create_private(make_url(url).database)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
            poolclass=StaticPool if in_memory else None,
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take control so that
            # each transaction starts with the BEGIN chosen below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not in_memory:
                # before WAL mode: takes effect only on a new, empty file (SQLITE_PAGE_SIZE)
                cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            # savepoints' statement journals in memory: on disk, every write transaction
            # whose SAVEPOINTs changed more than 64 KiB of pages (4 pages of 16 KiB: each
            # group-committed upload, each small round's job) created, unlinked and wrote
            # a temporary file
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if conn.get_execution_options().get(_READ_ONLY):
                # WAL readers take no lock: they neither wait for a writer nor hold one up
                conn.exec_driver_sql("BEGIN")
            else:
                # a writer queues on the busy timeout here, at BEGIN; a deferred transaction
                # that reads and then writes would instead fail when its read lock cannot be
                # upgraded (SQLITE_BUSY, which the busy timeout does not retry)
                raw = _raw(conn.connection)
                if turn is not None:
                    turn.take(raw)
                try:
                    if turn is not None and conn.get_execution_options().get(_UNSYNCED):
                        # the level cannot change inside a transaction; back to FULL after
                        # its COMMIT or ROLLBACK (_give_back_after_transactions)
                        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                        turn.unsynced = raw
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                except BaseException:
                    if turn is not None:
                        turn.give_back(raw)
                    raise

        if not in_memory:  # one shared connection there: nothing to queue
            turn = _WriterTurn(sqlite_busy_timeout_ms / 1000)
            _give_back_after_transactions(engine, turn)
        else:
            turn = None
        _driver_savepoints(engine)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE if pool_size is None else pool_size,
        max_overflow=POOL_OVERFLOW,
        hide_parameters=True,
    )
    _driver_savepoints(engine)
    return engine


# A process runs its requests' database work on 40 worker threads (anyio's default); a
# pool of 10 kept connections made the other 30 open and close one per transaction under
# load (2,118 PostgreSQL sessions for 34,923 commits in bench.load at 10,000 participants).
# One kept connection per worker thread, a few more for the aggregation job and the round
# notifier: 45 per process, so `fedrec serve --workers 2` stays below PostgreSQL's default
# max_connections of 100 (FEDREC_DATABASE_POOL_SIZE lowers it for more workers).
POOL_SIZE = 40
POOL_OVERFLOW = 5


def _create_private(path: str | None) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does it with the umask.

    It holds token hashes and everything the federations did; SQLite gives its ``-wal``
    and ``-shm`` files the database file's permissions.
    """
    if not path or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except FileNotFoundError:
        return  # no such folder: SQLite reports it on connect
    os.close(fd)


def _give_back_after_transactions(engine: Engine, turn: _WriterTurn) -> None:
    """Release the writer turn once the transaction's COMMIT or ROLLBACK returned (not
    before: the next writer would find the database still locked and sleep), and when
    the pool takes back, invalidates or closes the connection, so it is never lost."""
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            turn.give_back(_raw(dbapi_connection))

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            turn.give_back(_raw(dbapi_connection))

    # this engine's own dialect instance; the pool's reset-on-return uses it too
    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    for name in ("checkin", "invalidate", "close"):
        event.listen(engine.pool, name, lambda dbapi, *_: turn.give_back(dbapi))


def _driver_savepoints(engine: Engine) -> None:
    """SAVEPOINT, RELEASE and ROLLBACK TO as the driver's SQL text, the same text
    SQLAlchemy compiles for them. Its default runs each as a clause compiled anew per call
    (a savepoint's name is part of the clause, so the compiled cache never holds it): ~10 µs
    a SAVEPOINT and its RELEASE in a warm loop, ~0.2 ms in a round's job, whose caches the
    uploads just evicted. The job in its upload's transaction, and every unit of a batch of
    uploads, takes one (bench/RESULTS.md, roundjob). Names are SQLAlchemy's own
    (``sa_savepoint_<n>``), quoted as its compiler quotes them."""
    dialect = engine.dialect
    preparer = dialect.identifier_preparer

    def quoted(name: str) -> str:
        # what SQLAlchemy's compiler renders a savepoint's name with
        return str(preparer.format_savepoint(None, name))  # type: ignore[no-untyped-call]

    def do_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {quoted(name)}")

    def do_rollback_to_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {quoted(name)}")

    def do_release_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {quoted(name)}")

    # this engine's own dialect instance (as _give_back_after_transactions does)
    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that writes; on SQLite they hold the write lock from BEGIN."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def create_unsynced_session_factory(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Write sessions like ``sessions`` whose COMMIT returns before its fsync.

    Only for a transaction that may be lost in a power cut at no cost: the aggregation
    claim, whose loss the lease and the timer repair. It cannot be lost behind a later
    transaction that depends on it: the write-ahead log is flushed in order (SQLite's WAL
    with ``synchronous=NORMAL``, PostgreSQL's ``synchronous_commit = off``), so the next
    synced COMMIT makes it durable too.
    """
    kw = dict(sessions.kw)
    bind = kw.pop("bind")
    factory = sessionmaker(bind=bind.execution_options(**{_UNSYNCED: True}), **kw)
    if bind.dialect.name == "postgresql":

        @event.listens_for(factory, "after_begin")
        def _no_wait(_session: Session, _transaction: Any, connection: Any) -> None:
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")

    return factory


def create_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for read-only work; on SQLite they never wait for the write lock.

    They refuse to write, so code that reads and then writes cannot slip into one
    without the write lock taken at BEGIN. Same pool and events as ``engine``.
    """
    factory = sessionmaker(
        bind=engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
    )

    @event.listens_for(factory, "before_flush")
    def _refuse_flush(_session: Session, _flush: UOWTransaction, _instances: Any) -> None:
        raise ReadOnlySessionError("a read-only session cannot flush changes")

    @event.listens_for(factory, "do_orm_execute")
    def _refuse_dml(state: ORMExecuteState) -> None:
        if not state.is_select:
            raise ReadOnlySessionError("a read-only session cannot execute a write statement")

    return factory


def read_connection(read_sessions: sessionmaker[Session]) -> Connection:
    """A Core connection of ``read_sessions``' engine (a ``create_read_session_factory``):
    the same pool and the same read-only BEGIN (on SQLite it never waits for the write
    lock), without an ORM session around it, for the hottest one-statement reads. Use it
    as a context manager (its transaction is rolled back and the connection returned to
    the pool on exit); nothing checks here that it only reads: use it only to read."""
    engine: Engine = read_sessions.kw["bind"]
    return engine.connect()


def uses_wal(engine: Engine) -> bool:
    """Whether the engine's database is a SQLite file (in WAL mode: create_db_engine)."""
    return engine.dialect.name == "sqlite" and not isinstance(engine.pool, StaticPool)


def wal_written_at(engine: Engine) -> int | None:
    """When the write-ahead log was last written to (ns), None without one: a checkpoint
    has nothing to copy unless this changed since the last one."""
    database = engine.url.database
    if not uses_wal(engine) or not database:
        return None
    try:
        return os.stat(f"{database}-wal").st_mtime_ns
    except FileNotFoundError:
        return None


def checkpoint_wal(engine: Engine) -> tuple[int, int] | None:
    """Copy the committed pages of SQLite's write-ahead log into the database file, off
    any request: PASSIVE, so it neither waits for nor blocks readers and writers (it
    copies what no open read still needs, and stops early when another process
    checkpoints). Returns (pages in the log, pages copied so far); None when the
    database is not a SQLite file (PostgreSQL checkpoints by itself)."""
    if not uses_wal(engine):
        return None
    connection = engine.raw_connection()
    try:
        # the driver connection commits by itself (isolation_level None): no BEGIN, so
        # no writer turn is taken
        row = connection.driver_connection.execute(  # type: ignore[union-attr]
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
    finally:
        connection.close()
    return (int(row[1]), int(row[2])) if row is not None else None


def ping(session: Session) -> None:
    """One round trip to the database; raises the driver's error when it cannot answer,
    or when it has no schema (an SQLite file deleted and silently re-created empty)."""
    session.execute(select(column("version_num")).select_from(table("alembic_version")))
