"""A bounded, short-lived per-process cache of authenticated bearer tokens.

Every request authenticates; without a cache that is a keyed hash plus a participant
lookup (an ORM read on a pooled connection) per request. This cache maps a token's keyed
hash (never the token) to what the lookup resolved, and stays correct across processes
sharing one database:

* an entry lives at most ``ttl_seconds`` (the caller also keeps the token's own expiry
  or grace end in the value and checks it);
* every transaction that revokes, re-enrols or re-tokens a participant bumps the
  database's ``auth_generation`` counter (in the same transaction); each process re-reads
  it at most every ``check_seconds`` and empties its cache when it moved. A revocation
  committed by any process is honoured here within ``check_seconds``; by the process that
  committed it, at once (:meth:`TokenCache.invalidate`);
* an entry is stored only under the generation read before its lookup began, so a lookup
  that raced a revocation is never cached past it;
* only successes are cached: an unknown, revoked or expired token reaches the database
  (and the audit log) every time;
* one thread re-reads the generation at a time: while its read is in flight the others go
  on with the generation they have (their lookups read the database, since :meth:`get`
  serves nothing while the check is due, and what they store under a generation the read
  then finds moved is dropped). Under load, when a read took longer than
  ``check_seconds``, every authentication re-read it: two queries instead of one.

The security argument is in docs/security.md ("Token cache").
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TokenCache"]

V = TypeVar("V")

DEFAULT_TTL_SECONDS = 5.0
DEFAULT_CHECK_SECONDS = 0.5
DEFAULT_MAX_ENTRIES = 100_000


class TokenCache(Generic[V]):
    """Token digest -> resolved value, bounded in size and age (thread-safe)."""

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.check_seconds = check_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # digest -> (value, monotonic deadline)
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()
        self._generation: int | None = None
        self._checked_at = -float("inf")
        self._reading = False  # a thread is re-reading the generation

    def generation(self, read: Callable[[], int | None]) -> int | None:
        """The database's generation, re-read when older than ``check_seconds`` (a change
        empties the cache). None: caching is off (no counter in the database)."""
        now = self._clock()
        with self._lock:
            if now - self._checked_at < self.check_seconds or self._reading:
                # fresh, or another thread is re-reading it: one read in flight per process
                # (not one per request: under load every authentication read it again)
                return self._generation
            self._reading = True
        try:
            current = read()  # outside the lock: a database read
        finally:
            with self._lock:
                self._reading = False
        with self._lock:
            if current is not None and self._generation is not None:
                # the counter only grows: a slower, older read never moves it back
                current = max(current, self._generation)
            if current != self._generation:
                self._entries.clear()
                self._generation = current
            self._checked_at = max(self._checked_at, now)
            return self._generation

    def get(self, digest: str) -> V | None:
        """The cached value, if fresh; never reads the database (callers on the event
        loop use it; :meth:`generation` is the read)."""
        now = self._clock()
        with self._lock:
            if self._generation is None or now - self._checked_at >= self.check_seconds:
                return None  # the generation is due for a re-read: the caller looks up
            entry = self._entries.get(digest)
            if entry is None:
                return None
            value, deadline = entry
            if now >= deadline:
                del self._entries[digest]
                return None
            return value

    def put(self, digest: str, value: V, generation: int | None) -> None:
        """Remember a successful lookup that began under ``generation``."""
        with self._lock:
            if generation is None or generation != self._generation:
                return  # credentials changed since the lookup began: not cacheable
            self._entries[digest] = (value, self._clock() + self.ttl_seconds)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Forget everything and re-read the generation first (this process just changed
        a participant's credentials): lookups in flight are not stored."""
        with self._lock:
            self._entries.clear()
            self._generation = None
            self._checked_at = -float("inf")

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
