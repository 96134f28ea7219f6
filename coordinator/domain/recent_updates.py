"""Bytes of the updates this process accepted, kept until their round aggregates.

An update's bytes are durable (a row or a file) before its 201; the aggregation job then
read every one of them back from the blob store, although the process that accepted them
still had them a few milliseconds earlier. Here the upload hands its bytes over, by
sha256, and the job reads the ones it finds here from memory and the others (accepted by
another process, evicted, or from before a restart) from the store, in the same order.

Content-addressed, so a digest names the same bytes wherever they came from; this never
decides *which* updates a round aggregates (the claim reads their digests from the
database), only where their bytes are read. Bounded: blobs above ``max_blob_bytes`` are
not kept, and the oldest go first past ``max_bytes`` in total.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

from coordinator.store.blobs import BlobStore

__all__ = ["RecentUpdates"]

MAX_BYTES = 64 * 1024 * 1024
MAX_BLOB_BYTES = 4 * 1024 * 1024


class RecentUpdates:
    """Per process: accepted updates' bytes by sha256, bounded in total size."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_blob_bytes = min(max_blob_bytes, max_bytes)
        self._lock = threading.Lock()
        self._bytes: OrderedDict[str, bytes] = OrderedDict()
        self._held = 0

    def put(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (whose sha256 is ``digest``) unless it is too large."""
        if len(data) > self.max_blob_bytes:
            return
        with self._lock:
            if digest in self._bytes:
                self._bytes.move_to_end(digest)
                return
            self._bytes[digest] = data
            self._held += len(data)
            while self._held > self.max_bytes:
                _, dropped = self._bytes.popitem(last=False)
                self._held -= len(dropped)

    def forget(self, digests: Iterable[str]) -> None:
        """Drop these (their round aggregated or failed)."""
        with self._lock:
            for digest in digests:
                dropped = self._bytes.pop(digest, None)
                if dropped is not None:
                    self._held -= len(dropped)

    def held_bytes(self) -> int:
        with self._lock:
            return self._held

    def read_each(self, blobs: BlobStore, digests: Sequence[str]) -> Iterator[bytes]:
        """Each blob's bytes in ``digests``' order: from memory when kept here, else from
        ``blobs`` (one ``get_each`` for all of those)."""
        with self._lock:
            kept = {d: self._bytes[d] for d in digests if d in self._bytes}
        missing = [d for d in digests if d not in kept]
        stored = blobs.get_each(missing)
        try:
            for digest in digests:
                data = kept.get(digest)  # not pop: two participants may send the same bytes
                yield data if data is not None else next(stored)
        finally:
            close = getattr(stored, "close", None)  # a generator's session, if it began one
            if close is not None:
                close()
