"""Fault-test helpers: real ``fedrec serve`` processes on SQLite or PostgreSQL, seeded
deltas, and direct looks at the database and the blob folder behind the API.

Everything talks to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from coordinator.store.db import create_db_engine
from coordinator.store.models import Blob, BlobChunk, ModelVersion, Round, Update
from participant_sdk import Client
from tests.conftest import _scratch_postgres_database
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

__all__ = [
    "ADMIN_TOKEN",
    "Federation",
    "blob_files",
    "blob_rows",
    "check_blobs",
    "db_session",
    "deltas",
    "new_postgres_database",
    "server_url_for",
    "wait_until",
]

HEX64 = re.compile(r"^[0-9a-f]{64}$")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def deltas(seed: int, num_items: int, dim: int) -> dict[str, npt.NDArray[np.float32]]:
    """Deterministic pseudo-random deltas for one (participant, round)."""
    rng = np.random.default_rng(seed)
    return {
        "item_factors": (rng.standard_normal((num_items, dim)) * 0.05).astype(np.float32),
        "item_bias": (rng.standard_normal(num_items) * 0.05).astype(np.float32),
    }


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


def new_postgres_database() -> AbstractContextManager[str]:
    """A fresh, empty PostgreSQL database (``fedrec serve`` migrates it), dropped after."""
    return _scratch_postgres_database()


@contextmanager
def server_for(
    backend: str, data_dir: Path, database_url: str | None = None, **env: str
) -> Iterator[ServerProcess]:
    """A started coordinator on ``backend``; killed (not stopped politely) afterwards."""
    with _database(backend, database_url) as url:
        server = ServerProcess(data_dir, url, **env)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def _database(backend: str, database_url: str | None) -> Iterator[str | None]:
    if backend == "sqlite" or database_url is not None:
        yield database_url
        return
    with new_postgres_database() as url:
        yield url


def server_url_for(server: ServerProcess) -> str:
    """The SQLAlchemy URL the server uses (its SQLite file unless a URL was given)."""
    url = server.env.get("FEDREC_DATABASE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{(server.data_dir / 'fedrec.db').resolve()}"


@contextmanager
def db_session(server: ServerProcess) -> Iterator[Session]:
    """A read-only look at the server's database, past the API."""
    url = server_url_for(server)
    engine = create_db_engine(url) if url.startswith("sqlite") else create_engine(url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def blob_files(server: ServerProcess) -> dict[str, Path]:
    """Every file under the blob folder, by name (temporary files included)."""
    root = server.data_dir / "blobs"
    return {p.name: p for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def blob_rows(server: ServerProcess) -> dict[str, bytes]:
    """The small blobs kept as database rows (FEDREC_INLINE_BLOB_MAX_BYTES), by digest."""
    with db_session(server) as session:
        own = session.execute(select(Blob.digest, Blob.data).where(Blob.data.is_not(None))).all()
        chunks = session.execute(
            select(BlobChunk.digest, BlobChunk.data).order_by(BlobChunk.digest, BlobChunk.seq)
        ).all()
    rows: dict[str, bytes] = {digest: bytes(data or b"") for digest, data in own}  # in the row
    for digest, data in chunks:
        rows[digest] = rows.get(digest, b"") + data
    return rows


def check_blobs(server: ServerProcess, federation_id: str) -> list[Update]:
    """Assert nothing half-written is visible: every file named like a blob, and every
    blob kept as rows, holds the bytes of that name, and every update row and model
    version points at such a blob. Returns the federation's update rows."""
    sizes = {}
    for digest, data in blob_rows(server).items():
        assert hashlib.sha256(data).hexdigest() == digest, f"blob rows {digest} corrupt"
        sizes[digest] = len(data)
    files = blob_files(server)
    for name, path in files.items():
        if HEX64.match(name):
            assert path.parent.name == name[:2], f"blob {name} in the wrong folder"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == name, f"blob {name} corrupt"
        else:
            # a write cut short by SIGKILL may leave its temporary file, never a blob
            assert name.startswith(".tmp-"), f"unexpected file in the blob store: {path}"
    with db_session(server) as session:
        rounds = {
            r.id: r
            for r in session.scalars(select(Round).where(Round.federation_id == federation_id))
        }
        updates = list(session.scalars(select(Update).where(Update.round_id.in_(list(rounds)))))
        versions = list(
            session.scalars(select(ModelVersion).where(ModelVersion.federation_id == federation_id))
        )
    for name, path in files.items():
        if HEX64.match(name):
            sizes[name] = path.stat().st_size
    for row in updates:
        assert row.sha256 in sizes, f"update {row.id} points at a missing blob"
        assert sizes[row.sha256] == row.size
    for version in versions:
        assert version.sha256 in sizes, f"version {version.version} points at a missing blob"
    by_round: dict[str, int] = {}
    for row in updates:
        by_round[row.round_id] = by_round.get(row.round_id, 0) + 1
    for round_id, round_row in rounds.items():
        assert round_row.update_count == by_round.get(round_id, 0), (
            f"round {round_row.number}: update_count {round_row.update_count} "
            f"but {by_round.get(round_id, 0)} update rows"
        )
    return updates


class Federation:
    """A federation on a running server with enrolled participants' clients."""

    def __init__(
        self,
        server: ServerProcess,
        *,
        participants: int,
        num_items: int,
        dim: int,
        rounds: dict[str, Any],
        seed: int = 7,
        urls: list[str] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.num_items, self.dim = num_items, dim
        self.admin = Client(server.url, ADMIN_TOKEN)
        created = self.admin.federations.create(
            "faults",
            {"kind": "mf", "num_items": num_items, "dim": dim, "seed": seed},
            rounds=rounds,
        )
        self.id = created.id
        enrolled = [
            self.admin.participants.enrol(self.id, f"org-{i:02d}") for i in range(participants)
        ]
        self.participant_ids = [p.id for p in enrolled]
        self.tokens = [p.token for p in enrolled]
        urls = urls or [server.url]
        self.clients = [
            Client(urls[i % len(urls)], p.token, **(client_kwargs or {}))
            for i, p in enumerate(enrolled)
        ]

    def deltas(self, participant: int, round_number: int) -> dict[str, npt.NDArray[np.float32]]:
        return deltas(10_000 * round_number + participant, self.num_items, self.dim)

    def close(self) -> None:
        for client in [self.admin, *self.clients]:
            client.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
