"""``fedrec serve`` freezes its startup heap (coordinator.app.freeze_startup_heap): the
objects alive once the app is built are out of every later full collection's walk.

Run in a child process: freezing this one would keep the tests' cyclic garbage for ever.
"""

from __future__ import annotations

import subprocess  # nosec B404 # the test's own interpreter, fixed arguments
import sys

CHILD = """
import gc
from coordinator.app import freeze_startup_heap
assert gc.get_freeze_count() == 0
frozen = freeze_startup_heap()
assert frozen == gc.get_freeze_count() > 10_000, frozen
print(frozen)
"""


def test_freezing_the_startup_heap_moves_the_loaded_modules_out_of_the_collectors_walk() -> None:
    done = subprocess.run(  # nosec B603
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10_000
