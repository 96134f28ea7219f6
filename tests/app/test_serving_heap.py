"""The serving process's collector policy (coordinator/heap.py): ``fedrec serve`` freezes its
startup heap and, after each full collection, what survived it (the held long-polls), so
full collections walk only what is new; garbage created per request is still collected, and
what became garbage after being frozen is freed by the next thaw.

Each scenario runs in a child process: freezing this one would keep the tests' cyclic
garbage, and the policy would stay installed for every later test.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404 # the test's own interpreter, fixed arguments
import sys
import textwrap
from pathlib import Path

import pytest

from fedrec.cli import main


def _child(code: str, *, prelude: str = "", env: dict[str, str] | None = None) -> str:
    done = subprocess.run(  # nosec B603
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_freezing_the_startup_heap_moves_the_loaded_modules_out_of_the_collectors_walk() -> None:
    out = _child(
        """
        import gc
        import coordinator.app  # what a serving process has loaded
        from coordinator.heap import freeze_startup_heap
        assert gc.get_freeze_count() == 0
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 10_000, frozen
        print(frozen)
        """
    )
    assert int(out) > 10_000


# objects that stay (as held long-polls do), cycles among them, as coroutine frames make
_HELD = """
import gc, weakref
from coordinator.heap import FreezeSurvivors

class Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it

now = [0.0]
policy = FreezeSurvivors(thaw_seconds=600, clock=lambda: now[0])
gc.collect()
gc.callbacks.append(policy)
"""


def test_a_full_collection_freezes_its_survivors_and_the_next_one_walks_only_what_is_new() -> None:
    _child(
        prelude=_HELD,
        code="""
        held = [Node() for _ in range(5_000)]
        before = gc.get_freeze_count()
        gc.collect()
        assert policy.freezes == 1 and policy.thaws == 0
        assert gc.get_freeze_count() >= before + 5_000
        # the held objects are out of the walk: the oldest generation is (nearly) empty
        assert len(gc.get_objects(2)) < 1_000, len(gc.get_objects(2))
        """,
    )


def test_cycles_created_per_request_are_still_collected() -> None:
    _child(
        prelude=_HELD,
        code="""
        held = [Node() for _ in range(1_000)]
        gc.collect()  # frozen from now on
        # a request's garbage after the freeze: cycles, never frozen
        requests = [weakref.ref(Node()) for _ in range(1_000)]
        gc.collect(1)  # the young generations only
        assert not any(r() is not None for r in requests), "young cycles not collected"
        survivor = Node(); kept = weakref.ref(survivor)
        gc.collect(1)
        del survivor  # died after surviving young collections, before the next full one
        gc.collect()
        assert kept() is None, "an unfrozen cycle in the oldest generation was not collected"
        assert len(held) == 1_000
        """,
    )


def test_what_became_garbage_after_being_frozen_is_freed_by_the_next_thaw() -> None:
    _child(
        prelude=_HELD,
        code="""
        answered = Node(); gone = weakref.ref(answered)
        gc.collect()  # frozen: it was alive (a held poll)
        del answered  # the poll was answered: its cycle is garbage, but frozen
        gc.collect()
        assert gone() is not None, "a frozen object was collected without a thaw"
        assert policy.thaws == 0
        now[0] = 599.0
        gc.collect()
        assert gone() is not None and policy.thaws == 0
        now[0] = 600.0  # the thaw is due: this full collection walks everything
        gc.collect()
        assert gone() is None, "the thaw did not free the frozen garbage"
        assert policy.thaws == 1 and policy.last_thaw_collected >= 1
        # and it froze the survivors again: the startup heap and what is still alive
        assert gc.get_freeze_count() > 0 and len(gc.get_objects(2)) < 1_000
        """,
    )


def test_young_collections_leave_the_freeze_alone() -> None:
    _child(
        prelude=_HELD,
        code="""
        before = gc.get_freeze_count()
        held = [Node() for _ in range(2_000)]
        gc.collect(0); gc.collect(1)
        assert policy.freezes == 0 and gc.get_freeze_count() == before
        """,
    )


def test_the_workers_factory_installs_the_policy(tmp_path: Path) -> None:
    out = _child(
        """
        import gc
        from coordinator.app import create_served_app
        from coordinator.heap import FreezeSurvivors
        create_served_app()
        installed = [c for c in gc.callbacks if isinstance(c, FreezeSurvivors)]
        assert len(installed) == 1, gc.callbacks
        assert gc.get_freeze_count() > 10_000
        print(installed[0].thaw_seconds)
        """,
        env={
            "FEDREC_DATA_DIR": str(tmp_path / "data"),
            "FEDREC_ADMIN_TOKEN": "fra_" + "a" * 43,
            "FEDREC_SECRET_KEY": "s" * 43,
        },
    )
    assert float(out) == 600.0


def test_serve_prepares_the_heap_in_its_own_process_not_for_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    import coordinator.heap

    served: list[object] = []
    prepared: list[int] = []
    # recorded, not run: this is the test process (see the module docstring)
    monkeypatch.setattr(coordinator.heap, "prepare_serving_heap", lambda: prepared.append(1))
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    exported = ("HOST", "PORT", "DATA_DIR", "LOG_FORMAT")
    for name in ("PROMETHEUS_MULTIPROC_DIR", *(f"FEDREC_{option}" for option in exported)):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    data = tmp_path / "data"
    assert main(["serve", "--data-dir", str(data)]) == 0
    assert prepared == [1]  # before uvicorn serves the app it built
    assert main(["serve", "--workers", "2", "--data-dir", str(data)]) == 0
    # each worker builds its app with create_served_app, which prepares its own heap
    assert prepared == [1]
    assert served[-1] == "coordinator.app:create_served_app"
