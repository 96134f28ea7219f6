"""Cross-device round time: ML-100K per user (943 participants) over real HTTP.

The coordinator is ``fedrec serve`` in its own process (SQLite, every upload fsynced
before its 201); the 943 participants (``FederatedRecommender``, the SDK's real BPR
trainer, row-sparse uploads) run in this process, stepped by a pool of threads as
``fedrec simulate`` steps them. Per round it prints:

* the round's wall time (the steps starting -> the next round open),
* the participants' **training** CPU time (``train_with_backoff``, summed over the
  participants' threads: the floor a round cannot go below on one machine),
* the whole participant process's CPU time (training, evaluation of the base on
  validation, HTTP clients, safetensors),
* the coordinator process's CPU time (and on stderr: per participant, user and system
  time apart),

and the ratio wall / training CPU (the goal is <= 2). Nothing is asserted. The recipe
is ``fedrec simulate``'s defaults with the recipe fixed (no search).

Usage::

    python -m bench.per_user_round --data ../shared/datasets/ml-100k --rounds 3
    python -m bench.per_user_round --data ... --coordinator-source /tmp/old-tree  # before
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

import participant_sdk.participant as participant_module
from fedrec.datasets import find_movielens_100k
from fedrec.local_server import SAFE_PATH, CoordinatorProcess
from fedrec.options import SimulationOptions
from fedrec.partition import local_view, partition_users
from participant_sdk import (
    Client,
    FederatedRecommender,
    NoUpdatesError,
    RoundNotOpenError,
    keep_alive_transport,
)
from participant_sdk.recsys import BPRConfig
from participant_sdk.recsys.data import Interactions, load_movielens_100k

# a throwaway token of the bench's own loopback coordinator
ADMIN_TOKEN = "fra_bench-admin-token-0123456789abcdef0123456789abcdef"  # nosec B105


# the participant's local training step, timed where FederatedRecommender.step calls it
_TRAIN = "train_with_backoff"


class TrainingClock:
    """Thread CPU seconds spent inside ``train_with_backoff``, summed over threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = getattr(participant_module, _TRAIN)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.seconds += spent

        setattr(participant_module, _TRAIN, timed)
        try:
            yield
        finally:
            setattr(participant_module, _TRAIN, original)


def coordinator_process(folder: Path, source: Path | None) -> CoordinatorProcess:
    """``fedrec serve`` on loopback with throwaway secrets; ``source``, when given, is the
    tree it runs (PYTHONSAFEPATH: not the bench's own checkout)."""
    return CoordinatorProcess(
        folder,
        admin_token=ADMIN_TOKEN,
        secret_key="bench-secret",  # nosec B106 # the bench's loopback coordinator
        log_level="warning",
        env={"PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1", **SAFE_PATH}
        if source
        else {},
    )


def per_user_federation(
    server: CoordinatorProcess,
    name: str,
    data: Interactions,
    groups: list[npt.NDArray[np.int64]],
    options: SimulationOptions,
    clients: list[Client],
) -> tuple[Client, str, list[FederatedRecommender]]:
    """The admin client, a federation of ``options``'s recipe, and one participant per
    group (each its own client on the keep-alive transport); every client is appended to
    ``clients`` for the caller to close."""
    config = options.trainer_config()
    admin = Client(server.url, ADMIN_TOKEN, timeout=600)
    clients.append(admin)
    fid = admin.federations.create(
        name,
        {"kind": "mf", "num_items": data.num_items, "dim": config.dim, "seed": 0},
        strategy=options.strategy(),
        rounds={**options.round_policy(), "final_evaluation_seconds": 0},
        catalog=data.item_ids,
        deploy={"policy": "none"},
    ).id
    participants = []
    for index, users in enumerate(groups):
        token = admin.participants.enrol(fid, f"user-{index}").token
        client = Client(server.url, token, timeout=600, transport=keep_alive_transport())
        clients.append(client)
        participants.append(
            FederatedRecommender(client, fid, local_view(data, users), config=config)
        )
    return admin, fid, participants


def run(data_path: Path, rounds: int, workers: int, source: Path | None) -> list[dict[str, float]]:
    options = SimulationOptions(
        dataset="ml-100k", partition="per-user", recipe="fixed", rounds=rounds + 1, patience=None
    )
    config = options.trainer_config()
    assert isinstance(config, BPRConfig)
    data, _ = load_movielens_100k(find_movielens_100k(data_path) / "u.data")
    groups = partition_users(data, "per-user", seed=0)
    work = Path(tempfile.mkdtemp(prefix="fedrec-xdev-"))
    server = coordinator_process(work / "data", source)
    server.start(timeout=120)
    assert server.process is not None
    coordinator = psutil.Process(server.process.pid)
    clock = TrainingClock()
    clients: list[Client] = []
    results: list[dict[str, float]] = []
    try:
        admin, fid, participants = per_user_federation(
            server, "cross-device", data, groups, options, clients
        )
        print(
            f"# {len(participants)} participants, {workers} stepping threads, "
            f"{config.epochs} local epochs, dim {config.dim}",
            file=sys.stderr,
        )
        with clock.installed(), ThreadPoolExecutor(max_workers=workers) as pool:
            for number in range(1, rounds + 1):
                wall, training = time.perf_counter(), clock.seconds
                own, theirs = time.process_time(), coordinator.cpu_times()
                outcomes = list(pool.map(lambda p: p.step(), participants))
                with contextlib.suppress(RoundNotOpenError, NoUpdatesError):
                    if admin.rounds.get(fid, number).state == "open":  # somebody skipped
                        admin.rounds.aggregate(fid, number)
                admin.rounds.wait_for_next(fid, after=number, timeout=600)
                row = {
                    "round": number,
                    "wall_s": time.perf_counter() - wall,
                    "training_cpu_s": clock.seconds - training,
                    "participants_cpu_s": time.process_time() - own,
                    "uploaded": float(outcomes.count("uploaded")),
                }
                spent = coordinator.cpu_times()
                row["coordinator_user_s"] = spent.user - theirs.user
                row["coordinator_system_s"] = spent.system - theirs.system
                row["coordinator_cpu_s"] = row["coordinator_user_s"] + row["coordinator_system_s"]
                results.append(row)
                print(_line(row), flush=True)
                print(
                    f"# round {number}: coordinator CPU "
                    f"{1000 * row['coordinator_cpu_s'] / len(participants):.1f} ms per "
                    f"participant (user {row['coordinator_user_s']:.1f} s, system "
                    f"{row['coordinator_system_s']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for client in clients:
            client.close()
        server.stop()
    return results


def _line(row: dict[str, float]) -> str:
    return (
        f"| {int(row['round'])} | {int(row['uploaded'])} | {row['wall_s']:.1f} "
        f"| {row['training_cpu_s']:.1f} | {row['participants_cpu_s']:.1f} "
        f"| {row['coordinator_cpu_s']:.1f} | {row['wall_s'] / row['training_cpu_s']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="threads stepping participants")
    parser.add_argument(
        "--coordinator-source",
        type=Path,
        default=None,
        help="run the coordinator from this source tree (e.g. an exported older commit)",
    )
    args = parser.parse_args(argv)
    print(
        "| round | uploads | wall s | training CPU s | participant process CPU s "
        "| coordinator CPU s | wall / training CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = run(args.data, args.rounds, args.workers, args.coordinator_source)
    later = rows[1:] or rows
    print(
        f"| median of rounds {later[0]['round']:.0f}.. | | "
        f"{statistics.median(r['wall_s'] for r in later):.1f} | "
        f"{statistics.median(r['training_cpu_s'] for r in later):.1f} | "
        f"{statistics.median(r['participants_cpu_s'] for r in later):.1f} | "
        f"{statistics.median(r['coordinator_cpu_s'] for r in later):.1f} | "
        f"{statistics.median(r['wall_s'] / r['training_cpu_s'] for r in later):.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
