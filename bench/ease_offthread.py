"""Does an EASE solve stall the rest of the coordinator's process? In a thread, and in a child.

    nice -n 10 python -m bench.ease_offthread [--items 3000] [--small 1000]

The coordinator's other work (the event loop answering requests, the aggregation thread
of the other federations) is Python code that needs the GIL. This runs the solve the way
the aggregation job does — ``ease_model`` on a thread of this process ("thread"), or
``ease_process.solve_in_subprocess`` from a thread ("child") — while the main thread
ticks every millisecond, and prints the longest gap between two ticks (how long any other
Python thread of the process waited), the number of ticks, the wall time and the CPU
seconds (this process + children: comparable under load). Both modes run side by side in
one run, on the same synthetic lastfm-like Gram (``bench.ease_solve._gram``), and must
give identical bytes.

``--small`` times the child's fixed cost (interpreter start, imports, the Gram's file)
against an in-process solve at a small catalog: what ``FEDREC_EASE_SUBPROCESS_MIN_ITEMS``
weighs.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.ease_solve import LAMBDA, TOP_K, _gram
from coordinator.domain.ease_process import SolveTarget, solve_in_subprocess
from coordinator.domain.ease_solve import ease_model

TICK_SECONDS = 0.001


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(mode: str, gram: np.ndarray, top_k: int | None, scratch: Path) -> dict[str, object]:
    target = SolveTarget(
        federation_id="bench",
        round_number=1,
        scratch_dir=scratch,
        timeout_seconds=3600.0,
        should_stop=lambda: False,
    )
    result: dict[str, dict[str, np.ndarray]] = {}

    def solve() -> None:
        if mode == "thread":
            result["model"] = ease_model(gram, LAMBDA, top_k=top_k)
        else:
            result["model"] = solve_in_subprocess(gram, LAMBDA, top_k, target=target)

    cpu, wall = _cpu(), time.perf_counter()
    solver = threading.Thread(target=solve)
    solver.start()
    ticks, gap, last = 0, 0.0, time.perf_counter()
    while solver.is_alive() and ticks < 10_000_000:  # bounded: ~3 h of 1 ms ticks
        time.sleep(TICK_SECONDS)
        now = time.perf_counter()
        gap, last, ticks = max(gap, now - last), now, ticks + 1
    solver.join()
    return {
        "mode": mode,
        "items": gram.shape[0],
        "top_k": top_k,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(_cpu() - cpu, 2),
        "longest_tick_gap_s": round(gap, 3),
        "ticks": ticks,
        "model": result["model"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--small", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        for items in (args.items, args.small):
            gram = _gram(items)
            top_k = TOP_K if items > TOP_K else None
            runs = [_run(mode, gram, top_k, Path(scratch)) for mode in ("thread", "child")]
            models = [run.pop("model") for run in runs]
            assert isinstance(models[0], dict)
            assert isinstance(models[1], dict)
            same = all(np.array_equal(models[0][k], models[1][k]) for k in models[0])
            for run in runs:
                print(json.dumps({**run, "identical_bytes": same}), flush=True)


if __name__ == "__main__":
    main()
