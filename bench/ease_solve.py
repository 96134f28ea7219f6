"""EASE's solve at catalog scale: CPU seconds and peak memory per method and size.

    nice -n 10 python -m bench.ease_solve [--sizes 6000,12000,18000] [--methods ...]

Each (method, size) runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``, minus the resident size once the saved Gram is loaded) is the solve's;
the Gram is a synthetic lastfm-like one (``make_synthetic``,
2 000 users, 40–50 items each, no timestamps) handed in as float32, as the coordinator
holds it. Methods:

* ``chol64`` / ``chol32``: :func:`coordinator.domain.ease_solve.ease_precision` (LAPACK
  ``potrf``/``potri`` in place) in float64 / float32 (the product picks by size);
* ``inv64``: ``numpy.linalg.inv`` in float64 (what the coordinator did before);
* ``eigh32``: one ``numpy.linalg.eigh`` in float32, then ``P(λ) = Q diag(1/(s+λ)) Qᵀ``
  for one λ (the reuse across λ's: each further λ costs the product's time again);
* ``pruned32``: the product's large-catalog path end to end, float32 solve + top-k
  (512) selection per column.

Prints one line per run: CPU seconds (user + system of the subprocess: comparable under
load), wall seconds, peak RSS above the Gram-building baseline, and n³ / CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess  # nosec B404 # runs this module itself, no shell, fixed arguments
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("chol64", "chol32", "inv64", "eigh32", "pruned32")
LAMBDA = 50.0
TOP_K = 512


def _gram(num_items: int) -> np.ndarray:
    from fedrec.synthetic import make_synthetic
    from participant_sdk.recsys.ease import item_gram

    data = make_synthetic(
        num_users=2000,
        num_items=num_items,
        interactions_per_user=(40, 50),
        timestamps=False,
        seed=0,
    )
    return item_gram(data.users, data.items, num_items, dtype=np.float32)


def _gram_file(num_items: int) -> Path:
    """The size's Gram, built once and saved (the runs load it: their peak is the solve's)."""
    path = Path(tempfile.gettempdir()) / f"fedrec-ease-gram-{num_items}.npy"
    if not path.exists():
        np.save(path, _gram(num_items))
    return path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:  # resident pages, Linux
        return int(statm.read().split()[1]) * resource.getpagesize()


def _run_one(method: str, num_items: int) -> dict[str, float | str | int]:
    import coordinator.domain.ease_solve as ease_solve

    gram = np.load(_gram_file(num_items))
    base_rss = _rss_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    if method in ("chol64", "chol32"):
        ease_solve.FLOAT64_MAX_ITEMS = num_items if method == "chol64" else 0
        ease_solve.ease_precision(gram, LAMBDA)
    elif method == "inv64":
        work = gram.astype(np.float64)
        work[np.diag_indices(num_items)] += LAMBDA
        np.linalg.inv(work)
    elif method == "eigh32":
        values, vectors = np.linalg.eigh(gram)
        (vectors / (values + LAMBDA)) @ vectors.T
    elif method == "pruned32":
        ease_solve.FLOAT64_MAX_ITEMS = 0
        ease_solve.ease_model(gram, LAMBDA, top_k=TOP_K)
    else:
        raise SystemExit(f"unknown method {method}")
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = after.ru_maxrss * 1024 - base_rss  # ru_maxrss is in KiB on Linux
    return {
        "method": method,
        "items": num_items,
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "peak_above_gram_gb": round(peak / 2**30, 2),
        "gflop_per_cpu_s": round(num_items**3 / max(cpu, 1e-9) / 1e9, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="6000,12000,18000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_run_one(args.one[0], int(args.one[1]))))
        return
    for size in (int(s) for s in args.sizes.split(",")):
        saved = _gram_file(size)
        for method in args.methods.split(","):
            out = subprocess.run(  # nosec B603 # this module, fixed arguments
                [sys.executable, "-m", "bench.ease_solve", "--one", method, str(size)],
                capture_output=True,
                text=True,
                check=False,
                timeout=3600,
            )
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
            print(line, flush=True)
        saved.unlink()  # 1.3 GB at 18 000 items: not left in the temporary directory


if __name__ == "__main__":
    main()
