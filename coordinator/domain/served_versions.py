"""What a weights download serves, cached per process: a recorded version never changes.

Every participant downloads its round's base version each round; without a cache each
download loaded the federation and the version row (its contributor list JSON-decoded)
and read the blob from the store. A version's record (hashes per encoding, manifest,
signature) is written once, in the transaction that creates it, and its weights are
never removed (domain/garbage.py), so both are cached here: the record per (federation,
number), the bytes per sha256 (content-addressed), the bytes bounded in total size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from coordinator.domain.errors import ValidationFailed

__all__ = ["ServedVersion", "ServedVersions"]

MAX_RECORDS = 4096
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ServedVersion:
    """The immutable part of a version a download needs."""

    version: int
    blobs: Mapping[str, tuple[str, int]]  # encoding -> (sha256, size)
    default_encoding: str
    manifest: str | None
    signature: str | None

    def blob(self, encoding: str) -> tuple[str, int]:
        """(sha256, size) in ``encoding``; 422 when the version is not served in it."""
        found = self.blobs.get(encoding)
        if found is None:
            offered = list(self.blobs)
            raise ValidationFailed(
                f"version {self.version} is served in {', '.join(offered)}, not "
                f"{encoding!r}: the federation's transport.encoding decides",
                field="encoding",
                offered=offered,
            )
        return found


class ServedVersions:
    """Per process: version records by (federation, number) and weights by sha256."""

    def __init__(self, *, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, int], ServedVersion] = OrderedDict()
        self._bytes: OrderedDict[str, bytes] = OrderedDict()
        self._held = 0

    def record(self, federation_id: str, number: int) -> ServedVersion | None:
        with self._lock:
            found = self._records.get((federation_id, number))
            if found is not None:
                self._records.move_to_end((federation_id, number))
            return found

    def remember(self, federation_id: str, served: ServedVersion) -> None:
        with self._lock:
            self._records[(federation_id, served.version)] = served
            while len(self._records) > self.max_records:
                self._records.popitem(last=False)

    def cached_weights(self, sha256: str) -> bytes | None:
        """The blob's bytes if this process holds them (no I/O: safe on the event loop)."""
        with self._lock:
            data = self._bytes.get(sha256)
            if data is not None:
                self._bytes.move_to_end(sha256)
            return data

    def weights(self, sha256: str, read: Callable[[str], bytes]) -> bytes:
        """The blob's bytes, from the cache or ``read`` (then kept if they fit)."""
        with self._lock:
            data = self._bytes.get(sha256)
            if data is not None:
                self._bytes.move_to_end(sha256)
                return data
        data = read(sha256)  # outside the lock: a blob store read
        self.keep(sha256, data)
        return data

    def keep(self, sha256: str, data: bytes) -> None:
        """Hold ``data`` (the blob ``sha256``'s bytes) if it fits: at most a quarter of
        the budget each, least recently used out first."""
        if len(data) > self.max_bytes // 4:
            return
        with self._lock:
            if sha256 not in self._bytes:
                self._bytes[sha256] = data
                self._held += len(data)
            while self._held > self.max_bytes:
                _, dropped = self._bytes.popitem(last=False)
                self._held -= len(dropped)
