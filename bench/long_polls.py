"""/healthz latency while 1,000 long-polls are held, against a real ``fedrec serve``.

A fresh coordinator (SQLite) gets one federation; ``--polls`` long-polls
(``rounds/current?wait=60&after=1``, admin token: the per-token cap does not apply) are
opened and held; then ``/healthz`` is probed ``--probes`` times, one after another, and its
latency printed (median, max), with the number of long-polls the server reports held.
Everything is bounded: the polls wait at most 60 s, the probes time out after 60 s.

``--code DIR`` runs the server from another checkout (e.g. main before this change) so
the figures can be compared on the same machine. Run it from a folder that holds no
checkout (``python -m`` would put the current folder first on the server's path)::

    cd /tmp && python /path/to/fedrec/bench/long_polls.py                  # this checkout
    cd /tmp && python /path/to/fedrec/bench/long_polls.py --code /old/fedrec  # before
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from fedrec.local_server import CoordinatorProcess

ADMIN_TOKEN = "bench-admin-token-" + "x" * 32
SECRET_KEY = "bench-secret-key-" + "y" * 32


def _held(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("fedrec_long_polls_held"):
            return float(line.split()[-1])
    return float("nan")


async def _measure(url: str, polls: int, probes: int) -> tuple[list[float], float]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    limits = httpx.Limits(max_connections=polls + 10, max_keepalive_connections=polls + 10)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=90
    ) as client:
        created = await client.post(
            "/v1/federations",
            json={
                "name": "long-poll bench",
                "model": {"kind": "mf", "num_items": 20, "dim": 4, "seed": 7},
                "strategy": {"name": "fedavg"},
                "rounds": {"min_participants": 1, "max_rounds": 3},
            },
        )
        created.raise_for_status()
        path = f"/v1/federations/{created.json()['id']}/rounds/current"
        tasks = [
            asyncio.create_task(client.get(path, params={"wait": 60, "after": 1}))
            for _ in range(polls)
        ]
        await asyncio.sleep(5)  # let the polls connect and settle into waiting
        held = _held((await client.get("/metrics")).text)
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as probe:
            for _ in range(probes):
                started = time.perf_counter()
                (await probe.get("/healthz")).raise_for_status()
                latencies.append(time.perf_counter() - started)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--code", type=Path, help="run the server from this checkout")
    args = parser.parse_args()
    env = {"FEDREC_LOG_LEVEL": "warning"}
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())
        env["PYTHONSAFEPATH"] = "1"  # else `python -m` puts this checkout first on sys.path
    with tempfile.TemporaryDirectory() as tmp:
        server = CoordinatorProcess(
            Path(tmp) / "data",
            admin_token=ADMIN_TOKEN,
            secret_key=SECRET_KEY,
            log_level="warning",
            env=env,
        )
        server.start()
        try:
            latencies, held = asyncio.run(_measure(server.url, args.polls, args.probes))
        finally:
            server.stop()
    code = args.code or "installed"
    print(
        f"code={code} polls={args.polls} held={held:g} probes={len(latencies)} "
        f"healthz median={statistics.median(latencies) * 1000:.1f} ms "
        f"max={max(latencies) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
