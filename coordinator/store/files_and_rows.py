"""The local blob store with small blobs kept as database rows.

Files cost two fsyncs each (the file and its folder) on top of the COMMIT of the row
that refers to them. A small blob (an update or model of a small federation) written
as rows of that same transaction (:func:`coordinator.store.database_blobs.store_in`) is
durable with its one COMMIT, and never orphaned by a crash between the two. Large blobs
stay files: a database transaction would hold the write lock while it copies them.

Reads look at the files first, then at the rows; the collector scans and removes both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from coordinator.store.blobs import BlobEntry, BlobNotFound
from coordinator.store.database_blobs import DatabaseBlobStore, read_each
from coordinator.store.local_blobs import LocalBlobStore

__all__ = ["FilesAndRows"]

ROW_LOCATION = "rows:{digest}"  # a scanned blob that lives in the database


class FilesAndRows:
    """A :class:`~coordinator.store.blobs.BlobStore`: ``put`` writes files; rows are
    written by the transactions that refer to them."""

    def __init__(self, files: LocalBlobStore, rows: DatabaseBlobStore) -> None:
        self.files = files
        self.rows = rows

    def put(self, data: bytes, digest: str | None = None) -> str:
        return self.files.put(data, digest)

    def get(self, digest: str) -> bytes:
        try:
            return self.files.get(digest)
        except BlobNotFound:
            return self.rows.get(digest)

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        # the rows first, in batches (small blobs: a round of per-user updates lives
        # there), then the files for the rest; a blob in both has the same bytes
        with self.rows.read_session() as session:
            yield from read_each(session, digests, elsewhere=self.files.get)

    def exists(self, digest: str) -> bool:
        return self.files.exists(digest) or self.rows.exists(digest)

    def check(self) -> None:
        self.files.check()
        self.rows.check()

    def remove(self, digest: str) -> None:
        self.files.remove(digest)
        self.rows.remove(digest)

    def scan(self) -> Iterator[BlobEntry]:
        yield from self.files.scan()
        for entry in self.rows.scan():
            yield replace(entry, location=ROW_LOCATION.format(digest=entry.digest))

    def remove_stale(self, item: BlobEntry, older_than: float) -> bool:
        if item.location.startswith("rows:"):
            return self.rows.remove_stale(item, older_than)
        return self.files.remove_stale(item, older_than)

    def describe(self) -> str:
        return f"{self.files.describe()}, small blobs in the database"
