"""EASE's solve off the coordinator's interpreter: a child process, arrays in ``.npy`` files.

**Why a process, not a thread.** scipy's LAPACK wrappers (``potrf``/``potri``, what
:func:`coordinator.domain.ease_solve.ease_precision` calls) hold the GIL for the whole
call: measured on a 4 000-item float32 Gram, another Python thread of the same process
made no progress for 2.0 s (``potri``'s whole duration) with one BLAS thread, 6.1 s with
two (``bench/ease_offthread.py``). A solve run in a thread would still stop every other
thread of the coordinator — the event loop answering requests, the aggregation of the
other federations — for its whole duration (minutes at 20 000 items). So above
``Context.ease_subprocess_min_items`` items the solve runs in
``python -m coordinator.domain.ease_process``, its own interpreter.

**How the arrays travel.** Through a private scratch directory (``mkdtemp``, mode 0700,
under the coordinator's data directory): the parent writes the Gram it summed
(``numpy.save``), the child maps it read-only and writes the model's tensors, one
``.npy`` each; both sides load with ``allow_pickle=False``, and the parent checks the
names, dtypes and shapes it reads back. Nothing is pickled. The directory is removed
when the solve ends, whatever the outcome.

**Progress, cancellation, time.** The child writes each stage as it starts on stderr
(``stage factorising`` …); the parent logs them with the federation, round and elapsed
time. The parent polls the child, bounded by ``Context.ease_solve_timeout_seconds``, and
kills it when told to stop (the coordinator shutting down, or the round's lease lost to
another process), and the kernel kills it if the coordinator dies (``PR_SET_PDEATHSIG``):
the round is then released or taken over, and its solve runs again from the stored
updates — the same bytes, as the solve is deterministic. The child runs at a lower CPU
priority (:data:`CHILD_NICENESS`) than the process answering requests.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import subprocess  # nosec B404 # runs this module itself: no shell, fixed arguments
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from coordinator.domain.ease_solve import (
    INDEX_TENSOR,
    MODEL_TENSOR,
    VALUE_TENSOR,
    Solver,
    ease_model,
)

__all__ = [
    "CHILD_NICENESS",
    "TEST_CHILD_PAUSE_ENV",
    "SolveCancelled",
    "SolveTarget",
    "solve_in_subprocess",
    "solver",
    "sweep_scratch",
]

log = logging.getLogger("fedrec.rounds")

F32 = npt.NDArray[np.float32]
# the child's niceness increment: the requests' process gets the CPU first
CHILD_NICENESS = 5
# how often the parent looks at the child, the cancel event and the deadline
POLL_SECONDS = 0.5
GRAM_FILE = "gram.npy"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Test-only (documented in docs/architecture.md): the child waits this long (at most a
# minute) before it solves, so a test can stop a solve that is running
TEST_CHILD_PAUSE_ENV = "FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS"


class SolveCancelled(Exception):
    """The solve was stopped before it finished (shutdown, or the lease was lost)."""


@dataclass(frozen=True)
class SolveTarget:
    """What a solve is for (its log lines name it) and how it may run."""

    federation_id: str
    round_number: int
    scratch_dir: Path | None  # where the arrays' files go; None: the system's temp dir
    timeout_seconds: float
    should_stop: Callable[[], bool]  # polled while the child runs: kill it when true


def solver(target: SolveTarget, *, num_items: int, subprocess_min_items: int) -> Solver:
    """The solve for a catalog of ``num_items``: in this process below
    ``subprocess_min_items`` items (a few hundred ms of GIL at most; no child's start-up
    cost), else in a child process."""
    if num_items < subprocess_min_items:

        def in_process(gram: F32, lam: float, top_k: int | None) -> dict[str, F32]:
            started = time.monotonic()

            def stage(name: str) -> None:
                log.debug("%s: stage %s after %.1fs", _label(target, lam), name, _since(started))

            return ease_model(gram, lam, top_k=top_k, progress=stage)

        return in_process

    def in_child(gram: F32, lam: float, top_k: int | None) -> dict[str, F32]:
        return solve_in_subprocess(gram, lam, top_k, target=target)

    return in_child


def solve_in_subprocess(
    gram: npt.NDArray[np.float32], lam: float, top_k: int | None, *, target: SolveTarget
) -> dict[str, F32]:
    """:func:`ease_model` of ``gram`` in a child process (see the module doc). Raises
    ``ValueError`` with the child's last words if it fails (e.g. a Gram that is not
    positive definite), ``TimeoutError`` past the timeout, :class:`SolveCancelled`
    once ``target.should_stop()``."""
    n = gram.shape[0]
    if gram.ndim != 2 or gram.shape[1] != n:
        raise ValueError(f"the Gram matrix must be square, got shape {gram.shape}")
    if target.scratch_dir is not None:
        target.scratch_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ease-solve-", dir=target.scratch_dir))  # mode 0700
    label = _label(target, lam)
    started = time.monotonic()
    try:
        np.save(work / GRAM_FILE, np.asarray(gram, dtype=np.float32), allow_pickle=False)
        args = [sys.executable, "-m", __name__, str(work), repr(float(lam)), str(os.getpid())]
        if top_k is not None:
            args.append(str(int(top_k)))
        log.info("%s: solving %d items in a child process", label, n)
        child = subprocess.Popen(  # nosec B603 # this module, fixed arguments, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        assert child.stderr is not None
        tail: deque[str] = deque(maxlen=20)
        relay = threading.Thread(
            target=_relay,
            args=(child.stderr, label, started, tail),
            name="fedrec-ease-stderr",
            daemon=True,
        )
        relay.start()
        try:
            code = _wait(child, target)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
            relay.join(timeout=10)
            child.stderr.close()
        if code != 0:
            said = " | ".join(line for line in tail if not line.startswith("stage ")) or "-"
            raise ValueError(f"the EASE solve's child process exited with {code}: {said}")
        model = _read_model(work, n, top_k)
        log.info("%s: solved in %.1fs", label, _since(started))
        return model
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep_scratch(scratch_dir: Path | None, *, older_than_seconds: float) -> int:
    """Remove solve directories left by a crashed process (no solve runs longer than its
    timeout, so one older than that is nobody's); returns how many."""
    if scratch_dir is None or not scratch_dir.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_seconds
    for entry in sorted(scratch_dir.glob("ease-solve-*"))[:1000]:
        try:
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except OSError:  # removed meanwhile by another process
            continue
    return removed


def _wait(child: subprocess.Popen[str], target: SolveTarget) -> int:
    """The child's exit code; bounded by the target's timeout, stopped by its cancel."""
    deadline = time.monotonic() + target.timeout_seconds
    for _ in range(int(target.timeout_seconds / POLL_SECONDS) + 2):
        try:
            return child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if target.should_stop():
            raise SolveCancelled(
                f"the EASE solve of round {target.round_number} of {target.federation_id} "
                "was stopped"
            )
        if time.monotonic() >= deadline:
            break
    raise TimeoutError(
        f"the EASE solve of round {target.round_number} of {target.federation_id} took "
        f"more than {target.timeout_seconds:g}s (FEDREC_EASE_SOLVE_TIMEOUT_SECONDS)"
    )


def _relay(lines: Iterable[str], label: str, started: float, tail: deque[str]) -> None:
    """Log the child's stderr, one line at a time, until it closes (the child exited)."""
    for raw in lines:
        line = raw.rstrip()[:500]
        if not line:
            continue
        tail.append(line)
        if line.startswith("stage "):
            log.info("%s: %s after %.1fs", label, line, _since(started))
        else:
            log.warning("%s: child: %s", label, line)


def _read_model(work: Path, n: int, top_k: int | None) -> dict[str, F32]:
    """The child's tensors, checked: the names, dtype and shapes the solve produces."""
    names = (MODEL_TENSOR,) if top_k is None else (INDEX_TENSOR, VALUE_TENSOR)
    shape = (n, n) if top_k is None else (n, top_k)
    model: dict[str, F32] = {}
    for name in names:
        array = np.load(work / f"{name}.npy", allow_pickle=False)
        if array.dtype != np.float32 or array.shape != shape:
            raise ValueError(
                f"the EASE solve's child wrote {name} as {array.dtype} {array.shape}, "
                f"expected float32 {shape}"
            )
        model[name] = array
    return model


def _label(target: SolveTarget, lam: float) -> str:
    return f"federation {target.federation_id} round {target.round_number}: EASE (lambda {lam:g})"


def _since(started: float) -> float:
    return time.monotonic() - started


def _die_with(parent: int) -> bool:
    """Have the kernel kill this process when its parent dies (Linux: ``PR_SET_PDEATHSIG``):
    a SIGKILLed coordinator leaves no solve holding gigabytes behind while its restart
    solves the round again. False if the parent is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):  # elsewhere: each stage checks (main)
            pass
    return os.getppid() == parent


def main(argv: list[str] | None = None) -> int:
    """The child: solve ``WORK/gram.npy`` for ``LAMBDA`` and write the model's tensors;
    it dies with ``PARENT``."""
    parser = argparse.ArgumentParser(prog="python -m coordinator.domain.ease_process")
    parser.add_argument("work", type=Path)
    parser.add_argument("lam", type=float)
    parser.add_argument("parent", type=int)
    parser.add_argument("top_k", type=int, nargs="?")
    args = parser.parse_args(argv)
    if not _die_with(args.parent):
        return 4
    os.nice(CHILD_NICENESS)

    def stage(name: str) -> None:
        if os.getppid() != args.parent:  # orphaned (where PR_SET_PDEATHSIG is not)
            sys.exit(4)
        sys.stderr.write(f"stage {name}\n")
        sys.stderr.flush()

    pause = min(float(os.environ.get(TEST_CHILD_PAUSE_ENV) or 0), 60.0)
    if pause > 0:
        stage(f"paused for {pause:g}s by {TEST_CHILD_PAUSE_ENV} (a test hook)")
        time.sleep(pause)

    stage("loading")
    gram = np.load(args.work / GRAM_FILE, mmap_mode="r", allow_pickle=False)
    try:
        model = ease_model(gram, args.lam, top_k=args.top_k, progress=stage)
    except ValueError as exc:  # a Gram LAPACK refuses: the parent raises this message
        sys.stderr.write(f"{exc}\n")
        return 3
    stage("writing")
    for name, array in model.items():
        np.save(args.work / f"{name}.npy", array, allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
