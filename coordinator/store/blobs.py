"""The blob store interface: content-addressed bytes of model weights, server states and updates.

Three backends implement it, chosen by ``FEDREC_BLOB_STORE`` in the composition root
(``coordinator.app``):

* ``local`` (:mod:`coordinator.store.local_blobs`): files under the data folder, the default;
* ``postgres`` (:mod:`coordinator.store.database_blobs`): chunked rows of the coordinator's
  own PostgreSQL database, so replicas on different hosts share nothing but the database;
* ``s3`` (:mod:`coordinator.store.s3_blobs`): objects in an S3 bucket, indexed by rows of
  the database (:mod:`coordinator.store.blob_index`).

Every backend keeps the same promises, which the upload and aggregation transactions rely on:

* a blob's name is the sha256 of its bytes;
* once :meth:`BlobStore.put` returns, the bytes survive a crash of this process and of the
  storage host (fsync, a committed transaction, an acknowledged S3 PUT), so a row that
  points at them may commit;
* storing bytes that already exist refreshes their time, and :meth:`BlobStore.remove_stale`
  removes a blob only if nobody stored it again since ``older_than``: a collector never takes
  a blob that a request about to commit a reference has just stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BlobEntry", "BlobNotFound", "BlobStore", "check_digest", "is_digest", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def check_digest(digest: str) -> str:
    """``digest`` if it is a lowercase sha256 hex digest; ValueError otherwise (never a path)."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


class BlobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class BlobEntry:
    """What a scan of the store sees: a blob (``digest`` set) or a leftover of a cut-short write.

    ``location`` is where the backend keeps it (a file path, a database key, an object key);
    ``mtime`` (seconds since the epoch) is when it was last stored.
    """

    location: str
    digest: str | None
    size: int
    mtime: float


class BlobStore(Protocol):
    """Content-addressed, durable blob storage (see the module docstring for the promises)."""

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` durably and return its sha256 (``digest``, if given, must be it)."""
        ...

    def get(self, digest: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFound` if there is none."""
        ...

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        """Each blob's bytes in turn (as ``get``, with what a read sets up, such as a
        database session, set up once for all of them); a large blob is in memory alone (the
        row stores read small ones a few MB at a time)."""
        ...

    def exists(self, digest: str) -> bool: ...

    def check(self) -> None:
        """Raise ``OSError`` unless blobs can be stored here now (``/readyz``)."""
        ...

    def remove(self, digest: str) -> None:
        """Delete one blob now (no grace period): only for bytes no row can refer to."""
        ...

    def scan(self) -> Iterator[BlobEntry]:
        """Every stored blob and leftover of a cut-short write, for the collector."""
        ...

    def remove_stale(self, item: BlobEntry, older_than: float) -> bool:
        """Remove ``item`` unless it was stored (again) at or after ``older_than``; whether
        it was removed."""
        ...

    def describe(self) -> str:
        """Where the blobs live, for operators (no secrets)."""
        ...
