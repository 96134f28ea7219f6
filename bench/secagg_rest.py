"""A secure-aggregation round over REST: wall time, coordinator CPU, participants' CPU.

A real ``fedrec serve`` subprocess on 127.0.0.1 (SQLite), ``n`` participants running
``participant_sdk.secagg.session.contribute`` in threads of this process, a fraction of them
dropping after sharing keys (they never upload; the phase closes at ``--phase-seconds``, so
that wait is part of the wall time of such rows). The coordinator's CPU is its process's
user + system time (``/proc``); the participants' is this process's, divided by ``n``
(threads share one interpreter, so that mean includes HTTP and JSON). One round per cell,
bounded. It shows the cost of keeping the round's state in one row (every message rewrites
it) next to the protocol's own; ``bench.secagg`` is the protocol alone, without HTTP.

    nice python -m bench.secagg_rest --sizes 10 50 --items 1682 --dim 32 [--graphs complete harary]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fedrec.local_server import CoordinatorProcess
from participant_sdk import Client
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import Roster
from participant_sdk.secagg.session import Outcome, clip_to_norm, contribute

ADMIN = "fra_bench-secagg-admin-0123456789abcdef0123456789abcdef"
STRATEGY = {"weighting": "uniform", "normalization": "total", "update_norm_clip": None}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _dropper(url: str, token: str, fid: str, pid: str, length: int) -> None:
    """Advertise and share keys, then vanish (never upload)."""
    with Client(url, token) as client:
        status = client.secagg.status(fid, 1)
        codec = FixedPointCodec(clip=status.clip_norm, max_participants=status.max_participants)
        machine = SecAggClient(
            context=RoundContext(fid, 1), participant=pid, update=np.zeros(length), codec=codec
        )
        client.secagg.send(fid, 1, "keys", machine.advertise().to_dict())
        for _ in range(3000):  # bounded: 300 s
            status = client.secagg.status(fid, 1)
            if status.phase != "advertise":
                break
            time.sleep(0.1)
        if status.roster is not None:
            roster = Roster.from_dict(status.roster)
            client.secagg.send(fid, 1, "shares", machine.share_keys(roster).to_dict())


def one_round(
    url: str, n: int, drop: float, items: int, dim: int, phase_seconds: float, graph: str
) -> str:
    length = items * dim + items
    sparse = {"graph": graph} if graph != "complete" else {}
    with Client(url, ADMIN) as admin:
        fid = admin.federations.create(
            "bench",
            {"kind": "mf", "num_items": items, "dim": dim},
            strategy=STRATEGY,
            rounds={"max_rounds": 1, "final_evaluation_seconds": 0},
            privacy={
                "secure_aggregation": {
                    "threshold": n // 2 + 1,
                    "clip_norm": 1.0,
                    "phase_seconds": phase_seconds,
                    **sparse,
                }
            },
        ).id
        people = [admin.participants.enrol(fid, f"p{i:03d}") for i in range(n)]
    dropping = int(round(drop * n))
    rng = np.random.default_rng(0)
    outcomes: list[Outcome | BaseException] = []

    def honest(token: str, pid: str) -> None:
        update = clip_to_norm(rng.standard_normal(length), 1.0)
        try:
            with Client(url, token) as client:
                outcomes.append(contribute(client, fid, 1, pid, update, timeout=600))
        except BaseException as exc:  # noqa: BLE001 - counted in the row
            outcomes.append(exc)

    threads = [
        threading.Thread(target=_dropper, args=(url, p.token, fid, p.id, length), daemon=True)
        for p in people[:dropping]
    ] + [
        threading.Thread(target=honest, args=(p.token, p.id), daemon=True)
        for p in people[dropping:]
    ]
    client_cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    summed = sum(isinstance(o, Outcome) and o.result == "summed" for o in outcomes)
    return f"{wall:7.1f} | {client_cpu / n:11.3f} | {summed:>3}/{n - dropping} summed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 50])
    parser.add_argument("--dropouts", type=float, nargs="*", default=[0.0, 0.1])
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--phase-seconds", type=float, default=5.0)
    parser.add_argument(
        "--graphs",
        nargs="*",
        choices=("complete", "harary"),
        default=["complete"],
        help="whom participants share with: everyone, or neighbours on a Harary graph "
        "(the coordinator's default degree 2*ceil(log2 n))",
    )
    args = parser.parse_args(argv)
    length = args.items * args.dim + args.items
    print(f"vector length {length} words ({4 * length / 1e6:.2f} MB per input)")
    print(
        f"{'n':>4} {'drop':>5} {'graph':>8} | {'server CPU s':>12} | {'wall s':>7} | "
        "client CPU s | result"
    )
    with tempfile.TemporaryDirectory() as folder:
        server = CoordinatorProcess(
            Path(folder) / "data",
            admin_token=ADMIN,
            secret_key="bench-secagg-secret",  # nosec B106 # a throwaway loopback coordinator
            log_level="warning",
            env={"FEDREC_TIMER_INTERVAL_SECONDS": "0.2"},
        )
        server.start()
        try:
            assert server.process is not None
            for n, drop, graph in itertools.product(args.sizes, args.dropouts, args.graphs):
                before = _cpu_seconds(server.process.pid)
                row = one_round(
                    server.url, n, drop, args.items, args.dim, args.phase_seconds, graph
                )
                cpu = _cpu_seconds(server.process.pid) - before
                print(f"{n:>4} {drop:>5.0%} {graph:>8} | {cpu:12.2f} | {row}", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
