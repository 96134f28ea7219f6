"""fsyncs per round: ``strace -f -c`` counts the coordinator's fsync and fdatasync calls
while K participants run R rounds of :mod:`bench.peers.flower`'s fedrec side.

A count, not a time: it does not depend on the machine's load, so a before/after pair
(``--coordinator-source`` = an exported older tree) compares even on a busy machine.
strace slows the traced process: its wall times mean nothing. Needs ``strace`` (Debian).

Usage::

    python -m bench.peers.fsyncs --participants 10 --rounds 10
    python -m bench.peers.fsyncs --coordinator-source /tmp/main-tree
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil

from bench.peers.flower import ADMIN_TOKEN, DIM, MB, Case, _fedrec_rounds, source_env
from fedrec.local_server import CoordinatorProcess

SYSCALLS = ("fsync", "fdatasync")


def count_syscalls(summary: str) -> dict[str, int]:
    """Calls per syscall from ``strace -c``'s table (``% time seconds usecs/call calls
    [errors] syscall``)."""
    counts = {}
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] in SYSCALLS and re.fullmatch(r"\d+", fields[3]):
            counts[fields[-1]] = int(fields[3])
    return counts


class TracedCoordinator(CoordinatorProcess):
    """``fedrec serve`` under ``strace -f -c``: every thread from the first, counted."""

    def __init__(self, *args: object, strace: str, summary: Path, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._strace = [strace, "-f", "-c", "-e", "trace=" + ",".join(SYSCALLS), "-o", str(summary)]

    def _command(self, *args: str) -> list[str]:
        return [*self._strace, *super()._command(*args)]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the coordinator itself: strace then writes its table and exits."""
        if self.process is not None:
            for child in psutil.Process(self.process.pid).children():
                child.terminate()
            self.process.wait(timeout=timeout)
        super().stop(timeout)


def fsyncs(case: Case, rounds: int, source: Path | None, strace: str) -> dict[str, int]:
    """The coordinator's fsync calls over its whole life: start, one federation, ``rounds``."""
    work = Path(tempfile.mkdtemp(prefix="fedrec-fsyncs-"))
    rng = np.random.default_rng(1)
    deltas = {
        "item_factors": (rng.standard_normal((case.items, DIM)) * 1e-3).astype(np.float32),
        "item_bias": (rng.standard_normal(case.items) * 1e-3).astype(np.float32),
    }
    summary = work / "strace.txt"
    server = TracedCoordinator(
        work / "data",
        strace=strace,
        summary=summary,
        admin_token=ADMIN_TOKEN,
        secret_key="bench-secret",  # nosec B106 # the bench's loopback coordinator
        log_level="warning",
        env={
            "FEDREC_MAX_UPLOAD_BYTES": str(2 * case.params * 4 + MB),
            **(source_env(source) if source else {}),
        },
    )
    server.start(timeout=120)
    try:
        _fedrec_rounds(server.url, case, rounds, deltas)
    finally:
        server.stop()  # strace writes its table when the coordinator exits
    try:
        return count_syscalls(summary.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--coordinator-source", type=Path, default=None)
    args = parser.parse_args(argv)
    strace = shutil.which("strace")
    if strace is None:
        print("strace is not installed (apt-get install strace)", file=sys.stderr)
        return 2
    case = Case(args.participants, args.items)
    # two lives, 1 and 1 + R rounds: the difference is R rounds without start and set-up
    short = fsyncs(case, 1, args.coordinator_source, strace)
    long = fsyncs(case, 1 + args.rounds, args.coordinator_source, strace)
    per_round = {name: (long.get(name, 0) - short.get(name, 0)) / args.rounds for name in SYSCALLS}
    calls = ", ".join(f"{name} {n:.1f}" for name, n in per_round.items())
    print(f"| {case.participants} | {case.params:,} | {sum(per_round.values()):.1f} | {calls} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
