"""``fedrec serve`` sets glibc's allocator to keep a round's buffers
(coordinator.allocator.keep_round_buffers), unless the environment already set it.

Run in child processes: the thresholds are process-wide, and the environment variables
are read when the C library starts."""

from __future__ import annotations

import os
import subprocess  # nosec B404 # the test's own interpreter, fixed arguments
import sys

import pytest

from coordinator import app as app_module

CHILD = """
from coordinator.allocator import keep_round_buffers
print(keep_round_buffers())
"""


def _child(env: dict[str, str]) -> str:
    done = subprocess.run(  # nosec B603
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's mallopt",
)
def test_the_thresholds_are_set_unless_the_environment_set_them() -> None:
    assert _child({}) == "True"
    assert _child({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"
    assert _child({"MALLOC_MMAP_THRESHOLD_": "131072"}) == "False"


def test_the_served_app_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(app_module, "create_app", lambda: object())
    monkeypatch.setattr(app_module, "prepare_serving_heap", lambda: calls.append("heap"))
    monkeypatch.setattr(app_module, "keep_round_buffers", lambda: calls.append("allocator"))
    app_module.create_served_app()
    assert calls == ["heap", "allocator"]
