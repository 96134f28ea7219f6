"""The local blob store (``FEDREC_BLOB_STORE=local``, the default): files in a folder.

A blob is written to a temporary file in its final folder, fsynced, renamed into
place and the folder fsynced, so once ``put`` returns the bytes survive a crash and
no reader ever sees a half-written blob.

Blobs no database row points at (an upload refused after its bytes were stored, a
crash between the write and the commit, update bytes of finished rounds) are removed
by :mod:`coordinator.domain.garbage`. Storing a blob that already exists refreshes its
modification time, so a collector that only removes files older than a grace period
never takes a blob an in-flight request is about to reference.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from coordinator.store.blobs import BlobEntry, BlobNotFound, check_digest, is_digest, sha256_hex

__all__ = ["LocalBlobStore"]

TEMP_PREFIX = ".tmp-"  # a write in progress, or left by a crash mid-write
TRASH_PREFIX = ".trash-"  # a blob being removed by the collector


class LocalBlobStore:
    """Blobs under ``root/<sha[:2]>/<sha>``; the name is the sha256 of the content.

    Replicas on several hosts need the folder shared (NFS and the like); the ``postgres``
    and ``s3`` backends need no shared filesystem.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def check(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"blob folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"blob folder {self.root} is not writable")

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local folder {self.root.resolve()}"

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` durably and return its sha256."""
        digest = digest or sha256_hex(data)
        target = self.path(digest)
        try:
            if target.stat().st_size == len(data):
                os.utime(target)  # "in use now": see remove_stale
                return digest
        except FileNotFoundError:
            pass  # absent, or taken by the collector a moment ago: write it
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)  # the new fan-out folder's entry must be durable too
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        for digest in digests:
            yield self.get(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def scan(self) -> Iterator[BlobEntry]:
        """Every blob and leftover temporary file, one fan-out folder at a time."""
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for entry in os.scandir(folder):
                if not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we looked
                name = entry.name
                digest = None if name.startswith((TEMP_PREFIX, TRASH_PREFIX)) else name
                if digest is not None and not is_digest(digest):
                    continue  # not ours: leave it alone
                yield BlobEntry(entry.path, digest, stat.st_size, stat.st_mtime)

    def remove_stale(self, item: BlobEntry, older_than: float) -> bool:
        """Remove ``item`` unless it was written or re-stored at or after ``older_than``.

        The blob is first renamed aside, then its time is checked again: a concurrent
        :meth:`put` of the same bytes either refreshed the time before the rename (the
        blob is put back) or found it gone and wrote it anew. Returns whether it was
        removed.
        """
        path = Path(item.location)
        if item.digest is None:  # temporary or half-removed file: nothing refers to it
            try:
                if path.stat().st_mtime >= older_than:
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
            return True
        aside = path.with_name(TRASH_PREFIX + path.name)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if aside.stat().st_mtime >= older_than:
            os.replace(aside, path)  # re-stored meanwhile: keep it
            return False
        aside.unlink()
        return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
