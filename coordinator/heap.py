"""The serving process's garbage collector: full collections walk what is new, not the
objects that stay (the startup heap, the held long-polls).

A full collection walks every tracked object that is not frozen. In a sampled federation
nearly every participant holds a long-poll for as long as it sits rounds out: ~118 tracked
objects each (19 coroutine frames of the ASGI stack down to the notifier's event, their
closures' cells, bound methods, the scope, uvicorn's protocol and cycle, an asyncio task
and timer; bench/RESULTS.md, held-polls-gc). At 10,000 held polls a full collection took
1.1-1.2 s of CPU, and the 25 % growth rule, which ``gc.set_threshold`` does not change,
ran one every ~30 s while participants joined: whether one fell inside a round decided
whether that round cost ~1 s more.

:class:`FreezeSurvivors` (installed by ``fedrec serve``) freezes what each full collection
leaves: those objects were just found reachable, and the next full collections walk only
what survived since. A frozen object is never collected, so whatever becomes cyclic garbage
after being frozen (an answered poll whose objects form a cycle) would stay; the first full
collection at least ``thaw_seconds`` after the last thaw therefore unfreezes everything
first and walks it all, which frees such garbage and bounds how long it is kept.
Objects that die unfrozen, i.e. nearly all a request allocates, are collected as before.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["THAW_SECONDS", "FreezeSurvivors", "freeze_startup_heap", "prepare_serving_heap"]

# one walk of the whole heap (~1.2 s of CPU at 10,000 held polls) every 10 minutes at most
# instead of every ~30 s: what became garbage after being frozen is kept at most that long
# (plus the wait for the next full collection)
THAW_SECONDS = 600.0
_OLDEST = 2  # gc's oldest generation: only its collections are full


def freeze_startup_heap() -> int:
    """Put every object alive now (the loaded modules, the app, its schemas and settings:
    ~170,000-195,000 of them) out of the garbage collector's reach; return how many.

    They never become garbage, yet every full collection walked them. Only for a serving
    process: in one that builds many apps (the tests), cyclic garbage frozen here would
    never be freed."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FreezeSurvivors:
    """A ``gc.callbacks`` entry: freeze the survivors of each full collection; unfreeze
    everything at the start of the first full collection ``thaw_seconds`` after the last
    thaw (or the installation), so that collection walks and frees it all."""

    def __init__(
        self, thaw_seconds: float = THAW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.thaw_seconds = thaw_seconds
        self._clock = clock
        self._last_thaw = clock()
        self._thawing = False
        self.freezes = 0  # full collections whose survivors were frozen
        self.thaws = 0  # full collections that walked the whole heap
        # objects the last thawing collection found unreachable (garbage kept frozen till then)
        self.last_thaw_collected: int | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # called by the collector around each collection, in whichever thread allocated;
        # freeze and unfreeze only move the generations' lists (no allocation, no collection)
        if info["generation"] != _OLDEST:
            return
        if phase == "start":
            if self._clock() - self._last_thaw >= self.thaw_seconds:
                gc.unfreeze()  # into the oldest generation, which this collection walks
                self._thawing = True
            return
        if self._thawing:
            self._thawing = False
            self._last_thaw = self._clock()
            self.thaws += 1
            self.last_thaw_collected = int(info["collected"])
        gc.freeze()
        self.freezes += 1


def prepare_serving_heap(thaw_seconds: float = THAW_SECONDS) -> FreezeSurvivors:
    """What ``fedrec serve`` does once its app is built, in each serving process: freeze the
    startup heap and install :class:`FreezeSurvivors` (returned; remove it from
    ``gc.callbacks`` to undo)."""
    freeze_startup_heap()
    policy = FreezeSurvivors(thaw_seconds)
    gc.callbacks.append(policy)
    return policy
