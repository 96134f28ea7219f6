"""Coordinator CPU per small round, source trees side by side and alternated.

The fedrec half of :mod:`bench.peers.flower` only (no Flower): for each run, a fresh
``fedrec serve`` from each tree in turn (``--source``, repeatable; ``.`` is this
checkout), K participants of this checkout downloading and uploading a dense update of
``items`` x 64 (+ biases) per round, and psutil's user + system CPU of the coordinator
process per round, averaged over the rounds after the first (the kernel counts in 10 ms
ticks: over R rounds, ~10 / R ms of resolution). Trees run A B A B … so the machine's
load drifts over all of them alike. Nothing is asserted; the table goes to
``bench/RESULTS.md``.

Usage::

    git -C /work/main archive HEAD | tar -x -C /tmp/before
    python -m bench.peers.coordinator_cpu --cases 2:1682,10:1682 --rounds 30 --pairs 4 \\
        --source /tmp/before --source .
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.peers.flower import Case, _cases, fedrec_rounds


def _cpu_ms(case: Case, rounds: int, source: Path | None) -> tuple[float, float]:
    """Coordinator CPU ms per round (mean of rounds 2..R) and round wall ms (median)."""
    cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fedrec-cpu-ab-") as work:
        seconds = fedrec_rounds(case, rounds, Path(work), source, cpu)
    return 1000 * statistics.fmean(cpu[1:]), 1000 * statistics.median(seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="2:1682,10:1682", help="K:items,… (as the Flower bench)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=4, help="runs of each tree, alternated")
    parser.add_argument(
        "--source", action="append", default=[], help="a source tree ('.' = this checkout)"
    )
    args = parser.parse_args(argv)
    sources = [None if s == "." else Path(s).resolve() for s in (args.source or ["."])]
    names = [args.source[i] if args.source else "." for i in range(len(sources))]
    print("| K | tree | CPU ms per round, each run | mean | round wall ms, each run |")
    print("|---|---|---|---|---|")
    for case in _cases(args.cases):
        results: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(sources))}
        for run in range(args.pairs):
            for index, source in enumerate(sources):
                cpu, wall = _cpu_ms(case, args.rounds, source)
                results[index].append((cpu, wall))
                load = os.getloadavg()[0]
                print(
                    f"# K={case.participants} run {run + 1} {names[index]}: {cpu:.1f} ms CPU, "
                    f"{wall:.1f} ms wall (load {load:.1f})",
                    file=sys.stderr,
                )
        for index, name in enumerate(names):
            cpus = [c for c, _ in results[index]]
            walls = [w for _, w in results[index]]
            print(
                f"| {case.participants} | {name} | {', '.join(f'{c:.1f}' for c in cpus)} "
                f"| **{statistics.fmean(cpus):.1f}** | {', '.join(f'{w:.1f}' for w in walls)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
