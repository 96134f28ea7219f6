"""In-process token buckets, and the client address behind a trusted proxy.

Counters live in this process's memory: with ``fedrec serve --workers N`` or R replicas a
client can reach N x R times each limit (docs/security.md). Shared counters would need a
store every process reaches on every request; these bound one process's own load.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from starlette.types import Scope

__all__ = ["TokenBuckets", "client_address"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key: ``burst`` requests at once, refilled at ``rate`` per second.

    At most ``max_keys`` buckets are kept (least recently used dropped first), so a caller
    rotating addresses or tokens cannot grow memory without bound.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, key: Hashable) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def retry_after(self, key: Hashable) -> int:
        """Whole seconds until ``key`` may send again; 0: it may now."""
        if not self.enabled:
            return 0
        bucket = self._bucket(key)
        if bucket.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def take(self, key: Hashable) -> int:
        """Spend one request of ``key``: 0 if allowed, else seconds to wait (nothing spent)."""
        wait = self.retry_after(key)
        if wait == 0 and self.enabled:
            self._buckets[key].tokens -= 1
        return wait


def client_address(scope: Scope, trusted_proxies: Sequence[str]) -> str:
    """The caller's address: the TCP peer, or, when the peer is a trusted proxy, the
    right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return str(peer)
    forwarded = b",".join(
        value for name, value in scope.get("headers") or [] if name == b"x-forwarded-for"
    )
    for hop in reversed(forwarded.decode("latin-1").split(",")):
        hop = hop.strip()
        if hop and not _is_trusted(hop, trusted_proxies):
            return hop
    return str(peer)


def _is_trusted(address: str, trusted_proxies: Sequence[str]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return address in trusted_proxies
    return any(parsed in ip_network(proxy, strict=False) for proxy in trusted_proxies)
