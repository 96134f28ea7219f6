"""Where a fedrec round's time goes: py-spy samples the coordinator process (every
thread, idle ones left out) while K participants run R rounds of
:mod:`bench.peers.flower`'s fedrec side, then the hottest frames are printed.

py-spy is installed into the bench's side virtualenv (``.peers-venv``, never a
project dependency) on first use.

Usage::

    python -m bench.peers.profile_round --participants 10 --items 1682 --rounds 30
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess  # nosec B404 # runs py-spy from the bench's side venv
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.peers.flower import ADMIN_TOKEN, DIM, MB, Case, _fedrec_rounds, peers_python
from fedrec.local_server import CoordinatorProcess


def py_spy() -> Path:
    binary = peers_python().parent / "py-spy"
    if not binary.exists():
        subprocess.run(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
            [str(binary.parent / "python"), "-m", "pip", "install", "-q", "py-spy"],
            check=True,
            timeout=900,
        )
    return binary


def summarise(collapsed: Path, top: int) -> None:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")[1:]]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples of busy threads")
    print("\n## inclusive (a frame and everything it calls)")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f} %  {frame}")
    print("\n## self")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:5.1f} %  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (~ the process's Python CPU time; "
        "without it, every non-idle thread, waits on locks included)",
    )
    args = parser.parse_args(argv)
    case = Case(args.participants, args.items)
    work = Path(tempfile.mkdtemp(prefix="fedrec-profile-"))
    rng = np.random.default_rng(1)
    deltas = {
        "item_factors": (rng.standard_normal((case.items, DIM)) * 1e-3).astype(np.float32),
        "item_bias": (rng.standard_normal(case.items) * 1e-3).astype(np.float32),
    }
    server = CoordinatorProcess(
        work / "data",
        admin_token=ADMIN_TOKEN,
        secret_key="bench-secret",  # nosec B106 # the bench's loopback coordinator
        log_level="warning",
        env={"FEDREC_MAX_UPLOAD_BYTES": str(2 * case.params * 4 + MB)},
    )
    spy_binary = py_spy()
    server.start()
    assert server.process is not None
    collapsed = work / "profile.txt"
    spy = subprocess.Popen(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
        [str(spy_binary), "record", "--pid", str(server.process.pid), "--rate", "250",
         "--format", "raw", "--output", str(collapsed), "--nonblocking",
         *(["--gil"] if args.gil else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        seconds = _fedrec_rounds(server.url, case, args.rounds, deltas)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(timeout=60)
        server.stop()
    print(f"{len(seconds)} rounds, median {1000 * sorted(seconds)[len(seconds) // 2]:.1f} ms")
    summarise(collapsed, args.top)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
