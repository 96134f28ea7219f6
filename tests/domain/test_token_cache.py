"""The per-process token cache: bounded in age and size, emptied when the database's
auth generation moves, never storing a lookup that raced a credential change."""

from __future__ import annotations

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
