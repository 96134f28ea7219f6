"""The ``postgres`` blob store: blob bytes as rows of the coordinator's own database.

Replicas on different hosts then share nothing but the database. A blob is a ``blobs``
row (coordinator/store/blob_index.py) holding its bytes when they fit one chunk of
:data:`CHUNK_BYTES` (one INSERT: an upload's blob is one statement), else its bytes cut
into ``blob_chunks`` rows of that size, all inserted in one transaction: readers see the
whole blob or none of it. Chunked ``bytea`` rather than large objects: a chunk stays far
below ``bytea``'s 1 GB limit and the driver's copies of it stay small, reads stream chunk
by chunk, and removal is a plain ``DELETE`` (large objects need ``lo_unlink`` or
``vacuumlo`` and their own permissions).

Durability: the blob's transaction commits with ``synchronous_commit = on`` whatever the
server's default, so when :meth:`DatabaseBlobStore.put` returns the bytes are in the
write-ahead log on disk, before the transaction that references them begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.store import blob_index
from coordinator.store.blobs import BlobEntry, BlobNotFound, check_digest, sha256_hex
from coordinator.store.models import Blob, BlobChunk

__all__ = ["CHUNK_BYTES", "DatabaseBlobStore", "store_in"]

CHUNK_BYTES = 8 * 1024 * 1024

# one statement (size and chunks), built once: small blobs are read per download and per
# aggregated update, where a second query, and building this one, were most of the cost
_READ = (
    select(Blob.size, Blob.data, BlobChunk.data.label("chunk"))
    .outerjoin(BlobChunk, BlobChunk.digest == Blob.digest)
    .where(Blob.digest == bindparam("digest"))
    .order_by(BlobChunk.seq)
)

# get_each reads small blobs this many at a time, in one statement for their sizes and
# one for their bytes (a round of 943 per-user updates was 943 queries), holding at most
# READ_BATCH_BYTES of them at once; a larger blob is read alone, as by get
READ_BATCH_DIGESTS = 256
READ_BATCH_BYTES = 8 * 1024 * 1024
_SIZES = select(Blob.digest, Blob.size).where(Blob.digest.in_(bindparam("digests", expanding=True)))
_READ_MANY = (
    select(Blob.digest, Blob.data, BlobChunk.data.label("chunk"))
    .outerjoin(BlobChunk, BlobChunk.digest == Blob.digest)
    .where(Blob.digest.in_(bindparam("digests", expanding=True)))
    .order_by(Blob.digest, BlobChunk.seq)
)


class DatabaseBlobStore:
    """Blobs in the ``blobs`` and ``blob_chunks`` tables of a PostgreSQL database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be > 0")
        self._sessions = sessions
        self._read_sessions = read_sessions
        self._chunk_bytes = chunk_bytes

    def describe(self) -> str:
        url = self._sessions.kw["bind"].url
        return f"database tables blobs/blob_chunks in {url.render_as_string(hide_password=True)}"

    def check(self) -> None:
        try:
            with self._read_sessions() as session:
                session.execute(select(Blob.digest).limit(1))
        except SQLAlchemyError as exc:
            raise OSError(f"blob tables unreadable: {type(exc).__name__}") from exc

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = check_digest(digest or sha256_hex(data))
        with self._sessions.begin() as session:
            _durable_commit(session)
            store_in(session, data, digest, chunk_bytes=self._chunk_bytes)
        return digest

    def get(self, digest: str) -> bytes:
        with self.reader() as read:
            return read(digest)

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        with self._read_sessions() as session:
            yield from read_each(session, digests)

    def read_session(self) -> Session:
        """A read-only session of this store's database (for :func:`read_each`)."""
        return self._read_sessions()

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        """A function that reads blobs, all of them in one read-only session."""
        with self._read_sessions() as session:
            yield lambda digest: _read(session, digest)

    def exists(self, digest: str) -> bool:
        check_digest(digest)
        with self._read_sessions() as session:
            return session.scalar(select(Blob.digest).where(Blob.digest == digest)) is not None

    def scan(self) -> Iterator[BlobEntry]:
        return blob_index.scan_index(self._read_sessions, "blobs/{digest}")

    def remove(self, digest: str) -> None:
        check_digest(digest)
        with self._sessions.begin() as session:
            session.execute(delete(BlobChunk).where(BlobChunk.digest == digest))
            blob_index.forget(session, digest)

    def remove_stale(self, item: BlobEntry, older_than: float) -> bool:
        if item.digest is None:
            return False  # every row here is a whole blob: there are no leftovers
        with self._sessions.begin() as session:
            if not blob_index.lock_if_stale(session, item.digest, older_than):
                return False
            session.execute(delete(BlobChunk).where(BlobChunk.digest == item.digest))
            blob_index.forget(session, item.digest)
        return True


def store_in(session: Session, data: bytes, digest: str, *, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Add the blob's rows to ``session``'s transaction: stored when, and only if, it
    commits (so a row that refers to the blob may commit in the same transaction)."""
    check_digest(digest)
    # bytes that fit one chunk go into the blob's own row: one statement
    inline = data if len(data) <= chunk_bytes else None
    # the new blob (the usual case) first: one statement fewer than refresh-then-register
    if not blob_index.register(session, digest, len(data), inline):
        if blob_index.refresh(session, digest):
            return  # stored before: its bytes committed with its row
        # the collector removed it between our two statements (refresh waited for its
        # lock, then found no row): store it anew
        if not blob_index.register(session, digest, len(data), inline):
            blob_index.refresh(session, digest)  # a concurrent store committed it
            return
    if inline is not None:
        return
    view = memoryview(data)
    for seq, start in enumerate(range(0, len(data), chunk_bytes)):
        chunk = bytes(view[start : start + chunk_bytes])
        session.execute(insert(BlobChunk).values(digest=digest, seq=seq, data=chunk))


def _read(session: Session, digest: str) -> bytes:
    check_digest(digest)
    # PostgreSQL streams large blobs a few chunks at a time (server-side cursor)
    stream = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(
        _READ, {"digest": digest}, execution_options={"yield_per": 4} if stream else {}
    )
    first = next(rows, None)
    if first is None:
        raise BlobNotFound(digest)
    size = first.size
    if first.data is not None:  # in its row (one chunk at most): no chunk rows
        data: bytes = first.data
    else:
        # chunks; an empty blob of an older database had none: its one row carries None
        data = b"".join([first.chunk or b"", *(row.chunk for row in rows)])
    if len(data) != size:  # cannot happen with the transactional writes; say so if it does
        raise BlobNotFound(f"{digest}: {len(data)} of {size} bytes stored")
    return data


def read_each(
    session: Session,
    digests: Sequence[str],
    elsewhere: Callable[[str], bytes] | None = None,
) -> Iterator[bytes]:
    """Each blob's bytes in ``digests``' order, small ones read in batches (see
    :data:`READ_BATCH_DIGESTS`); a digest without a row is ``elsewhere(digest)`` (another
    store's), or :class:`BlobNotFound`."""
    for start in range(0, len(digests), READ_BATCH_DIGESTS):
        window = digests[start : start + READ_BATCH_DIGESTS]
        for digest in window:
            check_digest(digest)
        rows = session.execute(_SIZES, {"digests": sorted(set(window))})
        sizes: dict[str, int] = dict(rows.all())
        batch: dict[str, bytes] = {}
        for index, digest in enumerate(window):
            size = sizes.get(digest)
            if size is None:
                if elsewhere is None:
                    raise BlobNotFound(digest)
                yield elsewhere(digest)
            elif size > READ_BATCH_BYTES:
                yield _read(session, digest)
            else:
                if digest not in batch:
                    batch = _read_batch(session, window[index:], sizes)
                yield batch[digest]


def _read_batch(session: Session, ahead: Sequence[str], sizes: dict[str, int]) -> dict[str, bytes]:
    """The bytes of the small row blobs at the front of ``ahead``, up to
    :data:`READ_BATCH_BYTES` of them (at least the first), in one statement."""
    wanted: list[str] = []
    total = 0
    for digest in ahead:
        size = sizes.get(digest)
        if size is None or size > READ_BATCH_BYTES or digest in wanted:
            continue
        if wanted and total + size > READ_BATCH_BYTES:
            break
        wanted.append(digest)
        total += size
    chunks: dict[str, list[bytes]] = {digest: [] for digest in wanted}
    for digest, data, chunk in session.execute(_READ_MANY, {"digests": sorted(wanted)}):
        # bytes in the row (then no chunk joined), or a chunk (None: an empty blob)
        chunks[digest].append(data if data is not None else chunk or b"")
    batch = {digest: b"".join(parts) for digest, parts in chunks.items()}
    for digest, data in batch.items():
        if len(data) != sizes[digest]:  # as _read: cannot happen with transactional writes
            raise BlobNotFound(f"{digest}: {len(data)} of {sizes[digest]} bytes stored")
    return batch


def _durable_commit(session: Session) -> None:
    """Make this transaction's commit wait for its WAL flush, whatever the server's default."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = on"))
