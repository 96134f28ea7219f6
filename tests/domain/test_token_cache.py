"""The per-process token cache: bounded in age and size, emptied when the database's
auth generation moves, never storing a lookup that raced a credential change."""

from __future__ import annotations

import pytest

from coordinator.domain.token_cache import TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache(clock: Clock, **kwargs: float) -> TokenCache[str]:
    return TokenCache(clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_fresh_entry_is_served_until_its_ttl() -> None:
    clock = Clock()
    cache = _cache(clock, ttl_seconds=5.0, check_seconds=10.0)
    generation = cache.generation(lambda: 7)
    cache.put("d", "principal", generation)
    assert cache.get("d") == "principal"
    clock.now += 4.9
    assert cache.get("d") == "principal"
    clock.now += 0.2
    assert cache.get("d") is None
    assert len(cache) == 0


def test_a_moved_generation_empties_the_cache() -> None:
    clock = Clock()
    cache = _cache(clock, ttl_seconds=60.0, check_seconds=0.5)
    database = {"generation": 3}
    generation = cache.generation(lambda: database["generation"])
    cache.put("d", "principal", generation)
    database["generation"] = 4  # another process revoked somebody
    clock.now += 0.4
    # not re-read yet: the check interval bounds how late a revocation is honoured
    assert cache.generation(lambda: database["generation"]) == 3
    assert cache.get("d") == "principal"
    clock.now += 0.2
    # due for a re-read: get() alone never serves past it
    assert cache.get("d") is None
    assert cache.generation(lambda: database["generation"]) == 4
    assert cache.get("d") is None


def test_a_lookup_that_raced_a_change_is_not_stored() -> None:
    clock = Clock()
    cache = _cache(clock)
    began_under = cache.generation(lambda: 1)
    cache.invalidate()  # this process committed a revocation meanwhile
    cache.put("d", "stale", began_under)
    assert cache.generation(lambda: 2) == 2
    assert cache.get("d") is None
    # and a lookup under an older generation than the current one is refused too
    cache.put("d", "stale", began_under)
    assert cache.get("d") is None


def test_an_older_read_never_moves_the_generation_back() -> None:
    clock = Clock()
    cache = _cache(clock, check_seconds=0.0)
    assert cache.generation(lambda: 5) == 5
    assert cache.generation(lambda: 4) == 5


def test_no_counter_no_caching() -> None:
    clock = Clock()
    cache = _cache(clock)
    generation = cache.generation(lambda: None)
    cache.put("d", "principal", generation)
    assert cache.get("d") is None


def test_bounded_in_size_oldest_first() -> None:
    clock = Clock()
    cache = _cache(clock, max_entries=2)
    generation = cache.generation(lambda: 0)
    for digest in ("a", "b", "c"):
        cache.put(digest, digest, generation)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "b", "c")


def test_one_generation_read_in_flight_at_a_time() -> None:
    """Under load a read can outlast the check interval; then every authentication re-read
    the generation (a second query each). While one thread reads, the others go on with
    the generation they have, and the cache serves nothing until that read is done."""
    clock = Clock()
    cache = _cache(clock, ttl_seconds=60.0, check_seconds=0.5)
    assert cache.generation(lambda: 3) == 3
    cache.put("d", "principal", 3)
    clock.now += 1.0  # due for a re-read
    nested: list[int | None] = []
    reads: list[str] = []

    def inner_read() -> int:
        reads.append("inner")
        return 99

    def slow_read() -> int:
        reads.append("outer")
        # another request arrives while this read is in flight: no second read
        nested.append(cache.generation(inner_read))
        assert cache.get("d") is None  # the check is due: nothing served meanwhile
        return 4

    assert cache.generation(slow_read) == 4
    assert reads == ["outer"]
    assert nested == [3]
    # a lookup stored under the generation the nested caller had is dropped: it moved
    cache.put("d", "stale", nested[0])
    assert cache.get("d") is None
    # and once the read is done, the next due check reads again
    clock.now += 1.0
    assert cache.generation(lambda: 5) == 5


def test_a_failed_read_lets_the_next_caller_read() -> None:
    clock = Clock()
    cache = _cache(clock, check_seconds=0.5)

    def broken() -> int:
        raise RuntimeError("database unreachable")

    with pytest.raises(RuntimeError):
        cache.generation(broken)
    assert cache.generation(lambda: 8) == 8
