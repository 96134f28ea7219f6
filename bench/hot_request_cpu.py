"""Coordinator CPU per hot request over real HTTP, source trees side by side and alternated.

A small round's coordinator CPU (``bench.peers.coordinator_cpu``) is ~5 (K = 2) to ~21
(K = 10) hot requests plus the upload's and the round job's domain work: a few µs less per
request is under that bench's resolution. This one repeats the two hot GETs alone, many
times, so the per-request figure is resolved: a fresh ``fedrec serve`` from each tree in
turn (``--source``, repeatable; ``.`` is this checkout; the log level and the SDK's
keep-alive transport as ``bench.peers.flower`` uses them), one federation of ``items`` x 64
(+ biases) whose round stays open, ``--participants`` participants in threads, each
sending ``--requests`` of each kind in turn:

- ``download``: ``GET …/models/0/weights`` (the cached base model, ~437 KB at 1,682 items);
- ``poll``: ``GET …/rounds/current`` (plain: one read on a worker thread).

Printed: the coordinator process's user + system CPU (psutil) per request of each kind,
each run and the mean. Per-token rate limits are switched off for the run
(``FEDREC_PARTICIPANT_RATE_PER_SECOND=0``). Nothing is asserted.

Usage::

    python -m bench.hot_request_cpu --pairs 3 --source /tmp/before --source .
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from bench.peers.flower import (
    ADMIN_TOKEN,
    DIM,
    START_TIMEOUT_SECONDS,
    participant_clients,
    source_env,
)
from fedrec.local_server import CoordinatorProcess

KINDS = ("download", "poll")


def _run(source: Path | None, items: int, participants: int, requests: int) -> dict[str, float]:
    """CPU µs per request of each kind, one fresh coordinator."""
    with tempfile.TemporaryDirectory(prefix="fedrec-hot-cpu-") as work:
        data_dir = Path(work) / "data"
        server = CoordinatorProcess(
            data_dir,
            admin_token=ADMIN_TOKEN,
            secret_key="bench-secret",  # nosec B106 # the bench's loopback coordinator
            log_level="warning",
            env={
                "FEDREC_PARTICIPANT_RATE_PER_SECOND": "0",
                **(source_env(source) if source else {}),
            },
        )
        server.start(timeout=START_TIMEOUT_SECONDS)
        assert server.process is not None
        coordinator = psutil.Process(server.process.pid)
        try:
            return _measure(server.url, coordinator, items, participants, requests)
        finally:
            server.stop()


def _measure(
    url: str, coordinator: psutil.Process, items: int, participants: int, requests: int
) -> dict[str, float]:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    created = admin.post(
        "/v1/federations",
        json={
            "name": "hot",
            "model": {"kind": "mf", "num_items": items, "dim": DIM, "seed": 0},
            # never complete: the round stays open, its base model cached after one read
            "rounds": {"min_participants": participants + 1, "max_rounds": 2},
        },
        timeout=120,
    )
    created.raise_for_status()
    fid = created.json()["id"]
    tokens = [
        admin.post(f"/v1/federations/{fid}/participants", json={"name": f"p{i}"}).json()["token"]
        for i in range(participants)
    ]
    admin.close()
    clients = participant_clients(url, tokens)
    paths = {
        "download": httpx.URL(f"{url}/v1/federations/{fid}/models/0/weights"),
        "poll": httpx.URL(f"{url}/v1/federations/{fid}/rounds/current"),
    }

    def send(index: int, kind: str, count: int) -> None:
        for _ in range(count):
            clients[index].get(paths[kind]).raise_for_status()

    figures: dict[str, float] = {}
    try:
        with ThreadPoolExecutor(max_workers=participants) as pool:
            for kind in KINDS:  # warm: connections, token cache, the weights' cache
                list(pool.map(lambda i, k=kind: send(i, k, 3), range(participants)))
            for kind in KINDS:
                time.sleep(0.2)  # the warm-up's and the last phase's tail settle
                times = coordinator.cpu_times()
                before = times.user + times.system
                list(pool.map(lambda i, k=kind: send(i, k, requests), range(participants)))
                times = coordinator.cpu_times()
                figures[kind] = (
                    1e6 * (times.user + times.system - before) / (participants * requests)
                )
    finally:
        for client in clients:
            client.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--participants", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1000, help="of each kind per participant")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each tree, alternated")
    parser.add_argument(
        "--source", action="append", default=[], help="a source tree ('.' = this checkout)"
    )
    args = parser.parse_args(argv)
    names = args.source or ["."]
    sources = [None if s == "." else Path(s).resolve() for s in names]
    results: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(sources))}
    for run in range(args.pairs):
        for index, source in enumerate(sources):
            figures = _run(source, args.items, args.participants, args.requests)
            results[index].append(figures)
            shown = ", ".join(f"{k} {v:.0f} µs" for k, v in figures.items())
            load = os.getloadavg()[0]
            print(f"# run {run + 1} {names[index]}: {shown} (load {load:.1f})", file=sys.stderr)
    print(
        "| tree | " + " | ".join(f"{k}: CPU µs per request, each run | mean" for k in KINDS) + " |"
    )
    print("|---|" + "---|---|" * len(KINDS))
    for index, name in enumerate(names):
        cells = []
        for kind in KINDS:
            runs = [r[kind] for r in results[index]]
            cells.append(
                f"{', '.join(f'{v:.0f}' for v in runs)} | **{statistics.fmean(runs):.0f}**"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
