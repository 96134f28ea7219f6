"""One contract, three blob stores: local folder, PostgreSQL rows, S3 objects (moto server).

Each backend must keep the promises of coordinator/store/blobs.py: content addressing,
idempotent stores that refresh the time, and a collector that never removes a blob stored
again meanwhile. The S3 store's index runs on SQLite here and on PostgreSQL in
test_blob_store_federation.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from coordinator.migrate import upgrade
from coordinator.store import blob_index
from coordinator.store.blobs import BlobEntry, BlobNotFound, BlobStore
from coordinator.store.database_blobs import CHUNK_BYTES, DatabaseBlobStore
from coordinator.store.db import (
    create_db_engine,
    create_read_session_factory,
    create_session_factory,
)
from coordinator.store.files_and_rows import FilesAndRows
from coordinator.store.local_blobs import LocalBlobStore
from coordinator.store.models import Blob, BlobChunk
from coordinator.store.s3_blobs import S3BlobStore
from tests.conftest import _scratch_postgres_database
from tests.s3_server import new_bucket

HOUR = 3600.0
BACKENDS = [
    "local",
    "files-and-rows",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "s3",
]


@dataclass
class Case:
    """A store under test and a way to make one of its blobs look stored ``seconds`` ago."""

    store: BlobStore
    age: Callable[[str, float], None]
    sessions: sessionmaker[Session] | None = None
    s3: Any = None  # the boto3 client of the s3 case
    bucket: str = ""


@contextlib.contextmanager
def _sessions(url: str) -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    engine = create_db_engine(url)
    try:
        yield create_session_factory(engine), create_read_session_factory(engine)
    finally:
        engine.dispose()


def _age_row(sessions: sessionmaker[Session]) -> Callable[[str, float], None]:
    def age(digest: str, seconds: float) -> None:
        then = datetime.fromtimestamp(time.time() - seconds, UTC)
        with sessions.begin() as session:
            session.execute(update(Blob).where(Blob.digest == digest).values(stored_at=then))

    return age


@contextlib.contextmanager
def _local_case(tmp_path: Path) -> Iterator[Case]:
    local = LocalBlobStore(tmp_path / "blobs")

    def age(digest: str, seconds: float) -> None:
        then = time.time() - seconds
        os.utime(local.path(digest), (then, then))

    yield Case(local, age)


@contextlib.contextmanager
def _files_and_rows_case(tmp_path: Path) -> Iterator[Case]:
    """The default local store: ``put`` writes files (small blobs become rows only inside
    the transactions that record them: test_files_and_rows.py)."""
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    upgrade(url)
    with _local_case(tmp_path) as local, _sessions(url) as (sessions, reads):
        assert isinstance(local.store, LocalBlobStore)
        store = FilesAndRows(local.store, DatabaseBlobStore(sessions, reads))
        yield Case(store, local.age, sessions)


@contextlib.contextmanager
def _postgres_case() -> Iterator[Case]:
    with (
        _scratch_postgres_database(template="migrated") as url,
        _sessions(url) as (sessions, reads),
    ):
        store = DatabaseBlobStore(sessions, reads, chunk_bytes=1000)
        yield Case(store, _age_row(sessions), sessions)


@contextlib.contextmanager
def _s3_case(tmp_path: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    upgrade(url)
    bucket, client = new_bucket(endpoint, monkeypatch)
    with _sessions(url) as (sessions, reads):
        store = S3BlobStore(client, bucket, "fedrec/blobs/", sessions, reads)
        yield Case(store, _age_row(sessions), sessions, client, bucket)


@pytest.fixture(params=BACKENDS)
def case(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Case]:
    if request.param == "local":
        with _local_case(tmp_path) as found:
            yield found
    elif request.param == "files-and-rows":
        with _files_and_rows_case(tmp_path) as found:
            yield found
    elif request.param == "postgres":
        with _postgres_case() as found:
            yield found
    else:
        with _s3_case(tmp_path, request.getfixturevalue("s3_endpoint"), monkeypatch) as found:
            yield found


@pytest.fixture
def postgres_case() -> Iterator[Case]:
    with _postgres_case() as found:
        yield found


@pytest.fixture
def s3_case(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    with _s3_case(tmp_path, s3_endpoint, monkeypatch) as found:
        yield found


def _entry(store: BlobStore, digest: str) -> BlobEntry:
    (found,) = [item for item in store.scan() if item.digest == digest]
    return found


def test_put_get_roundtrip(case: Case) -> None:
    digest = case.store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert case.store.get(digest) == b"hello"
    assert case.store.exists(digest)


def test_an_empty_blob_roundtrips(case: Case) -> None:
    assert case.store.get(case.store.put(b"")) == b""


def test_bytes_over_several_chunks_come_back_whole(case: Case) -> None:
    data = os.urandom(10_500)  # 11 chunks of the postgres case's 1000 bytes
    digest = case.store.put(data)
    assert case.store.get(digest) == data
    assert _entry(case.store, digest).size == len(data)


def test_putting_twice_stores_once(case: Case) -> None:
    first = case.store.put(b"x" * 1000)
    assert case.store.put(b"x" * 1000, first) == first
    assert [item.digest for item in case.store.scan()] == [first]


def test_get_each_reads_blobs_in_the_order_asked(case: Case) -> None:
    blobs = [os.urandom(n) for n in (10, 2_500, 0, 10)]  # 2,500: several postgres chunks
    digests = [case.store.put(data) for data in blobs]
    assert list(case.store.get_each(digests)) == blobs
    assert list(case.store.get_each([])) == []
    reading = case.store.get_each([digests[1], "0" * 64])
    assert next(reading) == blobs[1]
    with pytest.raises(BlobNotFound):
        next(reading)


def test_missing_blob(case: Case) -> None:
    with pytest.raises(BlobNotFound):
        case.store.get("0" * 64)
    assert not case.store.exists("0" * 64)


def test_refuses_a_name_that_is_not_a_digest(case: Case) -> None:
    with pytest.raises(ValueError, match="sha256"):
        case.store.get("../../etc/passwd")
    with pytest.raises(ValueError, match="sha256"):
        case.store.put(b"data", "not-a-digest")


def test_storing_again_refreshes_the_time(case: Case) -> None:
    digest = case.store.put(b"weights")
    case.age(digest, HOUR)
    assert _entry(case.store, digest).mtime < time.time() - HOUR + 60
    case.store.put(b"weights")
    assert _entry(case.store, digest).mtime > time.time() - 60


def test_remove_stale_removes_an_old_blob(case: Case) -> None:
    digest = case.store.put(b"orphan")
    case.age(digest, HOUR)
    assert case.store.remove_stale(_entry(case.store, digest), older_than=time.time() - 60)
    assert not case.store.exists(digest)
    assert list(case.store.scan()) == []  # nothing left behind


def test_remove_stale_keeps_a_recent_blob(case: Case) -> None:
    digest = case.store.put(b"an upload about to commit")
    assert not case.store.remove_stale(_entry(case.store, digest), older_than=time.time() - 60)
    assert case.store.get(digest) == b"an upload about to commit"


def test_remove_stale_keeps_a_blob_stored_again_meanwhile(case: Case) -> None:
    digest = case.store.put(b"orphan, then uploaded again")
    case.age(digest, HOUR)
    seen = _entry(case.store, digest)  # the collector saw it old ...
    case.store.put(b"orphan, then uploaded again")  # ... a request stores the same bytes ...
    assert not case.store.remove_stale(seen, older_than=time.time() - 60)  # ... it stays
    assert case.store.get(digest) == b"orphan, then uploaded again"


def test_put_rewrites_a_blob_the_collector_took(case: Case) -> None:
    digest = case.store.put(b"bytes")
    case.age(digest, HOUR)
    assert case.store.remove_stale(_entry(case.store, digest), older_than=time.time() - 60)
    assert case.store.put(b"bytes") == digest
    assert case.store.get(digest) == b"bytes"


def test_describe_names_the_place(case: Case) -> None:
    assert any(word in case.store.describe() for word in ("local folder", "blob_chunks", "s3://"))


# --- postgres ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_chunks_go_with_their_blob(postgres_case: Case) -> None:
    case = postgres_case
    assert case.sessions is not None
    digest = case.store.put(os.urandom(2_500))
    with case.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BlobChunk)) == 3
    case.age(digest, HOUR)
    assert case.store.remove_stale(_entry(case.store, digest), older_than=time.time() - 60)
    with case.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BlobChunk)) == 0


@pytest.mark.postgres
def test_postgres_default_chunks_hold_a_large_blob(postgres_case: Case) -> None:
    assert postgres_case.sessions is not None
    reads = create_read_session_factory(postgres_case.sessions.kw["bind"])
    store = DatabaseBlobStore(postgres_case.sessions, reads)  # 8 MiB chunks
    data = os.urandom(CHUNK_BYTES * 2 + 12_345)
    digest = store.put(data)
    assert store.get(digest) == data
    with postgres_case.sessions() as session:
        sizes = session.scalars(
            select(func.length(BlobChunk.data))
            .where(BlobChunk.digest == digest)
            .order_by(BlobChunk.seq)
        ).all()
    assert sizes == [CHUNK_BYTES, CHUNK_BYTES, 12_345]


@pytest.mark.postgres
def test_postgres_a_store_during_a_collection_writes_the_blob_anew(postgres_case: Case) -> None:
    """The collector holds the row lock: a concurrent store of the same bytes waits, then
    finds the blob gone and writes it again, so the reference it is about to commit is good."""
    case = postgres_case
    assert case.sessions is not None
    data = b"old orphan, uploaded again while the collector removes it"
    digest = case.store.put(data)
    case.age(digest, HOUR)
    stored = threading.Event()
    with case.sessions.begin() as session:
        assert blob_index.lock_if_stale(session, digest, time.time() - 60)

        def store_again() -> None:
            case.store.put(data)
            stored.set()

        writer = threading.Thread(target=store_again)
        writer.start()
        assert not stored.wait(1.0)  # blocked on the collector's row lock
        session.execute(delete(BlobChunk).where(BlobChunk.digest == digest))
        blob_index.forget(session, digest)
    writer.join(timeout=30)
    assert stored.is_set()
    assert case.store.get(digest) == data


# --- s3 ----------------------------------------------------------------------------------


def test_s3_objects_are_named_by_their_digest(s3_case: Case) -> None:
    digest = s3_case.store.put(b"model")
    head = s3_case.s3.head_object(Bucket=s3_case.bucket, Key=f"fedrec/blobs/{digest[:2]}/{digest}")
    assert head["ContentLength"] == len(b"model")


def test_s3_a_row_whose_object_never_arrived(s3_case: Case) -> None:
    """A crash between the index row's commit and the PUT: storing the bytes writes the
    object; collecting removes the row alone."""
    case = s3_case
    assert case.sessions is not None
    digest = hashlib.sha256(b"late").hexdigest()
    with case.sessions.begin() as session:
        assert blob_index.register(session, digest, 4)
    assert not case.store.exists(digest)
    case.age(digest, HOUR)
    assert case.store.remove_stale(_entry(case.store, digest), older_than=time.time() - 60)
    assert list(case.store.scan()) == []
    with case.sessions.begin() as session:
        assert blob_index.register(session, digest, 4)
    assert case.store.put(b"late") == digest
    assert case.store.get(digest) == b"late"


def test_check_passes_on_a_usable_store(case: Case) -> None:
    case.store.check()  # /readyz's probe: raises OSError when the store is unusable


def test_s3_check_fails_for_a_missing_bucket(s3_case: Case) -> None:
    assert s3_case.sessions is not None
    gone = S3BlobStore(
        s3_case.s3, "no-such-bucket", "fedrec/blobs/", s3_case.sessions, s3_case.sessions
    )
    with pytest.raises(OSError, match="no-such-bucket"):
        gone.check()


def test_postgres_check_fails_without_the_blob_tables(postgres_case: Case) -> None:
    assert postgres_case.sessions is not None
    with postgres_case.sessions.begin() as session:
        session.execute(text("DROP TABLE blob_chunks"))
        session.execute(text("DROP TABLE blobs"))
    with pytest.raises(OSError, match="blob tables"):
        postgres_case.store.check()


def test_remove_deletes_at_once(case: Case) -> None:
    kept = case.store.put(b"kept")
    gone = case.store.put(b"a losing draw")
    case.store.remove(gone)
    assert not case.store.exists(gone)
    assert case.store.exists(kept)
    assert [item.digest for item in case.store.scan()] == [kept]
    case.store.remove(gone)  # removing what is gone is a no-op
