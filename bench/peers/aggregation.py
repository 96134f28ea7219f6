"""Folding K updates against the memory-bandwidth yardstick: an in-place numpy sum of
the same arrays.

For K dense mf updates of P float32 parameters (items x 64 factors + one bias per item),
already decoded in memory, prints the median over repeats of:

* ``WeightedMean.add`` x K (fedrec's fold: float64 sums, the example weights applied),
* the fold as it was before the block kernel (``sums += delta.astype(float64) * w``),
* ``acc += a`` x K into a float32 and into a float64 accumulator (the yardsticks).

Usage::

    python -m bench.peers.aggregation --params 1e7 --participants 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from coordinator.domain.aggregation import WeightedMean
from participant_sdk.wire import Update, mf_spec

DIM = 64


def updates(items: int, k: int) -> list[Update]:
    rng = np.random.default_rng(0)
    return [
        Update(
            round=1,
            base_version=0,
            num_examples=1 + i,
            tensors={
                "item_factors": rng.standard_normal((items, DIM), dtype=np.float32),
                "item_bias": rng.standard_normal(items, dtype=np.float32),
            },
        )
        for i in range(k)
    ]


def timed(work: Callable[[], object], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=1e7)
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    items = max(1, round(args.params / (DIM + 1)))
    batch = updates(items, args.participants)
    spec = mf_spec(num_items=items, dim=DIM)

    def fold() -> None:
        mean = WeightedMean(spec)
        for update in batch:
            mean.add(update)

    def fold_before() -> None:  # the per-update temporaries the kernel replaced
        sums = {name: np.zeros(s.shape) for name, s in spec.items()}
        for update in batch:
            for name, delta in update.tensors.items():
                sums[name] += delta.astype(np.float64) * float(update.num_examples)

    def numpy_sum(dtype: type) -> Callable[[], None]:
        def run() -> None:
            sums: dict[str, np.ndarray] = {
                name: np.zeros(s.shape, dtype=dtype) for name, s in spec.items()
            }
            for update in batch:
                for name, delta in update.tensors.items():
                    sums[name] += delta

        return run

    f32 = timed(numpy_sum(np.float32), args.repeats)
    f64 = timed(numpy_sum(np.float64), args.repeats)
    rows = [
        ("WeightedMean.add x K (now)", timed(fold, args.repeats)),
        ("fold before the block kernel", timed(fold_before, args.repeats)),
        ("numpy acc += a, float64 acc", f64),
        ("numpy acc += a, float32 acc", f32),
    ]
    params = items * (DIM + 1)
    print(f"K = {args.participants}, {params:,} float32 parameters per update")
    print("| fold | ms | / numpy float32 sum |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1000:,.1f} | {seconds / f32:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
